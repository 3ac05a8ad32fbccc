/**
 * Header rules between a browser and an upstream (a desktop or the control plane), each way in
 * one pass over the parsed header list, written straight into the message head.
 *
 * Towards the upstream: hop-by-hop headers go (Connection and the headers it names, Keep-Alive,
 * TE, Trailer, Transfer-Encoding, Upgrade unless upgrading, Proxy-*, and Expect, which the
 * proxy answers itself), Host becomes the upstream's, X-Forwarded-For/-Proto/-Host are set.
 * For a desktop also: Authorization is replaced by the route's credentials (or removed), and
 * deskhub's own cookies are removed (KasmVNC refuses headers over 1 KB, so an emptied Cookie
 * header is dropped).
 *
 * Towards the browser: hop-by-hop headers go, WWW-Authenticate is dropped from a desktop's 401
 * (the browser must never show a login prompt for the VNC password), Location, Refresh and a
 * cookie's Path are brought back under the desktop's prefix, and a desktop's cookie loses its
 * Domain. Header names with "_" never reach an upstream.
 */
import type { UpstreamTarget } from './targets.ts';

const HOST_PREFIX = '__Host-';

/** A cookie deskhub sets itself: `deskhub`, `deskhub_*`, `deskhub.*`, and each of these with the `__Host-` prefix. */
export function isOwnCookie(name: string): boolean {
  if (name.startsWith(HOST_PREFIX)) return isOwnCookie(name.slice(HOST_PREFIX.length));
  return name.startsWith('deskhub') && (name.length === 7 || name.charCodeAt(7) === 95 /* _ */ || name.charCodeAt(7) === 46 /* . */);
}

/** The Cookie value without deskhub's cookies; "" when none remain. */
export function stripOwnCookies(value: string): string {
  if (value.indexOf('deskhub') === -1) return value; // `__Host-deskhub_access` contains it too
  const kept: string[] = [];
  for (const part of value.split(';')) {
    const pair = part.trim();
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const name = (eq === -1 ? pair : pair.slice(0, eq)).trim();
    if (!isOwnCookie(name)) kept.push(pair);
  }
  return kept.join('; ');
}

/**
 * Headers a `Connection` token never removes (RFC 9110 §7.6.1 lets a sender name any header
 * there; a proxy need not obey it for headers it relies on): the ones that frame the message,
 * and the ones the proxy itself writes or vouches for. Obeying `Connection: Content-Length` would
 * forward a body with no length, which the upstream reads as the next request on a pooled
 * connection (request smuggling); obeying `Connection: X-Request-Id` would lose the request id.
 */
const NEVER_NAMED = new Set([
  'content-length',
  'transfer-encoding',
  'host',
  'authorization',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-request-id',
]);

/** Header names listed in Connection, beyond the ones that name no header and those never removed. */
function connectionNamed(value: string): string[] | null {
  let named: string[] | null = null;
  for (const token of value.split(',')) {
    const t = token.trim().toLowerCase();
    if (t === '' || t === 'close' || t === 'keep-alive' || t === 'upgrade' || NEVER_NAMED.has(t)) continue;
    (named ??= []).push(t);
  }
  return named;
}

/** Removes "name: value\r\n" lines whose (lower-case) name is in `names`. */
function dropLines(lines: string, names: string[]): string {
  let out = '';
  for (const line of lines.split('\r\n')) {
    if (line === '') continue;
    const colon = line.indexOf(':');
    if (!names.includes(line.slice(0, colon).toLowerCase())) out += line + '\r\n';
  }
  return out;
}

/** What a request head needs besides the raw header list. */
export interface RequestHeadInput {
  method: string;
  rawHeaders: string[];
  /** The body's declared length, -1 when none was declared. */
  contentLength: number;
  chunked: boolean;
  remoteAddress: string | undefined;
}

/**
 * The complete request head for the upstream (request line, headers, blank line).
 * `upgrade` (a WebSocket handshake: the front only hands over an Upgrade list that names
 * websocket, RFC 6455 §4.1) sends `Upgrade: websocket` and `Connection: Upgrade`, whatever
 * other protocols the client listed: the proxy relays WebSockets and nothing else.
 * The body's framing is the proxy's own, written from what the parser found (a declared length,
 * or chunked), never a copy of the client's lines: whatever else the client sent cannot unframe
 * what the proxy forwards.
 */
