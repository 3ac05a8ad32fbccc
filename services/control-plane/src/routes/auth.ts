/**
 * Sign-in routes. `GET /auth/login/<provider>` and `GET /auth/callback/<provider>` are the OAuth2
 * code flow with the providers from OIDC_PROVIDERS (src/oidc/: state, PKCE, nonce, the id_token
 * checked); the user is found by provider and subject, gets the admin role from ADMIN_USERS or
 * ADMIN_CLAIM, and goes back to the path the sign-in started from. Dev sign-in
 * (`POST /auth/dev-login`) exists only when AUTH_MODE=dev, which config.ts allows only on a
 * loopback PUBLIC_URL; otherwise the route does not exist (404). Providers may be configured in
 * dev mode too (both then show on the sign-in page).
 * `GET /auth/desktop-access` renews the desktop access cookie and goes back to the desktop (the
 * proxy sends page loads without a valid one there); `POST /auth/desktop-access` renews it for
 * the open web UI; logout revokes the session and its access tokens everywhere.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { applyAdminRole, signInUser } from '../users.ts';
import { makePathSafe } from '../proxy-path.ts';
import { errors } from './schemas.ts';
import { badRequest, unauthorized } from '../errors.ts';
import { claimGrantsAdmin } from '../oidc/config.ts';
import { SignInError, SignInProvider } from '../oidc/provider.ts';
import { safeNextPath, sendSignInFailure } from '../oidc/respond.ts';

const auth: FastifyPluginAsyncTypebox = async (app) => {
  const providers = new Map(app.config.OIDC_PROVIDERS.map((c) => [c.id, new SignInProvider(c, app.config.PUBLIC_URL, app.config.ADMIN_CLAIM)]));
  app.addHook('onClose', async () => {
    await Promise.all([...providers.values()].map((p) => p.close()));
  });

  const unknownProvider = (id: string) =>
    `There is no sign-in provider ${/^[a-z0-9-]{1,64}$/.test(id) ? `"${id}"` : 'by that name'} here (configured: ${[...providers.keys()].join(', ') || 'none'}).`;

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
    async () => ({
      providers: [...providers.values()].map((p) => ({ id: p.config.id, name: p.config.name, loginUrl: p.loginUrl })),
      devLogin: app.config.AUTH_MODE === 'dev',
    }),
  );

  app.get(
    '/auth/login/:provider',
    {
      schema: {
        tags: ['auth'],
        security: [],
        summary: 'Starts sign-in with a provider: sets the state, PKCE and nonce cookies and redirects to the provider; `next` is where to go afterwards (a path on this site)',
        params: Type.Object({ provider: Type.String({ maxLength: 64 }) }),
        querystring: Type.Object({ next: Type.Optional(Type.String({ maxLength: 2000 })) }),
        response: { 302: Type.Null(), ...errors(400, 404, 502) },
      },
    },
    async (request, reply) => {
      const provider = providers.get(request.params.provider);
      if (!provider) return sendSignInFailure(request, reply, 404, unknownProvider(request.params.provider));
      const next = safeNextPath(request.query.next ?? '/');
      if (next === null) return sendSignInFailure(request, reply, 400, 'After signing in deskhub only goes back to a page of this site (next must be a path such as /desktop/alice-demo/).');
      try {
        const url = await provider.start(request, reply, next);
        reply.header('cache-control', 'no-store');
        return reply.redirect(url, 302);
      } catch (err) {
        if (!(err instanceof SignInError)) throw err;
        request.log.warn({ provider: provider.config.id, statusCode: err.statusCode, reason: err.message }, 'sign-in could not start');
        return sendSignInFailure(request, reply, err.statusCode, err.message, next);
      }
    },
  );

  app.get(
    '/auth/callback/:provider',
    {
      // The query holds the authorization code: no request log line carries it (ours below does not).
      logLevel: 'warn',
      schema: {
        tags: ['auth'],
        security: [],
        summary: "The provider's redirect back: checks state, exchanges the code (PKCE), checks the id_token, signs in (session and access cookies) and goes to `next`",
        params: Type.Object({ provider: Type.String({ maxLength: 64 }) }),
        querystring: Type.Object({
          code: Type.Optional(Type.String({ maxLength: 4096 })),
          state: Type.Optional(Type.String({ maxLength: 1024 })),
          iss: Type.Optional(Type.String({ maxLength: 2048 })),
          error: Type.Optional(Type.String({ maxLength: 256 })),
          error_description: Type.Optional(Type.String({ maxLength: 4096 })),
        }),
        response: { 302: Type.Null(), ...errors(400, 401, 403, 404, 502) },
      },
    },
    async (request, reply) => {
      const log = app.log.child({ reqId: request.id, provider: request.params.provider });
      const provider = providers.get(request.params.provider);
      if (!provider) return sendSignInFailure(request, reply, 404, unknownProvider(request.params.provider));
      try {
        const { identity, next } = await provider.finish(request, reply, request.query);
        const preferredName = identity.names.find((n) => makePathSafe(n) !== null);
        if (preferredName === undefined) {
          throw new SignInError(400, `${provider.config.name} gave no name deskhub can use (preferred_username, login or email, in letters and digits).`);
        }
        const found = await signInUser(app.db, { provider: provider.config.id, subject: identity.subject, preferredName, displayName: identity.displayName });
        const user = await applyAdminRole(app.db, found, app.config.ADMIN_USERS, claimGrantsAdmin(identity.claims, app.config.ADMIN_CLAIM));
        await app.signIn(reply, user);
        log.info({ userId: user.id, username: user.username, admin: user.roles.includes('admin') }, 'sign-in');
        reply.header('cache-control', 'no-store');
        return reply.redirect(next, 302);
      } catch (err) {
        if (!(err instanceof SignInError)) throw err;
        const description = request.query.error_description?.slice(0, 300);
        log[err.statusCode >= 500 ? 'warn' : 'info']({ statusCode: err.statusCode, reason: err.message, providerError: request.query.error, description }, 'sign-in refused');
        return sendSignInFailure(request, reply, err.statusCode, err.message, provider.nextOf(request));
      }
    },
  );

  if (app.config.AUTH_MODE === 'dev') {
    app.post(
      '/auth/dev-login',
      {
        schema: {
          tags: ['auth'],
          security: [],
          summary: 'Development sign-in as any username (AUTH_MODE=dev, loopback only); sets the session cookie',
          body: Type.Object({ username: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false }),
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
      // Only a desktop path on this origin, as the browser will read it: anything else would be
      // an open redirect, or (/desktop/../api/me) a way out of /desktop/.
      const next = safeNextPath(request.query.next ?? '/', '/desktop/');
      if (next === null) throw badRequest('next must be a path under /desktop/ (no dot segments leading out of it, no backslashes or encoded slashes)');
      const session = await app.cookieSession(request);
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
    '/auth/desktop-access',
    {
      schema: {
        tags: ['auth'],
        security: [],
        summary: 'Renews the desktop access cookie from the session cookie (the web UI calls it while open, before the cookie expires); 401 without a valid session',
        response: { 204: Type.Null(), ...errors(401) },
      },
    },
    async (request, reply) => {
      const session = await app.cookieSession(request);
      if (!session) throw unauthorized('sign in first: there is no valid session to renew desktop access from');
      app.access.setCookie(reply, session);
      reply.header('cache-control', 'no-store');
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/auth/logout',
    { schema: { tags: ['auth'], security: [], summary: 'Ends the session everywhere and clears the cookie', response: { 204: Type.Null() } } },
    async (request, reply) => {
      const session = await app.cookieSession(request);
      if (session) {
        await app.sessions.revoke(session.id);
        // Access tokens already handed out stop working at every proxy, and its desktop WebSockets close.
        app.access.revoke(session.id);
      }
      reply.clearCookie(app.sessionCookie, { path: '/', secure: app.sessionCookie.startsWith('__Host-') });
      app.access.clearCookie(reply);
      return reply.code(204).send(null);
    },
  );
};

export default auth;
