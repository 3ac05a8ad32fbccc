/**
 * Desktop access tokens: the control plane holds the Ed25519 private key and mints a short-lived
 * token bound to a user and a session, set as the `deskhub_access` cookie (Path=/desktop/) at
 * sign-in and renewed by `GET /auth/desktop-access`. Proxies get only the public key. Revoking a
 * session (logout, admin) is announced to every listener (the proxies, through the route stream
 * or in-process) so tokens already handed out stop working at once.
 */
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { createPublicKey } from 'node:crypto';
import fp from 'fastify-plugin';
import type { FastifyReply } from 'fastify';
import { accessCookie, clearAccessCookie, createSigner, desktopAccessCookie, readOrCreatePrivateKeyFile, type Signer } from '@deskhub/access-token';
import { createRevocationChannel } from '@deskhub/route-stream';
import type { User } from '../../users.ts';

/** A session revoked before its access tokens expired: proxies refuse its tokens until `until` (epoch ms). */
export interface SessionRevocation {
  sessionId: string;
  until: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    access: {
      signer: Signer;
      /** What proxies verify with. */
      publicKey: KeyObject;
      /**
       * Mints a token for the session and sets the access cookie for the UI's origin on the reply
       * (nothing with DESKTOP_ORIGIN: desktops are not served on the UI's origin then).
       */
      setCookie(reply: FastifyReply, session: { id: string; user: User }): void;
      /** Mints a token for one desktop (and the share it is reached with) and sets the `__Host-` cookie of its origin. */
      setDesktopCookie(reply: FastifyReply, session: { id: string; user: User }, desktop: string, grant: string | null): void;
      clearCookie(reply: FastifyReply): void;
      /** Tells every listener (proxies) that the session's tokens are void. */
      revoke(sessionId: string): void;
      /** Registers a revocation listener (the embedded proxy; the route stream publisher). */
      onRevoke(listener: (revocation: SessionRevocation) => void): void;
    };
  }
}

export default fp(
  async (app) => {
    const { config } = app;
    const privateKey = config.ACCESS_TOKEN_KEY ?? readOrCreatePrivateKeyFile(path.join(config.DATA_DIR, 'access.key'));
    const lifetimeMs = config.ACCESS_TOKEN_LIFETIME_S * 1000;
    const signer = createSigner({ privateKey, lifetimeMs });
    const listeners: Array<(revocation: SessionRevocation) => void> = [];
    app.decorate('access', {
      signer,
      publicKey: createPublicKey(privateKey),
      setCookie(reply: FastifyReply, session: { id: string; user: User }) {
        if (config.DESKTOP_ORIGIN) return;
        const issued = signer.sign({ userId: session.user.id, username: session.user.username, sessionId: session.id, roles: session.user.roles });
        reply.header('set-cookie', accessCookie(issued, config.PUBLIC_URL));
      },
      setDesktopCookie(reply: FastifyReply, session: { id: string; user: User }, desktop: string, grant: string | null) {
        const subject = { userId: session.user.id, username: session.user.username, sessionId: session.id, desktop, ...(grant === null ? {} : { grant }) };
        reply.header('set-cookie', desktopAccessCookie(signer.sign(subject)));
      },
      clearCookie(reply: FastifyReply) {
        reply.header('set-cookie', clearAccessCookie(config.PUBLIC_URL));
      },
      revoke(sessionId: string) {
        // No token of the session outlives this: tokens live at most lifetimeMs, plus clock skew.
        const revocation = { sessionId, until: Date.now() + lifetimeMs + 60_000 };
        for (const listener of listeners) {
          try {
            listener(revocation);
          } catch (err) {
            app.log.error({ err }, 'a revocation listener failed');
          }
        }
      },
      onRevoke(listener: (revocation: SessionRevocation) => void) {
        listeners.push(listener);
      },
    });
    if (config.REDIS_URL) {
      // Separate proxies hear of revocations through Redis (beside the route stream).
      const channel = createRevocationChannel({ redisUrl: config.REDIS_URL, keyPrefix: config.ROUTE_STREAM_PREFIX, logger: app.logger });
      const inFlight = new Set<Promise<void>>();
      listeners.push((revocation) => {
        const sent = channel.publish(revocation).catch((err: unknown) => app.log.error({ err, sessionId: revocation.sessionId }, 'publishing a session revocation failed'));
        inFlight.add(sent);
        void sent.finally(() => inFlight.delete(sent));
      });
      app.addHook('onClose', async () => {
        await Promise.all(inFlight);
        await channel.close();
      });
    }
  },
  { name: 'access', dependencies: ['config'] },
);
