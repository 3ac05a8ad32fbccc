/** GET /api/catalog: the desktop types, and whether each can run here (and why not). */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { CatalogItemSchema, errors } from '../schemas.ts';

const catalog: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/api/catalog',
    { config: { scope: 'desktops:read' }, schema: { tags: ['catalog'], summary: 'Desktop types', response: { 200: Type.Array(Type.Ref('CatalogItem')), ...errors(401, 403) } } },
    async () =>
      Promise.all(
        app.catalog.entries.map(async (entry) => {
          const availability = await app.runtimes.availability(entry);
          const item: Static<typeof CatalogItemSchema> = { id: entry.id, name: entry.name, runtime: entry.runtime, available: availability.ok };
          if (entry.description) item.description = entry.description;
          if (!availability.ok) item.reason = availability.reason;
          return item;
        }),
      ),
  );
};

export default catalog;