export function requestHead(req: RequestHeadInput, target: UpstreamTarget, path: string, proto: string, requestId: string, upgrade: boolean): string {
  const raw = req.rawHeaders;
  const desktop = target.route !== null;
  let lines = '';
  let host: string | undefined;
  let forwardedFor: string | undefined;
  let connection: string | undefined;
  let cookies: string | undefined;
  let hasRequestId = false;

  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    const lower = name.toLowerCase();
    switch (lower) {
      case 'host':
        host = value;
        continue;
      case 'connection':
        connection = connection === undefined ? value : `${connection}, ${value}`;
        continue;
      case 'keep-alive':
      case 'te':
      case 'trailer':
      case 'expect':
      case 'http2-settings':
      case 'x-forwarded-proto':
      case 'x-forwarded-host':
      case 'transfer-encoding':
      case 'content-length':
        continue;
      case 'upgrade':
        continue;
      case 'x-forwarded-for':
        forwardedFor = forwardedFor === undefined ? value : `${forwardedFor}, ${value}`;
        continue;
      case 'x-request-id':
        hasRequestId = true;
        break;
      case 'authorization':
        if (desktop) continue;
        break;
      case 'cookie':
        if (desktop) {
          cookies = cookies === undefined ? value : `${cookies}; ${value}`;
          continue;
        }
        break;
      default:
        // Proxy-*: meant for a proxy. A name with "_": CGI and WSGI servers read "_" as "-", so
        // X_Forwarded_For would arrive as the X-Forwarded-For the proxy vouches for (dropped, as
        // nginx does by default).
        if (lower.startsWith('proxy-') || lower.indexOf('_') !== -1) continue;
    }
    lines += `${name}: ${value}\r\n`;
  }

  if (connection !== undefined) {
    // Connection names more hop-by-hop headers (RFC 9110 §7.6.1).
    const named = connectionNamed(connection);
    if (named !== null) lines = dropLines(lines, named);
  }
  if (desktop) {
    if (target.authorization) lines += `authorization: ${target.authorization}\r\n`;
    if (cookies !== undefined) {
      const kept = stripOwnCookies(cookies);
      if (kept !== '') lines += `cookie: ${kept}\r\n`;
    }
  }
  const client = req.remoteAddress;
  if (client !== undefined) lines += `x-forwarded-for: ${forwardedFor === undefined ? client : `${forwardedFor}, ${client}`}\r\n`;
  else if (forwardedFor !== undefined) lines += `x-forwarded-for: ${forwardedFor}\r\n`;
  lines += `x-forwarded-proto: ${proto}\r\n`;
  if (host !== undefined) lines += `x-forwarded-host: ${host}\r\n`;
  if (!hasRequestId) lines += `x-request-id: ${requestId}\r\n`;
  if (upgrade) lines += 'upgrade: websocket\r\nconnection: Upgrade\r\n';
  else if (req.chunked) lines += 'transfer-encoding: chunked\r\n';
  else if (req.contentLength >= 0) lines += `content-length: ${req.contentLength}\r\n`;
  return `${req.method} ${path} HTTP/1.1\r\nhost: ${target.authority}\r\n${lines}\r\n`;
}

/**
 * Where an upstream's redirect points, seen from the browser: an absolute URL naming the
 * upstream itself loses its origin, and for a route that strips the prefix, an absolute path
 * gets the prefix back (`/login` from the container is `/desktop/<p>/login` to the browser).
 * Relative references and other origins are left alone.
 */
export function rewriteLocation(value: string, target: UpstreamTarget): string {
  let path = value;
  if (value.length >= target.origin.length && value.charCodeAt(0) !== 47) {
    if (value.slice(0, target.origin.length).toLowerCase() === target.origin) {
      path = value.slice(target.origin.length);
      if (path === '' || path.charCodeAt(0) === 63 /* ? */ || path.charCodeAt(0) === 35 /* # */) path = '/' + path;
      else if (path.charCodeAt(0) !== 47) return value;
    } else {
      return value;
    }
  } else if (value.charCodeAt(0) !== 47 || value.charCodeAt(1) === 47 /* protocol-relative //host */) {
    return value;
  }
  return target.strip ? target.prefix + path : path;
}

