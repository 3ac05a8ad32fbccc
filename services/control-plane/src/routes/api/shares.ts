/**
 * Sharing (README: Sharing a desktop). The owner shares a desktop with named users (`view` or
 * `control`) or makes a link any signed-in user may open (view; control only with
 * SHARE_LINK_CONTROL), each with an expiry; revoking answers once every proxy replica holds the
 * route without the share, so its WebSockets are closed and its next request refused. Users see
 * what is shared with them under /api/shared, and open a link with POST /api/shared/links.
 * Sharing needs DESKTOP_ORIGIN: without it these answer 409 saying why.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { parseDuration } from '../../durations.ts';
import { badRequest } from '../../errors.ts';
import { desktopUrls } from '../../lifecycle/views.ts';
import type { FastifyInstance } from 'fastify';
import type { Scope, SharedDesktop } from '../../lifecycle/desktops.ts';
import { DesktopIdParams, errors, Nullable } from '../schemas.ts';

const READ = { scope: 'desktops:read' } as const;
const WRITE = { scope: 'desktops:write' } as const;

const Mode = Type.Union([Type.Literal('view'), Type.Literal('control')], { description: 'view: watch only; control: input too (never the owner-only paths)' });
const ExpiresIn = Type.String({ pattern: '^(?:[0-9]+(?:\\.[0-9]+)?[smhd])+$', maxLength: 32, description: 'a duration from now: 30m, 24h, 7d' });

export const ShareSchema = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    kind: Type.Union([Type.Literal('user'), Type.Literal('link')]),
    username: Nullable(Type.String({ description: 'kind user: who it is shared with' })),
    mode: Mode,
    createdAt: Type.String({ format: 'date-time' }),
    expiresAt: Nullable(Type.String({ format: 'date-time' })),
    visitors: Type.Integer({ description: 'kind link: how many users opened it' }),
  },
  { $id: 'Share' },
);

export const ConnectedSchema = Type.Object(
  {
    username: Type.String(),
    role: Type.Union([Type.Literal('owner'), Type.Literal('control'), Type.Literal('view')]),
    lastSeenAt: Type.String({ format: 'date-time' }),
  },
  { $id: 'Connected' },
);

export const SharingSchema = Type.Object({
  available: Type.Boolean({ description: 'whether this desktop can be shared here' }),
  reason: Nullable(Type.String({ description: 'why not' })),
  viewAllowed: Type.Boolean({ description: 'its type has a read-only user, so it can be shared for viewing' }),
  linkControl: Type.Boolean({ description: 'links may give control (SHARE_LINK_CONTROL)' }),
  linkDefaultSeconds: Type.Integer(),
  linkMaxSeconds: Type.Integer(),
  shares: Type.Array(Type.Ref('Share')),
  connected: Type.Array(Type.Ref('Connected'), { description: 'who has it open now, across every proxy replica' }),
}, { $id: 'Sharing' });

export const SharedDesktopSchema = Type.Object(
  {
    desktopId: Type.String({ format: 'uuid' }),
    proxyPath: Type.String(),
    owner: Type.String(),
    name: Nullable(Type.String()),
    type: Type.String(),
    state: Type.String(),
    mode: Mode,
    via: Type.Union([Type.Literal('user'), Type.Literal('link')]),
    shareId: Type.String({ format: 'uuid' }),
    expiresAt: Nullable(Type.String({ format: 'date-time' })),
    openUrl: Type.String({ description: "where a browser opens it (the hand-off to the desktop's origin)" }),
  },
  { $id: 'SharedDesktop' },
);

/** What GET .../shares answers, for the owner or (the admin API) anyone. */
export async function sharingOf(app: FastifyInstance, scope: Scope, id: string) {
  const view = await app.desktops.shares(scope, id);
  return { ...view, connected: await app.desktops.connected(scope, id) };
}

function ttl(expiresIn: string | undefined): number | null {
  if (expiresIn === undefined) return null;
  try {
    return parseDuration(expiresIn, 'expiresIn');
  } catch (err) {
    throw badRequest((err as Error).message);
  }
}

