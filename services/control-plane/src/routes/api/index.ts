/**
 * Everything under /api needs a session or an API token with the route's scope (401 JSON without
 * either, 403 for a token lacking the scope: plugins/app/sessions.ts); the docs at /api/docs stay public.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { CatalogItemSchema, DesktopEventSchema, DesktopSchema, ErrorSchema, NodeSchema, UserSchema, VolumeSchema } from '../schemas.ts';
import admin from './admin.ts';
import catalog from './catalog.ts';
import desktops from './desktops.ts';
import me from './me.ts';
import tokens from './tokens.ts';
import volumes from './volumes.ts';
import shares, { ConnectedSchema, SharedDesktopSchema, ShareSchema, SharingSchema } from './shares.ts';

const api: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('preHandler', app.requireUser);
  // The OpenAPI document says what each route accepts: the session, and a token with which scope.
  app.addHook('onRoute', (route) => {
    if (!route.schema) return;
    const scope = route.config?.scope;
    route.schema.security = scope ? [{ session: [] }, { bearer: [scope] }] : [{ session: [] }];
    const note = scope ? `API tokens need the ${scope} scope.` : 'Signed-in sessions only: API tokens cannot use this route.';
    route.schema.description = route.schema.description ? `${route.schema.description} ${note}` : note;
  });
  await app.register(me);
  await app.register(catalog);
  await app.register(desktops);
  await app.register(admin);
  await app.register(tokens);
  await app.register(volumes);
  await app.register(shares);
};

/** Shared schemas, registered once at the root so every route (and the OpenAPI document) can refer to them. */
export const sharedSchemas = [ErrorSchema, UserSchema, DesktopSchema, DesktopEventSchema, CatalogItemSchema, VolumeSchema, NodeSchema, ShareSchema, ConnectedSchema, SharingSchema, SharedDesktopSchema];

export default api;
