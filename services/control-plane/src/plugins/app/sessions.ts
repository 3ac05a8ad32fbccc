/**
 * Sessions: `request.user` from the signed `deskhub_session` cookie, and `app.requireUser`, the
 * preHandler that answers 401 without one (used by every /api route). Signing in also sets the
 * desktop access cookie (plugins/app/access.ts).
 */
import fp from 'fastify-plugin';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { SESSION_COOKIE, SessionStore, type SessionInfo } from '../../sessions.ts';
import type { User } from '../../users.ts';
import { unauthorized } from '../../errors.ts';

declare module 'fastify' {
  interface FastifyInstance {
    sessions: SessionStore;
    requireUser: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
    /** Starts a session for `user`: stores it and sets the cookie. */
    signIn: (reply: FastifyReply, user: User) => Promise<void>;
  }
  interface FastifyRequest {
    /** Set by requireUser. */
    user: User | null;
    session: SessionInfo | null;
  }
}

export default fp(
  async (app) => {
    const store = new SessionStore(app.db, app.config.SESSION_TTL_HOURS * 3600 * 1000);
    const secure = new URL(app.config.PUBLIC_URL).protocol === 'https:';
    app.decorate('sessions', store);
    app.decorateRequest('user', null);
    app.decorateRequest('session', null);

    app.decorate('signIn', async (reply: FastifyReply, user: User) => {
      const { id, token, expiresAt } = await store.create(user.id);
      reply.setCookie(SESSION_COOKIE, token, { path: '/', httpOnly: true, sameSite: 'lax', secure, signed: true, expires: expiresAt });
      // Desktops are reachable right after sign-in, without a detour through the renewal route.
      app.access.setCookie(reply, { id, user });
    });

    app.decorate('requireUser', async (request: FastifyRequest) => {
      const raw = request.cookies[SESSION_COOKIE];
      if (!raw) throw unauthorized('sign in first (no session cookie)');
      const unsigned = request.unsignCookie(raw);
      const session = unsigned.valid && unsigned.value ? await store.lookup(unsigned.value) : null;
      if (!session) throw unauthorized('your session has ended; sign in again');
      request.session = session;
      request.user = session.user;
    });
  },
  { name: 'sessions', dependencies: ['database', 'access'] },
);
