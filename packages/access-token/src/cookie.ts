/**
 * The access cookie: how the token travels from the control plane to the proxies, and back out
 * of a request's Cookie header on the proxy's hot path.
 */
import type { IssuedToken } from './signer.ts';

export const ACCESS_COOKIE_NAME = 'deskhub_access';

/** The cookie goes only to desktop paths: the API and UI never see it, and it cannot unlock them. */
export const ACCESS_COOKIE_PATH = '/desktop/';

/**
 * More same-named cookies than this in one header is not a browser talking to us; the rest are
 * ignored so the work per request stays bounded.
 */
export const MAX_ACCESS_COOKIES = 4;

const NAME_EQ = `${ACCESS_COOKIE_NAME}=`;
const SEMICOLON = 59;
const SPACE = 32;
const TAB = 9;

/**
 * Every deskhub_access value in a Cookie header, in header order (usually one). More than one
 * happens when a neighbouring site on a shared parent domain plants its own (cookie tossing),
 * so the caller must not simply take the first: see `checkAccess`. This is a scan for one name,
 * not a cookie parser: the proxy does it on every request and needs nothing else from the header.
 */
export function readAccessTokens(cookieHeader: string | undefined): string[] {
  const found: string[] = [];
  if (cookieHeader === undefined || cookieHeader.length === 0) return found;
  let from = 0;
  while (found.length < MAX_ACCESS_COOKIES) {
    const at = cookieHeader.indexOf(NAME_EQ, from);
    if (at < 0) break;
    from = at + NAME_EQ.length;
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

/** The Set-Cookie value that removes the access cookie (logout). */
export function clearAccessCookie(publicUrl: string): string {
  return `${ACCESS_COOKIE_NAME}=; Path=${ACCESS_COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Lax${secureFlag(publicUrl)}`;
}
