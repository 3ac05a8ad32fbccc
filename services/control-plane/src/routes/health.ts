/** /healthz (the process is alive) and /readyz (database answers, first reconciliation done). */
import { sql } from 'drizzle-orm';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';

const Health = Type.Object({ status: Type.String(), reason: Type.Optional(Type.String()), routeVersion: Type.Optional(Type.Integer()) });

const health: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/healthz', { schema: { tags: ['health'], security: [], response: { 200: Health } } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: { tags: ['health'], security: [], response: { 200: Health, 503: Health } } }, async (_request, reply) => {
    try {
      await app.db.execute(sql`select 1`);
    } catch {
      return reply.code(503).send({ status: 'not ready', reason: 'the database does not answer' });
    }
    if (app.reconciler.passes === 0) return reply.code(503).send({ status: 'not ready', reason: 'first reconciliation not finished' });
    return { status: 'ready', routeVersion: app.publication.publishedVersion };
  });
};

export default health;
