/**
 * The access cookie: how the token travels from the control plane to the proxies, and back out
 * of a request's Cookie header on the proxy's hot path.
 */
import type { IssuedToken } from './signer.ts';

export const ACCESS_COOKIE_NAME = 'deskhub_access';

/**
 * The access cookie on a desktop's own origin (DESKTOP_ORIGIN): `__Host-` makes the browser
 * refuse it unless it is Secure, host-only and for Path=/, so no sibling subdomain can plant or
 * widen one (cookie tossing between desktops).
 */
export const DESKTOP_ACCESS_COOKIE_NAME = '__Host-deskhub_access';

/** The cookie goes only to desktop paths: the API and UI never see it, and it cannot unlock them. */
export const ACCESS_COOKIE_PATH = '/desktop/';

/**
 * More same-named cookies than this in one header is not a browser talking to us; the rest are
 * ignored so the work per request stays bounded.
 */
export const MAX_ACCESS_COOKIES = 4;

const ACCESS_NAME_EQ = `${ACCESS_COOKIE_NAME}=`;
const DESKTOP_NAME_EQ = `${DESKTOP_ACCESS_COOKIE_NAME}=`;
const SEMICOLON = 59;
const SPACE = 32;
const TAB = 9;

/**
 * Every deskhub_access value in a Cookie header, in header order (usually one). More than one
 * happens when a neighbouring site on a shared parent domain plants its own (cookie tossing),
 * so the caller must not simply take the first: see `checkAccess`. This is a scan for one name,
 * not a cookie parser: the proxy does it on every request and needs nothing else from the header.
 */
export function readAccessTokens(cookieHeader: string | undefined, name: string = ACCESS_COOKIE_NAME): string[] {
  const found: string[] = [];
  if (cookieHeader === undefined || cookieHeader.length === 0) return found;
  const nameEq = name === ACCESS_COOKIE_NAME ? ACCESS_NAME_EQ : name === DESKTOP_ACCESS_COOKIE_NAME ? DESKTOP_NAME_EQ : `${name}=`;
  let from = 0;
  while (found.length < MAX_ACCESS_COOKIES) {
    const at = cookieHeader.indexOf(nameEq, from);
    if (at < 0) break;
    from = at + nameEq.length;
    // Only a whole cookie name counts: at the start of the header or after "; ".
    let before = at - 1;
    while (before >= 0 && (cookieHeader.charCodeAt(before) === SPACE || cookieHeader.charCodeAt(before) === TAB)) before--;
    if (before >= 0 && cookieHeader.charCodeAt(before) !== SEMICOLON) continue;
    let end = cookieHeader.indexOf(';', from);
    if (end < 0) end = cookieHeader.length;
    let value = cookieHeader.slice(from, end).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    if (value.length > 0) found.push(value);
    from = end;
  }
  return found;
}

function secureFlag(publicUrl: string): string {
  return new URL(publicUrl).protocol === 'https:' ? '; Secure' : '';
}

/** The Set-Cookie value for a freshly minted token; it lives exactly as long as the token. */
export function accessCookie(issued: IssuedToken, publicUrl: string): string {
  const maxAge = Math.max(0, Math.floor((issued.claims.expiresAt - issued.claims.issuedAt) / 1000));
  return `${ACCESS_COOKIE_NAME}=${issued.token}; Path=${ACCESS_COOKIE_PATH}; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${secureFlag(publicUrl)}`;
}

/**
 * The Set-Cookie value on a desktop's own origin. The desktop is framed by the UI, another site:
 * a cookie in a cross-site frame needs `SameSite=None; Secure`, and `Partitioned` (CHIPS) keys it
 * to the embedding site, so it is sent only inside deskhub's UI (or the desktop's own tab), never
 * when some other site frames or links the desktop.
 */
export function desktopAccessCookie(issued: IssuedToken): string {
  const maxAge = Math.max(0, Math.floor((issued.claims.expiresAt - issued.claims.issuedAt) / 1000));
  return `${DESKTOP_ACCESS_COOKIE_NAME}=${issued.token}; Path=/; Max-Age=${maxAge}; HttpOnly; Secure; SameSite=None; Partitioned`;
}

/** The Set-Cookie value that removes the access cookie (logout). */
export function clearAccessCookie(publicUrl: string): string {
  return `${ACCESS_COOKIE_NAME}=; Path=${ACCESS_COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Lax${secureFlag(publicUrl)}`;
}
