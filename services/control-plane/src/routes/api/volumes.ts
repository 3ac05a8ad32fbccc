/**
 * /api/volumes: the caller's homes (catalog `home`), the files kept across their desktops' lives
 * (a Docker volume, or a directory for the process runtime). Deleting one is always its own
 * request, refused with 409 while a desktop mounts it. Admins list and delete everyone's under
 * /api/admin/volumes (admin.ts).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { errors } from '../schemas.ts';

const READ = { scope: 'desktops:read' } as const;
const WRITE = { scope: 'desktops:write' } as const;
export const VolumeIdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false });

const volumes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/api/volumes',
    { config: READ, schema: { tags: ['volumes'], summary: "The caller's homes, with sizes and the desktops using them", response: { 200: Type.Array(Type.Ref('Volume')), ...errors(401, 403) } } },
    async (request) => app.desktops.listHomes(request.user!),
  );

  app.delete(
    '/api/volumes/:id',
    {
      config: WRITE,
      schema: {
        tags: ['volumes'],
        summary: 'Delete a home and its files; 409 while a desktop (running or stopped) mounts it',
        params: VolumeIdParams,
        response: { 204: Type.Null(), ...errors(401, 403, 404, 409) },
      },
    },
    async (request, reply) => {
      await app.desktops.deleteHome(request.user!, request.params.id);
      return reply.code(204).send(null);
    },
  );
};

export default volumes;
