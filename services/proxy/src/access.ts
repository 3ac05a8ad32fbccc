/**
 * The proxy's access control: the AccessHook that lets only a desktop's owner (or users it is
 * shared with) through, from the `deskhub_access` cookie alone (no database or Redis per
 * request), and the registry of open WebSockets per session, so that revoking a session (logout)
 * also cuts the desktop connections it opened.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { checkAccess, createVerifier, originAllowed, type Verifier } from '@deskhub/access-token';
import type { KeyObject } from 'node:crypto';
import type { Route } from '@deskhub/route-stream';
import type { AccessDecision, AccessHook } from './router.ts';

/** Where a page load without a valid access token is sent: the control plane renews the token, or signs in first. */
export const RENEW_PATH = '/auth/desktop-access';

export interface AccessControlOptions {
  /** The control plane's public key(s); the proxy never holds the private key. */
  publicKeys: KeyObject[];
  /** WebSocket upgrades must come from this origin (cross-site WebSocket hijacking). */
  publicUrl: string;
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

export function createAccessControl(options: AccessControlOptions): AccessControl {
  const verifier = options.verifier ?? createVerifier({ publicKeys: options.publicKeys });
  const publicUrl = options.publicUrl;
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

  const authorize: AccessHook = (req: IncomingMessage, route: Route, kind): AccessDecision => {
    if (kind === 'upgrade' && !originAllowed(req.headers.origin, publicUrl)) {
      return { allow: false, status: 403, message: 'WebSocket connections to a desktop must come from deskhub itself (Origin does not match).' };
    }
    const result = checkAccess(verifier, req.headers.cookie, route);
    if (result.ok) {
      if (kind === 'upgrade' && !req.socket.destroyed) track(result.claims.sessionId, req.socket);
      return { allow: true, userId: result.claims.userId };
    }
    if (result.status === 403) return { allow: false, status: 403, message: 'This desktop belongs to another user.' };
    return {
      allow: false,
      status: 401,
      message: result.reason === 'missing' ? 'Sign in to reach this desktop.' : 'Your desktop access has expired or is not valid; sign in again.',
      // Page loads come back here once the control plane has renewed the token (or signed the user in).
      redirectTo: `${RENEW_PATH}?next=${encodeURIComponent(req.url ?? '/')}`,
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
