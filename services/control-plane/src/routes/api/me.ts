/** GET /api/me: who the session belongs to. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { errors } from '../schemas.ts';

const me: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/api/me',
    { schema: { tags: ['users'], summary: 'The signed-in user', response: { 200: Type.Ref('User'), ...errors(401) } } },
    async (request) => request.user!,
  );
};

export default me;
