/**
 * The schema of route-stream messages, checked wherever a message enters a process (a change from
 * the channel, a route from the snapshot, a change handed to the publisher).
 *
 * Hand-written rather than generated: a proxy checks every route of a 100,000-route snapshot at
 * start. The parsers return routes holding only the known fields (the parsed object itself when it
 * has nothing else, a copy otherwise), so nothing a sender adds travels further, and a header
 * value with CR/LF can never reach the proxy's upstream request.
 */
import type { Route, RouteActivity, RouteChange, RouteShare, RouteState, Upstream } from './types.ts';

/** A message or route that does not match the schema; `message` says which field and why. */
export class RouteMessageError extends Error {
  override readonly name = 'RouteMessageError';
  /** Dotted location of the offending field, e.g. "route.upstream.port". */
  readonly field: string;
  constructor(field: string, problem: string) {
    super(`${field}: ${problem}`);
    this.field = field;
  }
}

/** Proxy paths as architecture.md fixes them: lowercase [a-z0-9-], no leading or trailing "-". */
const PROXY_PATH = /^[a-z0-9](?:[a-z0-9-]{0,198}[a-z0-9])?$/;
/** Hostnames and IP literals (IPv6 without brackets); no spaces, slashes, or "@". */
const UPSTREAM_HOST = /^[A-Za-z0-9._:-]{1,253}$/;
/** A header value or query we put on the wire ourselves: printable ASCII only, so no CR/LF. */
const HEADER_SAFE = /^[\x20-\x7e]*$/;
const ROUTE_FIELDS = 9;
/** More than this many shares on one desktop is not a person sharing it. */
export const MAX_SHARES = 256;
const MAX_OWNER_ONLY = 32;
/** An owner-only prefix: a path starting with "/", printable ASCII, no query or fragment. */
const OWNER_ONLY_PREFIX = /^\/[\x21-\x7e]{0,255}$/;
const UPSTREAM_FIELDS = 4;
const STATES: ReadonlySet<string> = new Set<RouteState>(['starting', 'running', 'stopping']);

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return value.length > 40 ? `a string of ${value.length} characters` : JSON.stringify(value);
  if (typeof value === 'object') return 'an object';
  return String(value);
}

function fromJson(raw: unknown, field: string): unknown {
  if (typeof raw !== 'string' && !Buffer.isBuffer(raw)) return raw;
  try {
    return JSON.parse(raw.toString());
  } catch {
    throw new RouteMessageError(field, 'not valid JSON');
  }
}

function record(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new RouteMessageError(field, `expected an object, got ${describe(value)}`);
  }
  return value as Record<string, unknown>;
}

function text(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 1024) {
    throw new RouteMessageError(field, `expected a non-empty string (at most 1024 characters), got ${describe(value)}`);
  }
  return value;
}

function flag(value: unknown, field: string): boolean {
  if (typeof value !== 'boolean') throw new RouteMessageError(field, `expected true or false, got ${describe(value)}`);
  return value;
}

export function parseProxyPath(value: unknown, field = 'path'): string {
  if (typeof value !== 'string' || !PROXY_PATH.test(value)) {
    throw new RouteMessageError(field, `expected a proxy path (lowercase a-z, 0-9 and "-", no "-" at either end), got ${describe(value)}`);
  }
  return value;
}

function parseUpstream(value: unknown, field: string): Upstream {
  const u = record(value, field);
  const scheme = u.scheme;
  if (scheme !== 'http' && scheme !== 'https') {
    throw new RouteMessageError(`${field}.scheme`, `expected "http" or "https", got ${describe(scheme)}`);
  }
  if (typeof u.host !== 'string' || !UPSTREAM_HOST.test(u.host)) {
    throw new RouteMessageError(`${field}.host`, `expected a host name or IP address, got ${describe(u.host)}`);
  }
  const port = u.port;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RouteMessageError(`${field}.port`, `expected an integer from 1 to 65535, got ${describe(port)}`);
  }
  const verifyTls = flag(u.verifyTls, `${field}.verifyTls`);
  if (Object.keys(u).length === UPSTREAM_FIELDS) return u as unknown as Upstream;
  return { scheme, host: u.host, port, verifyTls };
}

