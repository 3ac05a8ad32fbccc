/**
 * Header rules between a browser and an upstream (a desktop or the control plane), in one pass
 * over `rawHeaders` each way. Node's lazy `req.headers` object is never built on the hot path.
 *
 * Towards the upstream: hop-by-hop headers go (Connection and the headers it names, Keep-Alive,
 * TE, Trailer, Transfer-Encoding, Upgrade unless upgrading, Proxy-*, and Expect, which Node has
 * already answered), Host becomes the upstream's, X-Forwarded-For/-Proto/-Host are set. For a
 * desktop also: Authorization is replaced by the route's credentials (or removed), and
 * deskhub's own cookies are removed (KasmVNC refuses headers over 1 KB, so an emptied Cookie
 * header is dropped).
 *
 * Towards the browser: hop-by-hop headers go, WWW-Authenticate is dropped from a desktop's 401
 * (the browser must never show a login prompt for the VNC password), and Location is brought
 * back under the desktop's prefix.
 */
import type { UpstreamTarget } from './targets.ts';

/** What the request pass learned besides the header list. */
export interface RequestFacts {
  headers: string[];
  /** -1 when absent. */
  contentLength: number;
  chunked: boolean;
  accept: string | undefined;
  host: string | undefined;
  upgrade: string | undefined;
}

/** A cookie deskhub sets itself: `deskhub`, `deskhub_*`, `deskhub.*`. */
export function isOwnCookie(name: string): boolean {
  return name.startsWith('deskhub') && (name.length === 7 || name.charCodeAt(7) === 95 /* _ */ || name.charCodeAt(7) === 46 /* . */);
}

/** The Cookie value without deskhub's cookies; "" when none remain. */
export function stripOwnCookies(value: string): string {
  if (value.indexOf('deskhub') === -1) return value;
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

function commaTokens(value: string): string[] {
  return value.split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== '');
}

function removeNamed(headers: string[], names: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (!names.includes((headers[i] as string).toLowerCase())) out.push(headers[i] as string, headers[i + 1] as string);
  }
  return out;
}

/**
 * Builds the header list for the upstream request as a flat [name, value, ...] array.
 * `upgrade` keeps the Upgrade header (WebSocket handshakes); the caller adds Connection itself.
 */
export function requestHeaders(
  raw: string[],
  target: UpstreamTarget,
  clientAddress: string | undefined,
  proto: string,
  requestId: string,
  upgrade: boolean,
): RequestFacts {
  const headers: string[] = [];
  const desktop = target.route !== null;
  let contentLength = -1;
  let chunked = false;
  let accept: string | undefined;
  let host: string | undefined;
  let upgradeValue: string | undefined;
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
        continue;
      case 'transfer-encoding':
        chunked = true;
        continue;
      case 'upgrade':
        upgradeValue = value;
        if (!upgrade) continue;
        break;
      case 'content-length':
        contentLength = Number(value);
        break;
      case 'accept':
        accept = value;
        break;
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
        if (lower.startsWith('proxy-')) continue;
    }
    headers.push(name, value);
  }

  if (desktop) {
    if (target.authorization) headers.push('authorization', target.authorization);
    if (cookies !== undefined) {
      const kept = stripOwnCookies(cookies);
      if (kept !== '') headers.push('cookie', kept);
    }
  }
  if (clientAddress !== undefined) {
    headers.push('x-forwarded-for', forwardedFor === undefined ? clientAddress : `${forwardedFor}, ${clientAddress}`);
  } else if (forwardedFor !== undefined) {
    headers.push('x-forwarded-for', forwardedFor);
  }
  headers.push('x-forwarded-proto', proto);
  if (host !== undefined) headers.push('x-forwarded-host', host);
  if (!hasRequestId) headers.push('x-request-id', requestId);

  let out = headers;
  if (connection !== undefined) {
    // Connection names more hop-by-hop headers (RFC 9110 §7.6.1); "close"/"keep-alive"/"upgrade" name none we kept.
    const named = commaTokens(connection).filter((t) => t !== 'close' && t !== 'keep-alive' && t !== 'upgrade');
    if (named.length > 0) out = removeNamed(headers, named);
  }
  return { headers: out, contentLength, chunked, accept, host, upgrade: upgradeValue };
}

/** First value of a header in rawHeaders (for the rare paths that need one before the full pass). */
export function rawHeader(raw: string[], lowerName: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).length === lowerName.length && (raw[i] as string).toLowerCase() === lowerName) return raw[i + 1];
  }
  return undefined;
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
 * Builds the response header list from undici's raw header buffers.
 * Returns strings (latin1 keeps the bytes exactly as Node writes headers in latin1).
 */
export function responseHeaders(raw: Buffer[], status: number, target: UpstreamTarget): string[] {
  const out: string[] = [];
  const desktop = target.route !== null;
  let connection: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as Buffer).toString('latin1');
    const rawValue = raw[i + 1] as Buffer | Buffer[];
    const lower = name.toLowerCase();
    switch (lower) {
      case 'connection':
        connection = Array.isArray(rawValue) ? rawValue.map((b) => b.toString('latin1')).join(', ') : rawValue.toString('latin1');
        continue;
      case 'keep-alive':
      case 'transfer-encoding':
      case 'te':
      case 'trailer':
      case 'upgrade':
        continue;
      case 'www-authenticate':
        if (desktop && status === 401) continue;
        break;
      case 'location': {
        const value = Array.isArray(rawValue) ? (rawValue[0] as Buffer).toString('latin1') : rawValue.toString('latin1');
        out.push(name, rewriteLocation(value, target));
        continue;
      }
      default:
        if (lower.startsWith('proxy-')) continue;
    }
    if (Array.isArray(rawValue)) {
      for (const v of rawValue) out.push(name, v.toString('latin1'));
    } else {
      out.push(name, rawValue.toString('latin1'));
    }
  }
  if (connection !== undefined) {
    const named = commaTokens(connection).filter((t) => t !== 'close' && t !== 'keep-alive');
    if (named.length > 0) return removeNamed(out, named);
  }
  return out;
}
