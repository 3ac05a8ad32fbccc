/**
 * The database schema (drizzle): users, their sessions and API tokens, desktops and their event log, and the
 * route version counter with its outbox of route changes. The SQL in /migrations is generated
 * from this file by drizzle-kit (`pnpm db:generate`); the same SQL runs on Postgres and PGlite.
 */
import { sql } from 'drizzle-orm';
import { bigint, boolean, check, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import type { Route, Upstream } from '@deskhub/route-stream';
import type { RuntimeName } from '../runtime/index.ts';

const timestamps = {
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
};

/** A person, keyed by sign-in provider and the provider's subject; `username` is path-safe and unique. */
export const users = pgTable(
  'users',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    provider: text('provider').notNull(),
    subject: text('subject').notNull(),
    username: text('username').notNull(),
    displayName: text('display_name'),
    roles: text('roles').array().notNull().default(sql`'{}'::text[]`),
    ...timestamps,
    lastLoginAt: timestamp('last_login_at', { withTimezone: true, mode: 'date' }),
  },
  (t) => [uniqueIndex('users_provider_subject_key').on(t.provider, t.subject), uniqueIndex('users_username_key').on(t.username)],
);

/** Server-side sessions; the cookie carries a random token, the database only its SHA-256. */
export const sessions = pgTable(
  'sessions',
  {
    id: text('id').primaryKey(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
    revokedAt: timestamp('revoked_at', { withTimezone: true, mode: 'date' }),
    lastSeenAt: timestamp('last_seen_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [index('sessions_user_id_idx').on(t.userId)],
);

/**
 * API tokens for automation (`Authorization: Bearer dhk_...`): the token text is shown once at
 * creation, the database keeps only its SHA-256 (`hash`), the scopes it grants, and when it was
 * revoked, expires and was last used (refreshed at most once a minute, like sessions' last_seen_at).
 */
export const apiTokens = pgTable(
  'api_tokens',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    hash: text('hash').notNull(),
    scopes: text('scopes').array().notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }),
    lastUsedAt: timestamp('last_used_at', { withTimezone: true, mode: 'date' }),
    revokedAt: timestamp('revoked_at', { withTimezone: true, mode: 'date' }),
  },
  (t) => [uniqueIndex('api_tokens_hash_key').on(t.hash), index('api_tokens_user_id_idx').on(t.userId)],
);

/**
 * A home: storage kept across its desktops' lives (catalog `home`), a Docker volume or a
 * directory under DATA_DIR named by `id`. One per owner, runtime, home name and (scope desktop)
 * desktop name; never deleted automatically.
 */
export const homes = pgTable(
  'homes',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => users.id, { onDelete: 'restrict' }),
    name: text('name').notNull(),
    scope: text('scope').$type<'user' | 'desktop'>().notNull(),
    /** The desktop name it belongs to (scope desktop), '' for scope user. */
    desktopName: text('desktop_name').notNull().default(''),
    runtime: text('runtime').$type<RuntimeName>().notNull(),
    /**
     * Where the runtime said its storage lives, recorded when a desktop first ran with it (the
     * Swarm runtime: the node's id). A home with a location is placed there, never elsewhere.
     */
    location: text('location'),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    lastUsedAt: timestamp('last_used_at', { withTimezone: true, mode: 'date' }),
  },
  (t) => [uniqueIndex('homes_identity_key').on(t.ownerId, t.runtime, t.name, t.desktopName), check('homes_scope_check', sql`${t.scope} in ('user', 'desktop')`)],
);

/** Kinds of failure the owner is offered a way out of (desktops.failure). */
export type DesktopFailure = 'home-unreachable';

export const desktopStates = ['creating', 'starting', 'running', 'stopping', 'stopped', 'failed'] as const;
export type DesktopState = (typeof desktopStates)[number];
/** The states in which a desktop has (or is getting, or is giving up) a runtime instance that runs. */
export const activeStates = ['creating', 'starting', 'running', 'stopping'] as const satisfies readonly DesktopState[];

/** The route as published, without its Authorization headers (they are derived from `credentials`, lifecycle/route-secrets.ts). */
export type StoredRoute = Omit<Route, 'authorization' | 'viewerAuthorization'>;

