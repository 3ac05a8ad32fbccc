/**
 * Sign-in routes. Dev sign-in (`POST /auth/dev-login`) exists only when AUTH_MODE=dev, which
 * config.ts allows only on a loopback PUBLIC_URL; otherwise the route does not exist (404).
 * `GET /auth/desktop-access` renews the desktop access cookie (the proxy sends page loads without
 * a valid one there); logout revokes the session and its access tokens everywhere.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { SESSION_COOKIE } from '../sessions.ts';
import { applyAdminRole, signInUser } from '../users.ts';
import { makePathSafe } from '../proxy-path.ts';
import { errors } from './schemas.ts';
import { badRequest } from '../errors.ts';

const auth: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/auth/providers',
    {
      schema: {
        tags: ['auth'],
        security: [],
        summary: 'Sign-in options, for the sign-in page',
        response: {
          200: Type.Object({
            providers: Type.Array(Type.Object({ id: Type.String(), name: Type.String(), loginUrl: Type.String() })),
            devLogin: Type.Boolean(),
          }),
        },
      },
    },
    async () => ({ providers: [], devLogin: app.config.AUTH_MODE === 'dev' }),
  );

  if (app.config.AUTH_MODE === 'dev') {
    app.post(
      '/auth/dev-login',
      {
        schema: {
          tags: ['auth'],
          security: [],
          summary: 'Development sign-in as any username (AUTH_MODE=dev, loopback only); sets the session cookie',
          body: Type.Object({ username: Type.String({ minLength: 1, maxLength: 64 }) }),
          response: { 200: Type.Ref('User'), ...errors(400) },
        },
      },
      async (request, reply) => {
        const name = request.body.username.trim();
        // "Alice" and "alice" are one dev user: the subject is the name made path-safe.
        const found = await signInUser(app.db, { provider: 'dev', subject: makePathSafe(name) ?? name, preferredName: name });
        const user = await applyAdminRole(app.db, found, app.config.ADMIN_USERS);
        await app.signIn(reply, user);
        request.log.info({ userId: user.id, username: user.username }, 'dev sign-in');
        return user;
      },
    );
  }

  app.get(
    '/auth/desktop-access',
    {
      schema: {
        tags: ['auth'],
        security: [],
        summary: 'Renews the desktop access cookie from the session and goes back to the desktop (the proxy sends page loads here); without a session, to sign-in first',
        querystring: Type.Object({ next: Type.Optional(Type.String({ maxLength: 4000 })) }),
        response: { 302: Type.Null(), ...errors(400) },
      },
    },
    async (request, reply) => {
      const next = request.query.next ?? '/';
      // Only a desktop path on this origin: anything else would be an open redirect.
      if (!next.startsWith('/desktop/') || next.includes('\\')) throw badRequest('next must be a path under /desktop/');
      const raw = request.cookies[SESSION_COOKIE];
      const unsigned = raw ? request.unsignCookie(raw) : null;
      const session = unsigned?.valid && unsigned.value ? await app.sessions.lookup(unsigned.value) : null;
      if (!session) {
        // Sign in first; signing in sets the access cookie, and the sign-in page then loads the desktop.
        return reply.redirect(`/signin?next=${encodeURIComponent(next)}`, 302);
      }
      app.access.setCookie(reply, session);
      reply.header('cache-control', 'no-store');
      return reply.redirect(next, 302);
    },
  );

  app.post(
    '/auth/logout',
    { schema: { tags: ['auth'], security: [], summary: 'Ends the session everywhere and clears the cookie', response: { 204: Type.Null() } } },
    async (request, reply) => {
      const raw = request.cookies[SESSION_COOKIE];
      if (raw) {
        const unsigned = request.unsignCookie(raw);
        if (unsigned.valid && unsigned.value) {
          const session = await app.sessions.lookup(unsigned.value);
          if (session) {
            await app.sessions.revoke(session.id);
            // Access tokens already handed out stop working at every proxy, and its desktop WebSockets close.
            app.access.revoke(session.id);
          }
        }
      }
      reply.clearCookie(SESSION_COOKIE, { path: '/' });
      app.access.clearCookie(reply);
      return reply.code(204).send(null);
    },
  );
};

export default auth;
