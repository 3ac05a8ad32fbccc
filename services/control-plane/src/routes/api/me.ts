/**
 * GET /api/me: who the caller is. GET /api/me/session: the signed-in session's expiry and the
 * desktop access cookie's lifetime, so the web UI knows how often to renew that cookie
 * (POST /auth/desktop-access); sessions only, since an API token has no session.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { errors } from '../schemas.ts';

const me: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/api/me',
    { config: { scope: 'desktops:read' }, schema: { tags: ['users'], summary: 'The signed-in user', response: { 200: Type.Ref('User'), ...errors(401, 403) } } },
    async (request) => request.user!,
  );

  app.get(
    '/api/me/session',
    {
      schema: {
        tags: ['users'],
        summary: 'The session: when it ends, and how long a desktop access cookie lives (renew it before then)',
        response: {
          200: Type.Object({
            expiresAt: Type.String({ format: 'date-time' }),
            accessLifetimeSeconds: Type.Integer({ description: 'ACCESS_TOKEN_LIFETIME_S: the lifetime of the deskhub_access cookie' }),
          }),
          ...errors(401, 403),
        },
      },
    },
    async (request) => ({ expiresAt: request.session!.expiresAt.toISOString(), accessLifetimeSeconds: app.config.ACCESS_TOKEN_LIFETIME_S }),
  );
};

export default me;
