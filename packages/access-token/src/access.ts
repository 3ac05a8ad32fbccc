/**
 * The proxy's access decision for one request: who is asking (the access cookie) against who may
 * reach the desktop (the route's owner, and the shares and links it carries), and with which
 * rights: the owner's, `control` (input, not the owner's own paths), or `view` (watching only).
 */
import type { AccessClaims } from './token.ts';
import type { Verifier, VerifyFailure } from './verifier.ts';
import { ACCESS_COOKIE_NAME, readAccessTokens } from './cookie.ts';

export type ShareMode = 'view' | 'control';
export type AccessRole = 'owner' | ShareMode;

/** One share of a desktop as the route carries it (route-stream's RouteShare). */
export interface ShareAccess {
  /** The share's or link's id: a viewer's token names it (`grant`). */
  readonly id: string;
  /** The user it is shared with; absent for a link, which any signed-in user who opened it may use. */
  readonly user?: string;
  readonly mode: ShareMode;
  /** Epoch ms; absent: until revoked. */
  readonly expiresAt?: number;
}

/** The part of a route-stream Route that says who may reach it. */
export interface RouteAccess {
  readonly path: string;
  readonly owner: string;
  readonly shares: readonly ShareAccess[];
}

export type AccessDecision =
  /** `role` absent: the owner (the verifier's own result is handed back, so the owner's request allocates nothing here). */
  | { readonly ok: true; readonly claims: AccessClaims; readonly role?: ShareMode; readonly share?: ShareAccess }
  /** Not signed in (or the token is no good): a page load goes to sign-in, anything else gets 401. */
  | { readonly ok: false; readonly status: 401; readonly reason: VerifyFailure }
  /** Signed in as someone who may not reach this desktop (or no longer: a share revoked or expired): 403. */
  | { readonly ok: false; readonly status: 403; readonly reason: 'not-allowed'; readonly claims: AccessClaims };

/** How the tokens of a request are read and what they must be scoped to. */
export interface AccessScope {
  /** The cookie carrying the token: `deskhub_access` on the UI's origin, `__Host-deskhub_access` on a desktop's. */
  readonly cookieName: string;
  /**
   * On a desktop's own origin, only a token naming this very desktop counts (`claims.desktop`);
   * on the UI's origin, only a token naming none.
   */
  readonly desktopScoped: boolean;
}

export const UI_ORIGIN_SCOPE: AccessScope = Object.freeze({ cookieName: ACCESS_COOKIE_NAME, desktopScoped: false });

/** The share a viewer's token was minted under, while the route still carries it for that user. */
export function shareFor(route: RouteAccess, claims: AccessClaims, now: number): ShareAccess | undefined {
  const grant = claims.grant;
  if (grant === undefined) return undefined;
  for (const share of route.shares) {
    if (share.id !== grant) continue;
    if (share.user !== undefined && share.user !== claims.userId) return undefined;
    if (share.expiresAt !== undefined && share.expiresAt <= now) return undefined;
    return share;
  }
  return undefined;
}

/** What the holder of `claims` may do on `route`, or null for nothing. */
export function roleOn(route: RouteAccess, claims: AccessClaims, scoped: boolean, now: number): { role: AccessRole; share?: ShareAccess } | null {
  if (scoped ? claims.desktop !== route.path : claims.desktop !== undefined) return null;
  if (claims.grant === undefined) return claims.userId === route.owner ? OWNER : null;
  const share = shareFor(route, claims, now);
  return share === undefined ? null : { role: share.mode, share };
}

const OWNER = Object.freeze({ role: 'owner' as const });

/**
 * Decides from the Cookie header alone. With several access cookies (one planted by a
 * neighbouring site), the request passes if any of them is valid for this desktop; a planted
 * cookie can therefore neither lock the owner out nor lend its bearer's rights to anyone beyond
 * what that bearer already has. The owner's token wins over a viewer's when both are present.
 */
export function checkAccess(
  verifier: Verifier,
  cookieHeader: string | undefined,
  route: RouteAccess,
  now: number = Date.now(),
  scope: AccessScope = UI_ORIGIN_SCOPE,
): AccessDecision {
  const tokens = readAccessTokens(cookieHeader, scope.cookieName);
  let firstFailure: VerifyFailure = 'missing';
  let signedInAs: AccessClaims | undefined;
  let best: AccessDecision | undefined;
  for (const token of tokens) {
    const result = verifier.verify(token, now);
    if (result.ok) {
      const granted = roleOn(route, result.claims, scope.desktopScoped, now);
      if (granted === null) signedInAs ??= result.claims;
      else if (granted.role === 'owner') return result;
      else if (best === undefined || (best.ok && best.role === 'view' && granted.role === 'control')) {
        best = { ok: true, claims: result.claims, role: granted.role, share: granted.share! };
      }
    } else if (firstFailure === 'missing') {
      firstFailure = result.reason;
    }
  }
  if (best !== undefined) return best;
  if (signedInAs !== undefined) return { ok: false, status: 403, reason: 'not-allowed', claims: signedInAs };
  return { ok: false, status: 401, reason: firstFailure };
}
