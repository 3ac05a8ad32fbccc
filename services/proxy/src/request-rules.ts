/**
 * What the proxy refuses in a request head before anything is sent anywhere, from the RFCs
 * rather than from examples: a message whose length the proxy cannot determine the same way as
 * every server behind it (RFC 9112 §6), a Host that is missing, repeated or not an authority
 * (RFC 9112 §3.2, RFC 9110 §4.2.1 and §7.2), a major version other than 1 (RFC 9110 §15.6.6),
 * a request line without a version (HTTP/0.9, which RFC 9112's grammar does not have), the two
 * methods a gateway to desktops has no business relaying (CONNECT opens a tunnel anywhere;
 * TRACE echoes the request, credentials included: RFC 9110 §9.3.8; nginx refuses both), and
 * WebSocket handshakes that RFC 6455 §4.1 does not allow. Called once per request head by the
 * front (front.ts) and for upgrades by the proxy (proxy.ts); the common case costs a few
 * comparisons.
 */

export interface Refusal {
  status: number;
  message: string;
  /** Header lines the answer carries besides the usual ones, each ending in CRLF. */
  headers?: string;
}

function refusal(status: number, message: string, headers?: string): Refusal {
  return headers === undefined ? { status, message } : { status, message, headers };
}

const VERSION_NOT_SUPPORTED = refusal(505, 'Only HTTP/1.0 and HTTP/1.1 are spoken here.');
const VERSION_MISSING = refusal(400, 'The request line has no HTTP version (HTTP/0.9 is not spoken here).');

/** The request line's version: llhttp reads a line without one as 0.9. */
export function versionRefusal(major: number): Refusal | null {
  if (major === 1) return null;
  return major === 0 ? VERSION_MISSING : VERSION_NOT_SUPPORTED;
}

/** RFC 9110 §15.5.6: a 405 names the methods that are allowed. */
const ALLOW = 'Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n';
const CONNECT_REFUSED = refusal(405, 'CONNECT is not supported.', ALLOW);
const TRACE_REFUSED = refusal(405, 'TRACE is not supported.', ALLOW);

export function methodRefusal(method: string): Refusal | null {
  if (method.length !== 5 && method.length !== 7) return null;
  return method === 'TRACE' ? TRACE_REFUSED : method === 'CONNECT' ? CONNECT_REFUSED : null;
}
const HOST_MISSING = refusal(400, 'An HTTP/1.1 request needs a Host header.');
const HOST_REPEATED = refusal(400, 'A request may carry only one Host header.');
const HOST_INVALID = refusal(400, 'The Host header is not a valid host name and port.');
const TE_ON_HTTP10 = refusal(400, 'Transfer-Encoding is not allowed in an HTTP/1.0 request.');
const TE_NOT_CHUNKED = refusal(400, 'The request body has no determinable length: chunked must be the final transfer coding, and only once.');
const TE_UNKNOWN = refusal(501, 'The request uses a transfer coding this proxy does not implement.');

/**
 * Transfer codings that have a meaning (IANA's registry, and `identity` from RFC 2616): a name
 * outside it is not understood (501); a known one other than a single final `chunked` is a body
 * the proxy will not decode or forward (501), or one whose length cannot be told at all (400).
 */
const KNOWN_CODINGS = new Set(['chunked', 'gzip', 'x-gzip', 'deflate', 'compress', 'x-compress', 'identity']);

/** `Transfer-Encoding` (all its lines joined by ","): null when it is exactly `chunked`. */
export function transferCodingRefusal(value: string, versionMinor: number): Refusal | null {
  if (versionMinor === 0) return TE_ON_HTTP10; // RFC 9112 §6.1: the framing is faulty
  if (value.length === 7 && value.toLowerCase() === 'chunked') return null;
  const codings: string[] = [];
  for (const item of value.split(',')) {
    const semi = item.indexOf(';');
    const name = (semi === -1 ? item : item.slice(0, semi)).trim().toLowerCase();
    if (name === '') continue;
    if (!KNOWN_CODINGS.has(name)) return TE_UNKNOWN;
    codings.push(name);
  }
  const chunkedAt = codings.indexOf('chunked');
  if (chunkedAt === -1 || chunkedAt !== codings.length - 1) return TE_NOT_CHUNKED; // §6.3: MUST 400
  return codings.length === 1 ? null : TE_UNKNOWN; // gzip, chunked: a coding not implemented here (§6.1)
}

/**
 * host [":" port] as RFC 3986 §3.2.2 allows it: a reg-name (unreserved, sub-delims and
 * percent-escapes), an IPv4 address, or a bracketed IPv6 / future literal; a port of digits.
 */
const AUTHORITY = /^(?:\[[0-9A-Za-z:.\-_~!$&'()*+,;=]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)(?::[0-9]{0,5})?$/;

export function validAuthority(value: string): boolean {
  return AUTHORITY.test(value);
}

/** The Host rules of RFC 9112 §3.2: exactly one, a valid authority, required from HTTP/1.1 on. */
export function hostRefusal(count: number, value: string | undefined, versionMinor: number): Refusal | null {
  if (count === 1) return validAuthority(value as string) ? null : HOST_INVALID;
  if (count === 0) return versionMinor === 0 ? null : HOST_MISSING;
  return HOST_REPEATED;
}

/** A WebSocket opening handshake must be a GET on HTTP/1.1 without a body (RFC 6455 §4.1). */
export function webSocketRefusal(method: string, versionMinor: number, hasBody: boolean): Refusal | null {
  if (method !== 'GET') return refusal(400, `A WebSocket handshake must use GET, not ${method}.`);
  if (versionMinor === 0) return refusal(400, 'A WebSocket handshake needs HTTP/1.1.');
  if (hasBody) return refusal(400, 'A WebSocket handshake cannot carry a body.');
  return null;
}
