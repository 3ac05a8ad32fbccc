/**
 * The Origin check for WebSocket upgrades. Browsers send cookies with a cross-site WebSocket
 * handshake (SameSite does not stop a same-site attacker, and Lax cookies ride along in some
 * cases), so without this any page could open a socket to a user's desktop as that user:
 * cross-site WebSocket hijacking, CVE-2024-28179's class of bug.
 */

let memoPublicUrl = '';
let memoOrigin = '';

/**
 * True only for an Origin that is exactly PUBLIC_URL's scheme, host and port. A missing Origin
 * (not a browser, or a browser hiding it) and the opaque "null" origin are refused.
 */
export function originAllowed(originHeader: string | undefined, publicUrl: string): boolean {
  if (originHeader === undefined || originHeader === '' || originHeader === 'null') return false;
  if (publicUrl !== memoPublicUrl) {
    // URL.origin is the same serialisation browsers send: lower-case host, default port omitted.
    memoOrigin = new URL(publicUrl).origin;
    memoPublicUrl = publicUrl;
  }
  return originHeader === memoOrigin;
}
