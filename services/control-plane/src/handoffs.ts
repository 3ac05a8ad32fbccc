/**
 * The hand-off of desktop access from the UI's origin to a desktop's own origin (DESKTOP_ORIGIN).
 * The session cookie lives on the UI's origin only, and a desktop's origin must get an access
 * cookie of its own, set by a response from that origin. So the UI's origin mints a one-time code
 * (random, a minute, bound to the session, the desktop and the share) and redirects to the
 * desktop's origin, which the proxy forwards here to exchange: the code is deleted as it is read,
 * so it works once, and only its SHA-256 is ever stored.
 */
import { randomBytes } from 'node:crypto';
import { and, eq, gt, lte } from 'drizzle-orm';
import type { Database } from './db/client.ts';
import { desktopHandoffs } from './db/schema.ts';
import { hashToken } from './secrets.ts';

export const HANDOFF_TTL_MS = 60_000;

export interface Handoff {
  desktopId: string;
  userId: string;
  sessionId: string;
  /** The share or link the token is for; null for the owner. */
  grantId: string | null;
}

export class Handoffs {
  constructor(private readonly db: Database) {}

  /** A fresh code for `handoff`; old, unused codes are swept on the way. */
  async create(handoff: Handoff): Promise<string> {
    const code = randomBytes(32).toString('base64url');
    await this.db.delete(desktopHandoffs).where(lte(desktopHandoffs.expiresAt, new Date()));
    await this.db.insert(desktopHandoffs).values({ codeHash: hashToken(code), ...handoff, expiresAt: new Date(Date.now() + HANDOFF_TTL_MS) });
    return code;
  }

  /** The hand-off of `code`, once: null for an unknown, used or expired code (or a share revoked since: cascade). */
  async take(code: string): Promise<Handoff | null> {
    if (!/^[A-Za-z0-9_-]{43}$/.test(code)) return null;
    const [row] = await this.db
      .delete(desktopHandoffs)
      .where(and(eq(desktopHandoffs.codeHash, hashToken(code)), gt(desktopHandoffs.expiresAt, new Date())))
      .returning();
    return row ? { desktopId: row.desktopId, userId: row.userId, sessionId: row.sessionId, grantId: row.grantId } : null;
  }
}
