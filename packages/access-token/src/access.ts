/**
 * The proxy's access decision for one request: who is asking (the access cookie) against who may
 * reach the desktop (the route's owner and the users it is shared with).
 */
import type { AccessClaims } from './token.ts';
import type { Verifier, VerifyFailure } from './verifier.ts';
import { readAccessTokens } from './cookie.ts';

/** The part of a route-stream Route that says who may reach it. */
export interface RouteAccess {
  readonly owner: string;
  readonly sharedWith: readonly string[];
}

export type AccessDecision =
  | { readonly ok: true; readonly claims: AccessClaims }
  /** Not signed in (or the token is no good): a page load goes to sign-in, anything else gets 401. */
  | { readonly ok: false; readonly status: 401; readonly reason: VerifyFailure }
  /** Signed in as someone who may not reach this desktop: 403. */
  | { readonly ok: false; readonly status: 403; readonly reason: 'not-allowed'; readonly claims: AccessClaims };

export function mayReach(route: RouteAccess, userId: string): boolean {
  return route.owner === userId || route.sharedWith.includes(userId);
}

/**
 * Decides from the Cookie header alone. With several access cookies (one planted by a
 * neighbouring site), the request passes if any of them is valid for a user allowed here; a
 * planted cookie can therefore neither lock the owner out nor lend its bearer's rights to
 * anyone beyond what that bearer already has.
 */
export function checkAccess(verifier: Verifier, cookieHeader: string | undefined, route: RouteAccess, now: number = Date.now()): AccessDecision {
  const tokens = readAccessTokens(cookieHeader);
  let firstFailure: VerifyFailure = 'missing';
  let signedInAs: AccessClaims | undefined;
  for (const token of tokens) {
    const result = verifier.verify(token, now);
    if (result.ok) {
      if (mayReach(route, result.claims.userId)) return result;
      signedInAs ??= result.claims;
    } else if (firstFailure === 'missing') {
      firstFailure = result.reason;
    }
  }
  if (signedInAs !== undefined) return { ok: false, status: 403, reason: 'not-allowed', claims: signedInAs };
  return { ok: false, status: 401, reason: firstFailure };
}