/**
 * A cookie a desktop sets, seen from the browser: its `Domain` attribute is removed, so the
 * cookie stays host-only (a desktop must not set cookies for deskhub's parent domain or its
 * siblings); and for a route that strips the prefix, an absolute `Path` gets the prefix back
 * (`Path=/` from the container is `Path=/desktop/<p>/`), so the cookie stays scoped to its desktop
 * instead of reaching every path of deskhub's origin (as nginx's proxy_cookie_path does). A cookie
 * without Path already defaults to the request's (prefixed) path in the browser. The control
 * plane's cookies are deskhub's own and pass unchanged.
 */
export function rewriteSetCookie(value: string, target: UpstreamTarget): string {
  if (target.route === null) return value;
  const parts = value.split(';');
  let changed = false;
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i] as string;
    const eq = part.indexOf('=');
    const name = (eq === -1 ? part : part.slice(0, eq)).trim().toLowerCase();
    if (name === 'domain') {
      parts[i] = '';
      changed = true;
      continue;
    }
    if (eq === -1 || name !== 'path' || !target.strip) continue;
    const path = part.slice(eq + 1).trim();
    if (path.charCodeAt(0) !== 47 /* / */) continue;
    parts[i] = ` Path=${target.prefix}${path}`;
    changed = true;
  }
  return changed ? parts.filter((part, i) => i === 0 || part !== '').join(';') : value;
}

/**
 * `Refresh: N; url=<location>` (a redirect after N seconds, as browsers read it): its URL is
 * brought under the desktop as Location's is. Without a URL it is left alone.
 */
export function rewriteRefresh(value: string, target: UpstreamTarget): string {
  const m = /^(\s*[0-9.]*\s*[;,]\s*url\s*=\s*)(['"]?)(.*?)\2\s*$/i.exec(value);
  if (m === null) return value;
  const [, before, quote, location] = m as unknown as [string, string, string, string];
  const rewritten = rewriteLocation(location, target);
  return rewritten === location ? value : `${before}${quote}${rewritten}${quote}`;
}

/** The upstream's response head, cleaned for the browser. */
export interface ResponseHeadParts {
  /** "name: value\r\n" lines, without framing or connection headers. */
  lines: string;
  /** The upstream declared a Content-Length. */
  hasLength: boolean;
  /** Seconds from the upstream's Keep-Alive: timeout=N, or -1. */
  keepAliveSeconds: number;
  /** The upstream's Transfer-Encoding (its lines joined by ","), undefined when it sent none. */
  transferEncoding: string | undefined;
}

export function responseHeaderLines(headers: string[], status: number, target: UpstreamTarget): ResponseHeadParts {
  const desktop = target.route !== null;
  let lines = '';
  let connection: string | undefined;
  let hasLength = false;
  let keepAliveSeconds = -1;
  let transferEncoding: string | undefined;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i] as string;
    const value = headers[i + 1] as string;
    const lower = name.toLowerCase();
    switch (lower) {
      case 'content-length':
        hasLength = true;
        break;
      case 'connection':
        connection = connection === undefined ? value : `${connection}, ${value}`;
        continue;
      case 'keep-alive': {
        const m = /timeout=(\d+)/i.exec(value);
        if (m) keepAliveSeconds = Number(m[1]);
        continue;
      }
      case 'transfer-encoding':
        transferEncoding = transferEncoding === undefined ? value : `${transferEncoding}, ${value}`;
        continue;
      case 'te':
      case 'trailer':
      case 'upgrade':
        continue;
      case 'www-authenticate':
        if (desktop && status === 401) continue;
        break;
      case 'location':
        lines += `${name}: ${rewriteLocation(value, target)}\r\n`;
        continue;
      case 'set-cookie':
        lines += `${name}: ${rewriteSetCookie(value, target)}\r\n`;
        continue;
      case 'refresh':
        lines += `${name}: ${rewriteRefresh(value, target)}\r\n`;
        continue;
      default:
        if (lower.startsWith('proxy-')) continue;
    }
    lines += `${name}: ${value}\r\n`;
  }
  if (connection !== undefined) {
    const named = connectionNamed(connection);
    if (named !== null) lines = dropLines(lines, named);
  }
  return { lines, hasLength, keepAliveSeconds, transferEncoding };
}

/** First value of a header in a raw header list (for the rare paths that need one). */
export function rawHeader(raw: string[], lowerName: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).length === lowerName.length && (raw[i] as string).toLowerCase() === lowerName) return raw[i + 1];
  }
  return undefined;
}
