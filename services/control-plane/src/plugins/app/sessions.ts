/**
 * Who is calling: `request.user` from the signed `deskhub_session` cookie or from an API token
 * (`Authorization: Bearer dhk_...`, api-tokens.ts), and `app.requireUser`, the preHandler of every
 * /api route. It answers 401 without a valid credential, and for a token 403 unless the route
 * declares the scope the token holds (`config: { scope: 'desktops:read' }`); a route that
 * declares none is for signed-in sessions only (managing tokens, say). Sessions keep full access.
 * Signing in also sets the desktop access cookie (plugins/app/access.ts).
 */
import fp from 'fastify-plugin';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { sessionCookieName, SessionStore, type SessionInfo } from '../../sessions.ts';
import { syncAdminRoles, type User } from '../../users.ts';
import { ApiError, unauthorized } from '../../errors.ts';
import { ApiTokenStore, type ApiTokenAuth, type Scope } from '../../api-tokens.ts';

declare module 'fastify' {
  interface FastifyInstance {
    sessions: SessionStore;
    /** `__Host-deskhub_session` under https, `deskhub_session` on plain http. */
    sessionCookie: string;
    apiTokens: ApiTokenStore;
    requireUser: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
    /** The session of the signed `deskhub_session` cookie, or null (no cookie, bad signature, ended or revoked). */
    cookieSession: (request: FastifyRequest) => Promise<SessionInfo | null>;
    /** Starts a session for `user`: stores it and sets the cookie. */
    signIn: (reply: FastifyReply, user: User) => Promise<void>;
  }
  interface FastifyRequest {
    /** Set by requireUser. */
    user: User | null;
    session: SessionInfo | null;
    /** Set by requireUser when the caller used an API token instead of a session. */
    apiToken: ApiTokenAuth | null;
  }
  interface FastifyContextConfig {
    /** The scope an API token needs for this route; without one, the route is for sessions only. */
    scope?: Scope;
  }
}

/** `Bearer <token>`; anything else in Authorization is refused rather than ignored. */
export function bearerToken(authorization: string): string {
  const match = /^Bearer[ ]+(\S+)[ ]*$/i.exec(authorization);
  if (!match) throw unauthorized('the Authorization header must be "Bearer <API token>"');
  return match[1]!;
}

/** Whether the request carries a bearer token (no ambient credential: CSRF does not apply). */
export function hasBearer(authorization: string | undefined): boolean {
  return authorization !== undefined && /^Bearer /i.test(authorization);
}

export default fp(
  async (app) => {
    const store = new SessionStore(app.db, app.config.SESSION_TTL_HOURS * 3600 * 1000);
    const secure = new URL(app.config.PUBLIC_URL).protocol === 'https:';
    const SESSION_COOKIE = sessionCookieName(app.config.PUBLIC_URL);
    const tokens = new ApiTokenStore(app.db);
    const roles = await syncAdminRoles(app.db, app.config.ADMIN_USERS, app.config.ADMIN_CLAIM !== undefined);
    if (roles.granted + roles.revoked > 0) app.log.info(roles, 'admin roles brought in line with ADMIN_USERS');
    app.decorate('sessions', store);
    app.decorate('sessionCookie', SESSION_COOKIE);
    app.decorate('apiTokens', tokens);
    app.decorateRequest('user', null);
    app.decorateRequest('session', null);
    app.decorateRequest('apiToken', null);

    app.decorate('signIn', async (reply: FastifyReply, user: User) => {
      const { id, token, expiresAt } = await store.create(user.id);
      reply.setCookie(SESSION_COOKIE, token, { path: '/', httpOnly: true, sameSite: 'lax', secure, signed: true, expires: expiresAt });
      // Desktops are reachable right after sign-in, without a detour through the renewal route.
      app.access.setCookie(reply, { id, user });
    });

    app.decorate('cookieSession', async (request: FastifyRequest): Promise<SessionInfo | null> => {
      const raw = request.cookies[SESSION_COOKIE];
      const unsigned = raw ? request.unsignCookie(raw) : null;
      return unsigned?.valid && unsigned.value ? store.lookup(unsigned.value) : null;
    });

    app.decorate('requireUser', async (request: FastifyRequest) => {
      const authorization = request.headers.authorization;
      if (authorization !== undefined) {
        // A token, when given, is the only credential looked at: a cookie sent alongside is ignored.
        const auth = await tokens.authenticate(bearerToken(authorization));
        const scope = request.routeOptions.config.scope;
        if (!scope) throw new ApiError(403, `${request.method} ${request.routeOptions.url} needs a signed-in session; API tokens cannot use it`);
        if (!auth.scopes.includes(scope)) throw new ApiError(403, `this API token lacks the ${scope} scope (it has ${auth.scopes.join(', ')})`);
        request.apiToken = auth;
        request.user = auth.user;
        return;
      }
      if (!request.cookies[SESSION_COOKIE]) throw unauthorized('sign in first (no session cookie)');
      const session = await app.cookieSession(request);
      if (!session) throw unauthorized('your session has ended; sign in again');
      request.session = session;
      request.user = session.user;
    });
  },
  { name: 'sessions', dependencies: ['database', 'access'] },
);