const shares: FastifyPluginAsyncTypebox = async (app) => {
  const caller = (request: { user: { id: string; username: string } | null }) => request.user!;
  const origins = app.config.DESKTOP_ORIGIN ?? null;
  const withOpenUrl = (d: SharedDesktop) => ({ ...d, openUrl: desktopUrls(app.config.PUBLIC_URL, origins, d.proxyPath, '').openUrl });

  app.get(
    '/api/desktops/:id/shares',
    {
      config: READ,
      schema: { tags: ['sharing'], summary: 'Its shares and links, who has it open now, and whether it can be shared here', params: DesktopIdParams, response: { 200: Type.Ref('Sharing'), ...errors(401, 403, 404) } },
    },
    async (request) => sharingOf(app, caller(request), request.params.id),
  );

  app.post(
    '/api/desktops/:id/shares',
    {
      config: WRITE,
      schema: {
        tags: ['sharing'],
        summary: 'Share it with a user (or change their share); they reach it from their own deskhub',
        params: DesktopIdParams,
        body: Type.Object({ username: Type.String({ minLength: 1, maxLength: 64 }), mode: Mode, expiresIn: Type.Optional(ExpiresIn) }, { additionalProperties: false }),
        response: { 201: Type.Ref('Share'), ...errors(400, 401, 403, 404, 409) },
      },
    },
    async (request, reply) => {
      const ms = ttl(request.body.expiresIn);
      const share = await app.desktops.shareWithUser(caller(request), request.params.id, {
        username: request.body.username.trim().toLowerCase(),
        mode: request.body.mode,
        expiresAt: ms === null ? null : new Date(Date.now() + ms),
      });
      return reply.code(201).send(share);
    },
  );

  app.post(
    '/api/desktops/:id/links',
    {
      config: WRITE,
      schema: {
        tags: ['sharing'],
        summary: 'A share link any signed-in user may open (view; control only with SHARE_LINK_CONTROL); its URL is shown only now',
        params: DesktopIdParams,
        body: Type.Object({ mode: Type.Optional(Mode), expiresIn: Type.Optional(ExpiresIn) }, { additionalProperties: false }),
        response: { 201: Type.Object({ share: Type.Ref('Share'), url: Type.String() }), ...errors(400, 401, 403, 404, 409) },
      },
    },
    async (request, reply) => {
      const made = await app.desktops.createShareLink(caller(request), request.params.id, { mode: request.body.mode ?? 'view', ttlMs: ttl(request.body.expiresIn) });
      return reply.code(201).send(made);
    },
  );

  app.delete(
    '/api/desktops/:id/shares/:shareId',
    {
      config: WRITE,
      schema: {
        tags: ['sharing'],
        summary: 'Revoke a share or link: answers once every proxy replica has closed its WebSockets and refuses it',
        params: Type.Object({ id: Type.String({ maxLength: 64 }), shareId: Type.String({ maxLength: 64 }) }),
        response: { 204: Type.Null(), ...errors(401, 403, 404) },
      },
    },
    async (request, reply) => {
      await app.desktops.revokeShare(caller(request), request.params.id, request.params.shareId, caller(request).username);
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/api/shared',
    { config: READ, schema: { tags: ['sharing'], summary: 'Desktops others share with the caller (named shares, and links the caller opened)', response: { 200: Type.Array(Type.Ref('SharedDesktop')), ...errors(401, 403) } } },
    async (request) => (await app.desktops.sharedWith(caller(request))).map(withOpenUrl),
  );

  app.post(
    '/api/shared/links',
    {
      config: READ,
      schema: {
        tags: ['sharing'],
        summary: 'Opens a share link (its secret, the last part of its URL): the desktop is then shared with the caller until the link ends',
        body: Type.Object({ secret: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false }),
        response: { 200: Type.Ref('SharedDesktop'), ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => withOpenUrl(await app.desktops.openShareLink(caller(request), request.body.secret)),
  );
};

export default shares;