function parseActivity(value: unknown, field: string): RouteActivity | undefined {
  if (value === undefined) return undefined;
  const a = record(value, field);
  if (a.on === 'traffic') return Object.keys(a).length === 1 ? (a as RouteActivity) : { on: 'traffic' };
  if (a.on !== 'input') throw new RouteMessageError(`${field}.on`, `expected "traffic" or "input", got ${describe(a.on)}`);
  if (a.rfb !== 'standard' && a.rfb !== 'kasmvnc') throw new RouteMessageError(`${field}.rfb`, `expected "standard" or "kasmvnc", got ${describe(a.rfb)}`);
  return Object.keys(a).length === 2 ? (a as RouteActivity) : { on: 'input', rfb: a.rfb };
}

/** The longest reason a close frame carries: 125 bytes of payload less the 2-byte code (RFC 6455 5.5.1). */
const DISCONNECTED_MAX_BYTES = 123;

function parseDisconnected(value: unknown, field: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length === 0 || Buffer.byteLength(value, 'utf8') > DISCONNECTED_MAX_BYTES) {
    throw new RouteMessageError(field, `expected a non-empty reason of at most ${DISCONNECTED_MAX_BYTES} bytes of UTF-8, got ${describe(value)}`);
  }
  return value;
}

function parseShare(value: unknown, field: string): RouteShare {
  const s = record(value, field);
  const id = text(s.id, `${field}.id`);
  if (s.mode !== 'view' && s.mode !== 'control') throw new RouteMessageError(`${field}.mode`, `expected "view" or "control", got ${describe(s.mode)}`);
  const user = s.user === undefined ? undefined : text(s.user, `${field}.user`);
  const expiresAt = s.expiresAt;
  if (expiresAt !== undefined && (typeof expiresAt !== 'number' || !Number.isSafeInteger(expiresAt) || expiresAt <= 0)) {
    throw new RouteMessageError(`${field}.expiresAt`, `expected epoch milliseconds, got ${describe(expiresAt)}`);
  }
  const share: RouteShare = { id, mode: s.mode };
  if (user !== undefined) share.user = user;
  if (expiresAt !== undefined) share.expiresAt = expiresAt;
  return share;
}

/** Shares as sent, or [] when absent (routes published before sharing, which held `sharedWith: []`). */
function parseShares(value: unknown, field: string): RouteShare[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_SHARES) {
    throw new RouteMessageError(field, `expected an array of at most ${MAX_SHARES} shares, got ${describe(value)}`);
  }
  if (value.length === 0) return value as RouteShare[];
  const shares: RouteShare[] = new Array(value.length);
  for (let i = 0; i < value.length; i++) shares[i] = parseShare(value[i], `${field}[${i}]`);
  return shares;
}

function headerValue(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length > 8192 || !HEADER_SAFE.test(value)) {
    throw new RouteMessageError(field, 'expected a header value of printable ASCII (at most 8192 characters)');
  }
  return value;
}

function parseOwnerOnly(value: unknown, field: string): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length > MAX_OWNER_ONLY || !value.every((p) => typeof p === 'string' && OWNER_ONLY_PREFIX.test(p) && !/[?#]/.test(p))) {
    throw new RouteMessageError(field, `expected at most ${MAX_OWNER_ONLY} path prefixes starting with "/" (printable ASCII, no "?" or "#"), got ${describe(value)}`);
  }
  return [...(value as string[])];
}

