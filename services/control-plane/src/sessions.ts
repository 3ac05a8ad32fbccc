/**
 * Server-side sessions: the cookie carries a random token (signed by @fastify/cookie), the
 * database keeps its SHA-256 with the user, the expiry and whether it was revoked. Revoking a
 * row ends the session everywhere at once.
 */
import { and, eq, gt, isNull } from 'drizzle-orm';
import type { Database } from './db/client.ts';
import { sessions, users } from './db/schema.ts';
import { hashToken, newSessionToken } from './secrets.ts';
import type { User } from './users.ts';

export const SESSION_COOKIE = 'deskhub_session';

/**
 * The session cookie's name: under https `__Host-deskhub_session`, which the browser accepts only
 * host-only, Secure and for Path=/, so no other host (a desktop's subdomain above all) can plant
 * or overwrite one. Plain http (loopback development) cannot carry the prefix.
 */
export function sessionCookieName(publicUrl: string): string {
  return new URL(publicUrl).protocol === 'https:' ? `__Host-${SESSION_COOKIE}` : SESSION_COOKIE;
}

/** last_seen_at is refreshed at most this often, so a busy API does not write per request. */
const SEEN_REFRESH_MS = 5 * 60 * 1000;

export interface SessionInfo {
  /** The database id (hash of the token). */
  id: string;
  user: User;
  expiresAt: Date;
}

export class SessionStore {
  constructor(
    private readonly db: Database,
    readonly ttlMs: number,
  ) {}

  async create(userId: string): Promise<{ id: string; token: string; expiresAt: Date }> {
    const { token, hash } = newSessionToken();
    const expiresAt = new Date(Date.now() + this.ttlMs);
    await this.db.insert(sessions).values({ id: hash, userId, expiresAt });
    return { id: hash, token, expiresAt };
  }

  async lookup(token: string): Promise<SessionInfo | null> {
    const id = hashToken(token);
    const [row] = await this.db
      .select({ id: sessions.id, expiresAt: sessions.expiresAt, lastSeenAt: sessions.lastSeenAt, userId: users.id, username: users.username, roles: users.roles })
      .from(sessions)
      .innerJoin(users, eq(users.id, sessions.userId))
      .where(and(eq(sessions.id, id), isNull(sessions.revokedAt), gt(sessions.expiresAt, new Date())));
    if (!row) return null;
    if (Date.now() - row.lastSeenAt.getTime() > SEEN_REFRESH_MS) {
      await this.db.update(sessions).set({ lastSeenAt: new Date() }).where(eq(sessions.id, id));
    }
    return { id: row.id, expiresAt: row.expiresAt, user: { id: row.userId, username: row.username, roles: row.roles } };
  }

  /** The session with this id, if it has neither ended nor been revoked (a hand-off's session). */
  async byId(sessionId: string): Promise<SessionInfo | null> {
    const [row] = await this.db
      .select({ id: sessions.id, expiresAt: sessions.expiresAt, userId: users.id, username: users.username, roles: users.roles })
      .from(sessions)
      .innerJoin(users, eq(users.id, sessions.userId))
      .where(and(eq(sessions.id, sessionId), isNull(sessions.revokedAt), gt(sessions.expiresAt, new Date())));
    return row ? { id: row.id, expiresAt: row.expiresAt, user: { id: row.userId, username: row.username, roles: row.roles } } : null;
  }

  async revoke(sessionId: string): Promise<void> {
    await this.db.update(sessions).set({ revokedAt: new Date() }).where(and(eq(sessions.id, sessionId), isNull(sessions.revokedAt)));
  }
}
