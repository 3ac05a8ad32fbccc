/** TypeBox schemas shared by the routes; they validate requests, shape responses and feed the OpenAPI document. */
import { Type, type TSchema } from '@sinclair/typebox';
import { desktopStates } from '../db/schema.ts';

export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

export const ErrorSchema = Type.Object(
  { statusCode: Type.Integer(), error: Type.String(), message: Type.String() },
  { $id: 'Error', description: 'Every error: Fastify\'s shape, never a stack trace' },
);
const ErrorRef = Type.Ref('Error');

/** Error responses a route may give, for the OpenAPI document. */
export function errors(...codes: number[]): Record<number, typeof ErrorRef> {
  return Object.fromEntries(codes.map((c) => [c, ErrorRef]));
}

export const UserSchema = Type.Object(
  { id: Type.String({ format: 'uuid' }), username: Type.String(), roles: Type.Array(Type.String()) },
  { $id: 'User' },
);

export const DesktopStateSchema = Type.Union(desktopStates.map((s) => Type.Literal(s)));

export const DesktopSchema = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    type: Type.String({ description: 'catalog id' }),
    name: Nullable(Type.String({ description: 'the label given at create' })),
    owner: Type.String({ description: "owner's username" }),
    proxyPath: Type.String({ description: 'the path segment under /desktop/' }),
    url: Type.String({ description: 'where it is: PUBLIC_URL/desktop/<proxyPath>/ (with DESKTOP_ORIGIN: on its own origin) plus the query the type needs' }),
    openUrl: Type.String({ description: "where a browser opens it: url itself, or with DESKTOP_ORIGIN the hand-off on deskhub's origin that gives the desktop's origin its access cookie first" }),
    state: DesktopStateSchema,
    reason: Nullable(Type.String({ description: 'why it failed or stopped' })),
    runtime: Type.String(),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    readyAt: Nullable(Type.String({ format: 'date-time' })),
    lastActivityAt: Nullable(Type.String({ format: 'date-time', description: 'the last input (activity input) or request (activity traffic) seen by any proxy' })),
    activity: Nullable(Type.Union([Type.Literal('input'), Type.Literal('traffic')], { description: "what lastActivityAt counts, from the type's catalog entry" })),
    lastConnectedAt: Nullable(Type.String({ format: 'date-time', description: 'the last time any proxy saw someone connected: an open WebSocket or a request' })),
    clocks: Type.Object(
      {
        exempt: Type.Boolean({ description: 'an admin took it out of every clock' }),
        disconnected: Nullable(
          Type.Object(
            { at: Type.String({ format: 'date-time' }), reason: Type.String() },
            { description: 'its streams are held disconnected after an idle period; POST .../keepalive reconnects them' },
          ),
        ),
        deadlines: Type.Array(
          Type.Object({
            clock: Type.Union([Type.Literal('idle'), Type.Literal('expire'), Type.Literal('lifetime')], {
              description: 'idle: no input while connected; expire: nobody connected; lifetime: since it started',
            }),
            at: Type.String({ format: 'date-time', description: 'when it acts' }),
            warnAt: Type.String({ format: 'date-time', description: 'when its warning starts' }),
            action: Type.Union([Type.Literal('disconnect'), Type.Literal('stop'), Type.Literal('delete')]),
            periodSeconds: Type.Integer({ description: "the clock's period" }),
          }),
          { description: 'the running desktop\'s deadlines, soonest first' },
        ),
      },
      { description: 'the idle clocks (README: Idle desktops)' },
    ),
    homeId: Nullable(Type.String({ format: 'uuid', description: 'its home (GET /api/volumes), if its type keeps one' })),
    homeLost: Nullable(
      Type.Object(
        { offerNewHome: Type.Boolean({ description: 'HOME_NODE_LOST=offer-new-home: POST /api/desktops/{id}/new-home may start it with a new, empty home' }) },
        { description: "set when it failed because the node that holds its home is down, drained, gone or not answering: start it again once the node is back" },
      ),
    ),
    pool: Type.Boolean({ description: 'a warm pool member nobody has claimed yet (admin API only; owner is "")' }),
  },
  { $id: 'Desktop' },
);

export const VolumeSchema = Type.Object(
  {
    id: Type.String({ format: 'uuid' }),
    owner: Type.String({ description: "owner's username" }),
    name: Type.String({ description: "the catalog's home.name: types naming the same home share it" }),
    scope: Type.Union([Type.Literal('user'), Type.Literal('desktop')]),
    desktopName: Nullable(Type.String({ description: 'scope desktop: the desktop name it belongs to' })),
    runtime: Type.String(),
    createdAt: Type.String({ format: 'date-time' }),
    lastUsedAt: Nullable(Type.String({ format: 'date-time', description: 'when a desktop last took it' })),
    sizeBytes: Nullable(Type.Integer({ description: 'bytes used, when the runtime can tell' })),
    node: Nullable(
      Type.Object(
        { id: Type.String({ description: 'the swarm node id' }), name: Type.String({ description: 'how people tell it apart: its deskhub.name label or hostname, id prefix and address' }) },
        { description: 'swarm: the node that holds it (its desktops run there); null elsewhere, or when no node that answers has it' },
      ),
    ),
    usedBy: Type.Array(Type.Object({ id: Type.String({ format: 'uuid' }), proxyPath: Type.String(), state: DesktopStateSchema }), {
      description: 'desktops that mount it, in any state: it cannot be deleted while there are any',
    }),
  },
  { $id: 'Volume', description: "a home: a user's files kept across desktops (a Docker volume, or a directory for the process runtime)" },
);

export const NodeSchema = Type.Object(
  {
    runtime: Type.String(),
    id: Type.String({ description: 'the swarm node id' }),
    name: Type.String({ description: 'how people tell it apart: its deskhub.name label or hostname, id prefix and address' }),
    state: Type.String({ description: 'ready, down, unknown or disconnected' }),
    availability: Type.String({ description: 'active, pause or drain' }),
    takesHomes: Type.Boolean({ description: 'ready, active and its engine reachable (SWARM_NODE_ENGINES): a home can be moved there now' }),
  },
  { $id: 'Node', description: 'a node homes can live on (Swarm runtime without shared home storage)' },
);

export const DesktopEventSchema = Type.Object(
  {
    id: Type.Integer(),
    at: Type.String({ format: 'date-time' }),
    kind: Type.String({ description: 'create, start, pull, probe, route, state, info, ...' }),
    message: Type.String(),
    progress: Nullable(Type.Integer({ minimum: 0, maximum: 100 })),
    state: Nullable(DesktopStateSchema),
  },
  { $id: 'DesktopEvent' },
);

export const CatalogItemSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    description: Type.Optional(Type.String()),
    runtime: Type.String(),
    available: Type.Boolean(),
    reason: Type.Optional(Type.String({ description: 'why it cannot run here' })),
  },
  { $id: 'CatalogItem' },
);

export const DesktopIdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });

/**
 * An event id sent back by a client (`after=`, `Last-Event-ID`): digits, at most 15 of them, so
 * it is a safe integer and a valid bigint ("1e309" or 20 nines are a 400 naming it, not a 500
 * from Postgres).
 */
export const EventIdText = Type.String({ pattern: '^[0-9]{1,15}$', description: 'an event id (digits)' });