function routeFrom(value: unknown, field: string): Route {
  const r = record(value, field);
  const shares = parseShares(r.shares, `${field}.shares`);
  const authorization = r.authorization === null ? null : headerValue(r.authorization, `${field}.authorization`);
  const viewerAuthorization = r.viewerAuthorization === undefined ? undefined : headerValue(r.viewerAuthorization, `${field}.viewerAuthorization`);
  const ownerOnly = parseOwnerOnly(r.ownerOnly, `${field}.ownerOnly`);
  const entryQuery = r.entryQuery;
  if (typeof entryQuery !== 'string' || entryQuery.length > 2048 || !HEADER_SAFE.test(entryQuery) || /[?#\s]/.test(entryQuery)) {
    throw new RouteMessageError(`${field}.entryQuery`, `expected a query without "?", "#" or spaces (may be ""), got ${describe(entryQuery)}`);
  }
  if (typeof r.state !== 'string' || !STATES.has(r.state)) {
    throw new RouteMessageError(`${field}.state`, `expected "starting", "running" or "stopping", got ${describe(r.state)}`);
  }
  const path = parseProxyPath(r.path, `${field}.path`);
  const desktopId = text(r.desktopId, `${field}.desktopId`);
  const owner = text(r.owner, `${field}.owner`);
  const upstream = parseUpstream(r.upstream, `${field}.upstream`);
  const stripPrefix = flag(r.stripPrefix, `${field}.stripPrefix`);
  const activity = parseActivity(r.activity, `${field}.activity`);
  const disconnected = parseDisconnected(r.disconnected, `${field}.disconnected`);
  // A 100,000-route snapshot costs mostly allocation: every known field is present and checked
  // now, so an object with exactly that many keys holds nothing else and is kept as it is. Shares
  // and owner-only prefixes are always copies (checked element by element), so they are set anew.
  const fields = ROUTE_FIELDS + (activity === undefined ? 0 : 1) + (disconnected === undefined ? 0 : 1) +
    (viewerAuthorization === undefined ? 0 : 1) + (ownerOnly === undefined ? 0 : 1);
  if (upstream === r.upstream && activity === r.activity && r.shares !== undefined && Object.keys(r).length === fields) {
    const kept = r as unknown as Route;
    kept.shares = shares;
    if (ownerOnly !== undefined) kept.ownerOnly = ownerOnly;
    return kept;
  }
  const route: Route = { path, desktopId, owner, shares, upstream, stripPrefix, authorization, entryQuery, state: r.state as RouteState };
  if (activity !== undefined) route.activity = activity;
  if (disconnected !== undefined) route.disconnected = disconnected;
  if (viewerAuthorization !== undefined) route.viewerAuthorization = viewerAuthorization;
  if (ownerOnly !== undefined) route.ownerOnly = ownerOnly;
  return route;
}

/** Checks a route (an object, or its JSON text); returns it with only the known fields. Throws RouteMessageError. */
export function parseRoute(raw: unknown): Route {
  return routeFrom(fromJson(raw, 'route'), 'route');
}

/** Checks a change message (an object, or its JSON text); returns it with only the known fields. Throws RouteMessageError. */
export function parseRouteChange(raw: unknown): RouteChange {
  const m = record(fromJson(raw, 'change'), 'change');
  const version = m.version;
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
    throw new RouteMessageError('change.version', `expected a positive integer, got ${describe(version)}`);
  }
  if (m.op === 'put') return { version, op: 'put', route: routeFrom(m.route, 'change.route') };
  if (m.op === 'delete') return { version, op: 'delete', path: parseProxyPath(m.path, 'change.path') };
  throw new RouteMessageError('change.op', `expected "put" or "delete", got ${describe(m.op)}`);
}

function activityKey(a: RouteActivity | undefined): string {
  return a === undefined || a.on === 'traffic' ? 'traffic' : `input:${a.rfb}`;
}

/** Two routes are the same when every field is: a resync reports only real differences. */
export function sameRoute(a: Route, b: Route): boolean {
  if (
    a.path !== b.path || a.desktopId !== b.desktopId || a.owner !== b.owner || a.stripPrefix !== b.stripPrefix ||
    a.authorization !== b.authorization || a.entryQuery !== b.entryQuery || a.state !== b.state ||
    a.upstream.scheme !== b.upstream.scheme || a.upstream.host !== b.upstream.host ||
    a.upstream.port !== b.upstream.port || a.upstream.verifyTls !== b.upstream.verifyTls ||
    a.shares.length !== b.shares.length || activityKey(a.activity) !== activityKey(b.activity) ||
    a.disconnected !== b.disconnected || a.viewerAuthorization !== b.viewerAuthorization ||
    (a.ownerOnly ?? []).join('\n') !== (b.ownerOnly ?? []).join('\n')
  ) {
    return false;
  }
  return a.shares.every((s, i) => {
    const o = b.shares[i]!;
    return s.id === o.id && s.user === o.user && s.mode === o.mode && s.expiresAt === o.expiresAt;
  });
}
