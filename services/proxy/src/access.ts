/**
 * The proxy's access control: the AccessHook that lets a desktop's owner, and the users it is
 * shared with, through, from the access cookie and the route alone (no database or Redis per
 * request), and the registry of open WebSockets per session, so that revoking a session (logout)
 * also cuts the desktop connections it opened.
 *
 * Two kinds of origin. Without DESKTOP_ORIGIN every desktop is under the UI's origin and only its
 * owner gets in (`deskhub_access`, Path=/desktop/). With it, each desktop is on an origin of its
 * own and is reached there with `__Host-deskhub_access`, a token naming that one desktop (and,
 * for a viewer, the share it was minted under): the role (owner, control, view) comes from the
 * route's shares at each request, so a share revoked or expired stops working at the next one.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import {
  checkAccess, createVerifier, desktopOrigin, DESKTOP_ACCESS_COOKIE_NAME, originAllowed, UI_ORIGIN_SCOPE,
  type AccessScope, type DesktopOrigins, type Verifier,
} from '@deskhub/access-token';
import type { KeyObject } from 'node:crypto';
import type { Route } from '@deskhub/route-stream';
import type { AccessDecision, AccessHook } from './router.ts';

/** Where a page load without a valid access token is sent: the control plane renews the token, or signs in first. */
export const RENEW_PATH = '/auth/desktop-access';
/** On desktop origins: the control plane hands a fresh token over to the desktop's origin (a one-time code). */
export const HANDOFF_PATH = '/auth/desktop-handoff';

export interface AccessControlOptions {
  /** The control plane's public key(s); the proxy never holds the private key. */
  publicKeys: KeyObject[];
  /** The UI's origin: WebSocket upgrades on it must come from it (cross-site WebSocket hijacking). */
  publicUrl: string;
  /** DESKTOP_ORIGIN, when desktops have origins of their own. */
  desktopOrigins?: DesktopOrigins;
  /** A verifier made elsewhere (tests); default: one over publicKeys. */
  verifier?: Verifier;
}

export interface AccessControl {
  authorize: AccessHook;
  verifier: Verifier;
  /** Rejects every token of the session from now on and closes its open desktop WebSockets. */
  revokeSession(sessionId: string, until?: number): number;
  /** Open WebSockets the hook let through, per session (for metrics and tests). */
  openSockets(sessionId?: string): number;
}

const DESKTOP_SCOPE: AccessScope = Object.freeze({ cookieName: DESKTOP_ACCESS_COOKIE_NAME, desktopScoped: true });

export function createAccessControl(options: AccessControlOptions): AccessControl {
  const verifier = options.verifier ?? createVerifier({ publicKeys: options.publicKeys });
  const { publicUrl, desktopOrigins } = options;
  const uiOrigin = new URL(publicUrl).origin;
  const socketsBySession = new Map<string, Set<Socket>>();

  const track = (sessionId: string, socket: Socket): void => {
    let set = socketsBySession.get(sessionId);
    if (set === undefined) {
      set = new Set();
      socketsBySession.set(sessionId, set);
    }
    set.add(socket);
    socket.once('close', () => {
      const current = socketsBySession.get(sessionId);
      if (current === undefined) return;
      current.delete(socket);
      if (current.size === 0) socketsBySession.delete(sessionId);
    });
  };

  /** Where a page load without a valid token goes to get one. */
  const renewal = (req: IncomingMessage, route: Route, onDesktopOrigin: boolean): string => {
    const next = encodeURIComponent(req.url ?? '/');
    // A desktop's origin gets its cookie by a hand-off from the UI's origin, where the session is.
    if (onDesktopOrigin) return `${uiOrigin}${HANDOFF_PATH}?desktop=${encodeURIComponent(route.path)}&next=${next}`;
    return `${RENEW_PATH}?next=${next}`;
  };

  const authorize: AccessHook = (req: IncomingMessage, route: Route, kind, onDesktopOrigin): AccessDecision => {
    if (kind === 'upgrade') {
      // On a desktop's origin only that desktop's own pages may open its WebSockets: never a
      // pattern, so one desktop's page cannot open another's.
      const allowed = onDesktopOrigin && desktopOrigins !== undefined
        ? req.headers.origin === desktopOrigin(desktopOrigins, route.path)
        : originAllowed(req.headers.origin, publicUrl);
      if (!allowed) return { allow: false, status: 403, message: 'WebSocket connections to a desktop must come from its own page (Origin does not match).' };
    }
    const result = checkAccess(verifier, req.headers.cookie, route, Date.now(), onDesktopOrigin ? DESKTOP_SCOPE : UI_ORIGIN_SCOPE);
    if (result.ok) {
      if (kind === 'upgrade' && !req.socket.destroyed) track(result.claims.sessionId, req.socket);
      const share = result.share;
      if (share === undefined) return { allow: true, userId: result.claims.userId, username: result.claims.username, role: result.role ?? 'owner' };
      return { allow: true, userId: result.claims.userId, username: result.claims.username, role: result.role ?? 'owner', grant: share.id, expiresAt: share.expiresAt };
    }
    if (result.status === 403) {
      return { allow: false, status: 403, message: onDesktopOrigin ? 'You may not reach this desktop: it is not shared with you, or its share was revoked or has expired.' : 'This desktop belongs to another user.' };
    }
    return {
      allow: false,
      status: 401,
      message: result.reason === 'missing' ? 'Sign in to reach this desktop.' : 'Your desktop access has expired or is not valid; sign in again.',
      // Page loads come back here once the control plane has renewed the token (or signed the user in).
      redirectTo: renewal(req, route, onDesktopOrigin),
    };
  };

  return {
    authorize,
    verifier,
    revokeSession(sessionId, until) {
      verifier.revokeSession(sessionId, until);
      const sockets = socketsBySession.get(sessionId);
      if (sockets === undefined) return 0;
      socketsBySession.delete(sessionId);
      for (const socket of sockets) socket.destroy();
      return sockets.size;
    },
    openSockets(sessionId) {
      if (sessionId !== undefined) return socketsBySession.get(sessionId)?.size ?? 0;
      let n = 0;
      for (const set of socketsBySession.values()) n += set.size;
      return n;
    },
  };
}
