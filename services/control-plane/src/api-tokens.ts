/**
 * API tokens for automation: `Authorization: Bearer dhk_<43 base64url characters>`. The token
 * text is returned once, at creation; the database keeps only its SHA-256 (as for sessions), the
 * scopes it grants, an optional expiry, when it was revoked and when it was last used (written at
 * most once a minute, so a busy script does not cause a write per request). The `dhk_` prefix
 * lets secret scanners recognise a leaked token.
 *
 * Scopes name what a token may do; a route says which scope it needs (plugins/app/sessions.ts).
 * `admin` is granted only by an admin and only works while the user still has the admin role.
 */
import { randomBytes } from 'node:crypto';
import { and, desc, eq, isNull } from 'drizzle-orm';
import type { Database } from './db/client.ts';
import { apiTokens, users } from './db/schema.ts';
import { hashToken } from './secrets.ts';
import { ApiError, badRequest, conflict, notFound, unauthorized } from './errors.ts';
import type { User } from './users.ts';

export const API_TOKEN_PREFIX = 'dhk_';

/** Every scope, with what it allows (shown in the OpenAPI document and the web UI). */
export const SCOPES = {
  'desktops:read': 'see your desktops, their events, the catalog and who you are (GET /api/me, /api/catalog, /api/desktops...)',
  'desktops:write': 'create, start, stop and delete your desktops',
  admin: "the admin API (everyone's desktops); only admins can grant it, and it works only while the user is an admin",
} as const;
export type Scope = keyof typeof SCOPES;
export const SCOPE_NAMES = Object.keys(SCOPES) as Scope[];

export function isScope(value: string): value is Scope {
  return Object.hasOwn(SCOPES, value);
}

/** How many tokens a user may hold at once (revoked ones do not count). */
export const MAX_TOKENS_PER_USER = 50;
/** last_used_at is refreshed at most this often. */
const USED_REFRESH_MS = 60 * 1000;
const DAY_MS = 24 * 3600 * 1000;

export interface ApiTokenView {
  id: string;
  name: string;
  scopes: string[];
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
}

/** What a valid bearer token stands for: its user (roles as the database has them now) and scopes. */
export interface ApiTokenAuth {
  tokenId: string;
  user: User;
  scopes: Scope[];
}

type Row = typeof apiTokens.$inferSelect;

function view(row: Pick<Row, 'id' | 'name' | 'scopes' | 'createdAt' | 'expiresAt' | 'lastUsedAt'>): ApiTokenView {
  return {
    id: row.id,
    name: row.name,
    scopes: row.scopes,
    createdAt: row.createdAt.toISOString(),
    expiresAt: row.expiresAt?.toISOString() ?? null,
    lastUsedAt: row.lastUsedAt?.toISOString() ?? null,
  };
}

export function newApiToken(): { token: string; hash: string } {
  const token = API_TOKEN_PREFIX + randomBytes(32).toString('base64url');
  return { token, hash: hashToken(token) };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class ApiTokenStore {
  constructor(private readonly db: Database) {}

  /** Checks the request (400 unknown scope, 403 admin by a non-admin, 409 too many) and stores the token. */
  async create(user: User, input: { name: string; scopes: string[]; expiresInDays?: number | undefined }): Promise<ApiTokenView & { token: string }> {
    const name = input.name.trim();
    if (!name) throw badRequest('name must not be empty');
    const unknown = input.scopes.filter((s) => !isScope(s));
    if (unknown.length > 0) throw badRequest(`unknown scope ${unknown.map((s) => `"${s.slice(0, 40)}"`).join(', ')}; known scopes: ${SCOPE_NAMES.join(', ')}`);
    const scopes = SCOPE_NAMES.filter((s) => input.scopes.includes(s));
    if (scopes.length === 0) throw badRequest(`give at least one scope: ${SCOPE_NAMES.join(', ')}`);
    if (scopes.includes('admin') && !user.roles.includes('admin')) throw new ApiError(403, 'only admins can grant the admin scope');
    const held = await this.db
      .select({ id: apiTokens.id })
      .from(apiTokens)
      .where(and(eq(apiTokens.userId, user.id), isNull(apiTokens.revokedAt)));
    if (held.length >= MAX_TOKENS_PER_USER) throw conflict(`you already hold ${MAX_TOKENS_PER_USER} API tokens; revoke one first`);
    const { token, hash } = newApiToken();
    const expiresAt = input.expiresInDays === undefined ? null : new Date(Date.now() + input.expiresInDays * DAY_MS);
    const [row] = await this.db.insert(apiTokens).values({ userId: user.id, name, hash, scopes, expiresAt }).returning();
    return { ...view(row!), token };
  }

  /** The user's tokens that are not revoked, newest first (expired ones included, so they can be cleaned up). */
  async list(userId: string): Promise<ApiTokenView[]> {
    const rows = await this.db
      .select()
      .from(apiTokens)
      .where(and(eq(apiTokens.userId, userId), isNull(apiTokens.revokedAt)))
      .orderBy(desc(apiTokens.createdAt));
    return rows.map(view);
  }

  /** Revokes one of the user's tokens; 404 when it is unknown, someone else's or already revoked. */
  async revoke(userId: string, id: string): Promise<void> {
    const done = UUID.test(id)
      ? await this.db
          .update(apiTokens)
          .set({ revokedAt: new Date() })
          .where(and(eq(apiTokens.id, id), eq(apiTokens.userId, userId), isNull(apiTokens.revokedAt)))
          .returning({ id: apiTokens.id })
      : [];
    if (done.length === 0) throw notFound(`no API token ${id.slice(0, 64)}`);
  }

  /** The token's user and scopes; 401 saying why when it is malformed, unknown, revoked or expired. */
  async authenticate(token: string): Promise<ApiTokenAuth> {
    if (!token.startsWith(API_TOKEN_PREFIX)) throw unauthorized(`not a deskhub API token (they start with ${API_TOKEN_PREFIX})`);
    const [row] = await this.db
      .select({
        id: apiTokens.id,
        scopes: apiTokens.scopes,
        expiresAt: apiTokens.expiresAt,
        revokedAt: apiTokens.revokedAt,
        lastUsedAt: apiTokens.lastUsedAt,
        userId: users.id,
        username: users.username,
        roles: users.roles,
      })
      .from(apiTokens)
      .innerJoin(users, eq(users.id, apiTokens.userId))
      .where(eq(apiTokens.hash, hashToken(token)));
    if (!row) throw unauthorized('unknown API token');
    if (row.revokedAt) throw unauthorized('this API token was revoked');
    const now = Date.now();
    if (row.expiresAt && row.expiresAt.getTime() <= now) throw unauthorized(`this API token expired at ${row.expiresAt.toISOString()}`);
    if (!row.lastUsedAt || now - row.lastUsedAt.getTime() > USED_REFRESH_MS) {
      await this.db.update(apiTokens).set({ lastUsedAt: new Date(now) }).where(eq(apiTokens.id, row.id));
    }
    return { tokenId: row.id, user: { id: row.userId, username: row.username, roles: row.roles }, scopes: row.scopes.filter(isScope) };
  }
}
