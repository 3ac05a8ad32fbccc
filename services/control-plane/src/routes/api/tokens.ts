/**
 * /api/tokens: the caller's API tokens for automation (api-tokens.ts). Creating answers the token
 * text, the only time it is shown; listing never includes it. These routes declare no scope, so
 * they need a signed-in session: a token cannot mint, list or revoke tokens.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { API_TOKEN_PREFIX, MAX_TOKENS_PER_USER, SCOPES, SCOPE_NAMES } from '../../api-tokens.ts';
import { Nullable, errors } from '../schemas.ts';

const ApiTokenFields = {
  id: Type.String({ format: 'uuid' }),
  name: Type.String(),
  scopes: Type.Array(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
  expiresAt: Nullable(Type.String({ format: 'date-time' })),
  lastUsedAt: Nullable(Type.String({ format: 'date-time', description: 'updated at most once a minute' })),
};
const ApiTokenSchema = Type.Object(ApiTokenFields, { description: 'An API token without its secret' });
const NewApiTokenSchema = Type.Object(
  { ...ApiTokenFields, token: Type.String({ description: `the token (${API_TOKEN_PREFIX}...): shown this once, send it as Authorization: Bearer <token>` }) },
  { description: 'The created token, with its secret' },
);
const scopeList = SCOPE_NAMES.map((s) => `${s}: ${SCOPES[s]}`).join('; ');

const tokens: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/api/tokens',
    {
      schema: {
        tags: ['tokens'],
        summary: 'Create an API token (signed-in session only); the answer carries the token, shown only this once',
        description: `Scopes: ${scopeList}. At most ${MAX_TOKENS_PER_USER} tokens per user.`,
        body: Type.Object({
          name: Type.String({ minLength: 1, maxLength: 100, description: 'what it is for' }),
          scopes: Type.Array(Type.String({ maxLength: 64 }), { minItems: 1, maxItems: 16, description: SCOPE_NAMES.join(', ') }),
          expiresInDays: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650, description: 'omitted: never expires' })),
        }, { additionalProperties: false }),
        response: { 201: NewApiTokenSchema, ...errors(400, 401, 403, 409) },
      },
    },
    async (request, reply) => {
      const created = await app.apiTokens.create(request.user!, request.body);
      request.log.info({ tokenId: created.id, userId: request.user!.id, scopes: created.scopes }, 'API token created');
      reply.header('cache-control', 'no-store');
      return reply.code(201).send(created);
    },
  );

  app.get(
    '/api/tokens',
    { schema: { tags: ['tokens'], summary: "The caller's API tokens that are not revoked, newest first, without their secrets", response: { 200: Type.Array(ApiTokenSchema), ...errors(401, 403) } } },
    async (request) => app.apiTokens.list(request.user!.id),
  );

  app.delete(
    '/api/tokens/:id',
    {
      schema: {
        tags: ['tokens'],
        summary: 'Revoke an API token: it stops working at once',
        params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
        response: { 204: Type.Null(), ...errors(401, 403, 404) },
      },
    },
    async (request, reply) => {
      await app.apiTokens.revoke(request.user!.id, request.params.id);
      request.log.info({ tokenId: request.params.id, userId: request.user!.id }, 'API token revoked');
      return reply.code(204).send(null);
    },
  );
};

export default tokens;