/** What `credentials` decrypts to: secret env for the runtime, the header for the route. */
export interface DesktopCredentials {
  env: Record<string, string>;
  authorization: string | null;
  /** The read-only user's header (catalog `sharing.viewer`), for view shares; absent before sharing existed. */
  viewerAuthorization?: string | null;
}

export const desktops = pgTable(
  'desktops',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** Null only for a member of the warm pool, until a create claims it. */
    ownerId: uuid('owner_id').references(() => users.id, { onDelete: 'restrict' }),
    type: text('type').notNull(),
    label: text('label'),
    proxyPath: text('proxy_path').notNull(),
    state: text('state').$type<DesktopState>().notNull(),
    reason: text('reason'),
    /**
     * What kind of failure `reason` describes, where the owner has a choice to offer:
     * `home-unreachable` (its home's node is lost; HOME_NODE_LOST). Cleared by every state change.
     */
    failure: text('failure').$type<DesktopFailure>(),
    runtime: text('runtime').$type<RuntimeName>().notNull(),
    runtimeId: text('runtime_id'),
    upstream: jsonb('upstream').$type<Upstream>(),
    /** AES-256-GCM sealed DesktopCredentials (secrets.ts); never returned by the API. */
    credentials: text('credentials'),
    entryQuery: text('entry_query').notNull().default(''),
    /** Its home (catalog `home`), if its type has one; a home outlives its desktops. */
    homeId: uuid('home_id').references(() => homes.id, { onDelete: 'restrict' }),
    /** The route currently published for this desktop, or null when it has none. */
    route: jsonb('route').$type<StoredRoute>(),
    ...timestamps,
    readyAt: timestamp('ready_at', { withTimezone: true, mode: 'date' }),
    lastActivityAt: timestamp('last_activity_at', { withTimezone: true, mode: 'date' }),
    // The idle clocks (lifecycle/clocks.ts) read these; every deadline is derived from them.
    /** When it last became running from stopped or new (a re-check after a restart keeps it): the lifetime's start. */
    runningSince: timestamp('running_since', { withTimezone: true, mode: 'date' }),
    /** The last time any proxy saw it connected (an open WebSocket or a request). */
    lastConnectedAt: timestamp('last_connected_at', { withTimezone: true, mode: 'date' }),
    /** Start of the current connection: the first presence after a gap. */
    connectedSince: timestamp('connected_since', { withTimezone: true, mode: 'date' }),
    /** The last keep-alive or re-arm (POST /api/desktops/:id/keepalive). */
    keptAliveAt: timestamp('kept_alive_at', { withTimezone: true, mode: 'date' }),
    /** Set while its streams are held disconnected after an idle period; cleared by a re-arm or a start. */
    disconnectedAt: timestamp('disconnected_at', { withTimezone: true, mode: 'date' }),
    disconnectReason: text('disconnect_reason'),
    /** An admin took it out of every clock. */
    clocksExempt: boolean('clocks_exempt').notNull().default(false),
    /** The deadlines already warned about (clock → epoch ms), so a warning is recorded once per window. */
    /** A warm pool member (catalog `pool`): started, unowned, without a route, until a create claims it. */
    pool: boolean('pool').notNull().default(false),
    /** The type's settings a pool member was made from (a hash): a change recycles it. */
    poolSettings: text('pool_settings'),
    clockWarnings: jsonb('clock_warnings').$type<Partial<Record<'idle' | 'expire' | 'lifetime', number>>>().notNull().default({}),
  },
  (t) => [
    uniqueIndex('desktops_proxy_path_key').on(t.proxyPath),
    index('desktops_owner_id_idx').on(t.ownerId),
    index('desktops_home_id_idx').on(t.homeId),
    check('desktops_state_check', sql`${t.state} in ('creating', 'starting', 'running', 'stopping', 'stopped', 'failed')`),
    check('desktops_owner_check', sql`${t.pool} or ${t.ownerId} is not null`),
  ],
);

/**
 * A desktop shared with someone (README: Sharing a desktop): a named user (`kind` user), or a link
 * any signed-in user may open (`kind` link; the database keeps only the SHA-256 of its secret).
 * A share is revoked by deleting it; an expired one stops working at `expires_at` at every proxy
 * and is removed by the share-expiry policy. One share per desktop and user.
 */
