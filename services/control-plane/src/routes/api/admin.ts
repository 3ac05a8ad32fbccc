/**
 * /api/admin: every user's desktops, for users with the `admin` role (ADMIN_USERS); 403 for
 * everyone else. Stop, start and delete act on anyone's desktop; clocks exempts one from the idle
 * clocks.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { sharingOf } from './shares.ts';
import { ApiError } from '../../errors.ts';
import { DesktopIdParams, errors } from '../schemas.ts';
import { VolumeIdParams } from './volumes.ts';

const ADMIN = { admin: true } as const;
/** API tokens need the admin scope here, and their user the admin role (checked per request). */
const SCOPE = { scope: 'admin' } as const;

const admin: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('preHandler', async (request) => {
    if (!request.user?.roles.includes('admin')) {
      throw new ApiError(403, request.apiToken ? 'admins only: the user of this API token does not have the admin role (any more)' : 'admins only');
    }
  });

  app.get(
    '/api/admin/desktops',
    { config: SCOPE, schema: { tags: ['admin'], summary: 'Every desktop of every user', response: { 200: Type.Array(Type.Ref('Desktop')), ...errors(401, 403) } } },
    async () => app.desktops.listAll(),
  );

  app.post(
    '/api/admin/desktops/:id/stop',
    { config: SCOPE, schema: { tags: ['admin'], summary: "Stop anyone's desktop", params: DesktopIdParams, response: { 200: Type.Ref('Desktop'), ...errors(401, 403, 404) } } },
    async (request) => app.desktops.stop(ADMIN, request.params.id),
  );

  app.post(
    '/api/admin/desktops/:id/start',
    { config: SCOPE, schema: { tags: ['admin'], summary: "Start anyone's desktop", params: DesktopIdParams, response: { 200: Type.Ref('Desktop'), ...errors(401, 403, 404, 409) } } },
    async (request) => app.desktops.start(ADMIN, request.params.id),
  );

  app.put(
    '/api/admin/desktops/:id/clocks',
    {
      config: SCOPE,
      schema: {
        tags: ['admin'],
        summary: "Exempt anyone's desktop from the idle clocks and its lifetime, or put it back under them",
        params: DesktopIdParams,
        body: Type.Object({ exempt: Type.Boolean() }, { additionalProperties: false }),
        response: { 200: Type.Ref('Desktop'), ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => app.desktops.exemptFromClocks(ADMIN, request.params.id, request.body.exempt),
  );

  app.get(
    '/api/admin/desktops/:id/shares',
    { config: SCOPE, schema: { tags: ['admin'], summary: "Anyone's desktop's shares and links, and who has it open now", params: DesktopIdParams, response: { 200: Type.Ref('Sharing'), ...errors(401, 403, 404) } } },
    async (request) => sharingOf(app, ADMIN, request.params.id),
  );

  app.delete(
    '/api/admin/desktops/:id/shares/:shareId',
    {
      config: SCOPE,
      schema: {
        tags: ['admin'],
        summary: "Revoke a share or link of anyone's desktop (answers once every proxy replica has closed its WebSockets)",
        params: Type.Object({ id: Type.String({ maxLength: 64 }), shareId: Type.String({ maxLength: 64 }) }),
        response: { 204: Type.Null(), ...errors(401, 403, 404) },
      },
    },
    async (request, reply) => {
      await app.desktops.revokeShare(ADMIN, request.params.id, request.params.shareId, `${request.user!.username} (admin)`);
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/api/admin/volumes',
    { config: SCOPE, schema: { tags: ['admin'], summary: "Every user's homes", response: { 200: Type.Array(Type.Ref('Volume')), ...errors(401, 403) } } },
    async () => app.desktops.listHomes(ADMIN),
  );

  app.get(
    '/api/admin/nodes',
    {
      config: SCOPE,
      schema: { tags: ['admin'], summary: 'The nodes homes can live on and be moved to (Swarm without shared home storage; empty elsewhere)', response: { 200: Type.Array(Type.Ref('Node')), ...errors(401, 403, 409) } },
    },
    async () => app.desktops.listNodes(),
  );

  app.post(
    '/api/admin/volumes/:id/move',
    {
      config: SCOPE,
      schema: {
        tags: ['admin'],
        summary: 'Move a home to another swarm node (copied, checked by a checksum of its tree, then the original removed); 409 while a desktop runs with it',
        params: VolumeIdParams,
        body: Type.Object({ node: Type.String({ minLength: 1, maxLength: 128, description: "the target node: its id, a 12-character id prefix, or its deskhub.name label" }) }, { additionalProperties: false }),
        response: { 200: Type.Ref('Volume'), ...errors(400, 401, 403, 404, 409) },
      },
    },
    async (request) => app.desktops.moveHome(request.params.id, request.body.node, request.user!.username),
  );

  app.delete(
    '/api/admin/volumes/:id',
    { config: SCOPE, schema: { tags: ['admin'], summary: "Delete anyone's home; 409 while a desktop mounts it", params: VolumeIdParams, response: { 204: Type.Null(), ...errors(401, 403, 404, 409) } } },
    async (request, reply) => {
      await app.desktops.deleteHome(ADMIN, request.params.id);
      return reply.code(204).send(null);
    },
  );

  app.delete(
    '/api/admin/desktops/:id',
    { config: SCOPE, schema: { tags: ['admin'], summary: "Delete anyone's desktop", params: DesktopIdParams, response: { 204: Type.Null(), ...errors(401, 403, 404) } } },
    async (request, reply) => {
      await app.desktops.delete(ADMIN, request.params.id);
      return reply.code(204).send(null);
    },
  );
};

export default admin;