export const desktopShares = pgTable(
  'desktop_shares',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    desktopId: uuid('desktop_id')
      .notNull()
      .references(() => desktops.id, { onDelete: 'cascade' }),
    kind: text('kind').$type<'user' | 'link'>().notNull(),
    userId: uuid('user_id').references(() => users.id, { onDelete: 'cascade' }),
    mode: text('mode').$type<'view' | 'control'>().notNull(),
    secretHash: text('secret_hash'),
    createdBy: uuid('created_by')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }),
  },
  (t) => [
    index('desktop_shares_desktop_id_idx').on(t.desktopId),
    uniqueIndex('desktop_shares_user_key').on(t.desktopId, t.userId),
    uniqueIndex('desktop_shares_secret_key').on(t.secretHash),
    check('desktop_shares_kind_check', sql`(${t.kind} = 'user' and ${t.userId} is not null and ${t.secretHash} is null) or (${t.kind} = 'link' and ${t.userId} is null and ${t.secretHash} is not null)`),
    check('desktop_shares_mode_check', sql`${t.mode} in ('view', 'control')`),
  ],
);

/** Who opened a share link: they may reach the desktop through it (and see it under "Shared with me") until it ends. */
export const shareLinkVisitors = pgTable(
  'share_link_visitors',
  {
    shareId: uuid('share_id')
      .notNull()
      .references(() => desktopShares.id, { onDelete: 'cascade' }),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    firstAt: timestamp('first_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.shareId, t.userId] }), index('share_link_visitors_user_id_idx').on(t.userId)],
);

/**
 * One-time codes that carry a fresh access token from the UI's origin to a desktop's own origin
 * (DESKTOP_ORIGIN): minted for a session, exchanged once, within a minute. Only the SHA-256 is kept.
 */
export const desktopHandoffs = pgTable(
  'desktop_handoffs',
  {
    codeHash: text('code_hash').primaryKey(),
    desktopId: uuid('desktop_id')
      .notNull()
      .references(() => desktops.id, { onDelete: 'cascade' }),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    sessionId: text('session_id').notNull(),
    /** The share or link the token is minted under; null for the owner. */
    grantId: uuid('grant_id').references(() => desktopShares.id, { onDelete: 'cascade' }),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
  },
  (t) => [index('desktop_handoffs_expires_at_idx').on(t.expiresAt)],
);

/** Every lifecycle step of a desktop, for the UI's progress and for people debugging. */
export const desktopEvents = pgTable(
  'desktop_events',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    desktopId: uuid('desktop_id')
      .notNull()
      .references(() => desktops.id, { onDelete: 'cascade' }),
    at: timestamp('at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    kind: text('kind').notNull(),
    message: text('message').notNull(),
    progress: integer('progress'),
    /** Set on state changes: the state entered. */
    state: text('state').$type<DesktopState>(),
  },
  (t) => [index('desktop_events_desktop_id_idx').on(t.desktopId, t.id)],
);

/**
 * The route version counter: one row. Bumped with UPDATE ... RETURNING inside the transaction
 * that changes a route, so versions commit in the order they are handed out (a sequence would
 * not: nextval is not transactional, and a later version could be published before an earlier one).
 */
export const routeVersion = pgTable(
  'route_version',
  {
    id: integer('id').primaryKey().default(1),
    version: bigint('version', { mode: 'number' }).notNull().default(0),
  },
  (t) => [check('route_version_single_row', sql`${t.id} = 1`)],
);

/**
 * The outbox of route changes, written in the same transaction as the version bump and
 * published in version order after commit. Rows the route store already holds are pruned.
 */
export const routeChanges = pgTable(
  'route_changes',
  {
    version: bigint('version', { mode: 'number' }).primaryKey(),
    op: text('op').$type<'put' | 'delete'>().notNull(),
    path: text('path').notNull(),
    route: jsonb('route').$type<StoredRoute>(),
    /** Sealed Authorization header of a put (secrets.ts). */
    sealedAuthorization: text('sealed_authorization'),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [check('route_changes_op_check', sql`${t.op} in ('put', 'delete')`)],
);

/** Small facts about this installation, e.g. the fingerprint of the key that sealed its credentials. */
export const settings = pgTable('settings', {
  key: text('key').primaryKey(),
  value: text('value').notNull(),
});
