/**
 * Sharing a desktop (README: Sharing a desktop), as the lifecycle's mechanism: shares with named
 * users and links, each `view` or `control`, with an expiry; who may reach a desktop and with
 * which share (the hand-off asks before it mints a token); and the route's copy of the shares,
 * republished on every change (by the lifecycle, in the desktop's queue), which is all a proxy
 * decides from. Revoking deletes the share; once every live proxy replica holds the route without
 * it, its WebSockets are closed and its next request is refused.
 *
 * Sharing needs DESKTOP_ORIGIN: a shared desktop runs its owner's page in the viewer's browser,
 * which must never be on the UI's origin (or on another desktop's).
 */
import { and, asc, eq, gt, inArray, isNull, lte, or, sql } from 'drizzle-orm';
import { randomBytes } from 'node:crypto';
import type { DesktopOrigins } from '@deskhub/access-token';
import type { RouteShare } from '@deskhub/route-stream';
import type { Queryable } from '../db/client.ts';
import { desktops, desktopShares, shareLinkVisitors, users } from '../db/schema.ts';
import { describeDuration } from '../durations.ts';
import { badRequest, conflict, notFound } from '../errors.ts';
import { hashToken } from '../secrets.ts';
import type { DesktopRoutes } from './desktop-routes.ts';
import type { DesktopJournal } from './journal.ts';
import type { LifecycleOptions } from './options.ts';
import { isUuid, type DesktopRow, type Owner } from './views.ts';

export type ShareMode = 'view' | 'control';

/** What the environment allows (config.ts: DESKTOP_ORIGIN, SHARE_LINK_*). */
export interface SharingSettings {
  /** null: sharing is off, and says why. */
  desktopOrigins: DesktopOrigins | null;
  linkDefaultTtlMs: number;
  linkMaxTtlMs: number;
  /** Links may give `control` (off by default, as in Kasm). */
  linkControl: boolean;
}

export interface ShareView {
  id: string;
  kind: 'user' | 'link';
  /** The user it is shared with (kind user). */
  username: string | null;
  mode: ShareMode;
  createdAt: string;
  expiresAt: string | null;
  /** kind link: how many users have opened it. */
  visitors: number;
}

export interface SharingView {
  /** Whether this desktop can be shared here; `reason` says why not. */
  available: boolean;
  reason: string | null;
  /** Whether it can be shared for viewing (its type has a read-only user). */
  viewAllowed: boolean;
  linkControl: boolean;
  linkDefaultSeconds: number;
  linkMaxSeconds: number;
  shares: ShareView[];
}

/** A desktop someone shared with the caller (GET /api/shared). */
export interface SharedDesktop {
  desktopId: string;
  proxyPath: string;
  owner: string;
  name: string | null;
  type: string;
  state: string;
  mode: ShareMode;
  via: 'user' | 'link';
  shareId: string;
  expiresAt: string | null;
}

/** Who may reach a desktop as what: the owner (no grant) or a share's holder. */
export interface DesktopAccess {
  desktopId: string;
  proxyPath: string;
  ownerId: string;
  /** null: the owner. */
  grantId: string | null;
  mode: 'owner' | ShareMode;
}

export const LINK_SECRET_BYTES = 24;
const SHARE_LINK_PATH = '/share/';
/** More shares than this on one desktop is not a person sharing it (route-stream's limit is higher). */
export const MAX_SHARES_PER_DESKTOP = 100;

type ShareRow = typeof desktopShares.$inferSelect;

const liveShare = (now: Date) => or(isNull(desktopShares.expiresAt), gt(desktopShares.expiresAt, now));

/** The route's copy of a desktop's live shares, oldest first (what every proxy decides from). */
export async function routeShares(q: Queryable, desktopId: string, now = new Date()): Promise<RouteShare[]> {
  const rows = await q
    .select({ id: desktopShares.id, userId: desktopShares.userId, mode: desktopShares.mode, expiresAt: desktopShares.expiresAt })
    .from(desktopShares)
    .where(and(eq(desktopShares.desktopId, desktopId), liveShare(now)))
    .orderBy(asc(desktopShares.createdAt), asc(desktopShares.id));
  return rows.map((r) => {
    const share: RouteShare = { id: r.id, mode: r.mode };
    if (r.userId !== null) share.user = r.userId;
    if (r.expiresAt !== null) share.expiresAt = r.expiresAt.getTime();
    return share;
  });
}

export class Sharing {
  constructor(
    private readonly options: LifecycleOptions,
    private readonly settings: SharingSettings,
    private readonly journal: DesktopJournal,
    private readonly routes: DesktopRoutes,
  ) {}

  /** Why this desktop cannot be shared, or null. */
  private unavailable(row: DesktopRow): string | null {
    if (this.settings.desktopOrigins === null) {
      return 'sharing needs DESKTOP_ORIGIN (each desktop on an origin of its own, e.g. https://*.desktops.example.net): on the shared origin a shared desktop\'s page could act as its viewers in deskhub';
    }
    if (row.pool || row.ownerId === null) return 'a warm pool member cannot be shared';
    const type = this.options.catalog.get(row.type);
    if (!type) return `its type "${row.type}" is no longer in the catalog`;
    if (!type.sharing.enabled) return `desktops of type "${row.type}" are not shared (catalog sharing: false)`;
    return null;
  }

  private viewAllowed(row: DesktopRow): boolean {
    return this.options.catalog.get(row.type)?.sharing.viewer != null;
  }

  /** The share link's URL, on the UI's origin: opening it signs in first, then shows the desktop. */
  linkUrl(secret: string): string {
    return `${this.options.publicUrl}${SHARE_LINK_PATH}${secret}`;
  }

  async view(row: DesktopRow): Promise<SharingView> {
    const reason = this.unavailable(row);
    const rows = await this.options.db
      .select({ share: desktopShares, username: users.username, visitors: sql<number>`(select count(*) from ${shareLinkVisitors} where ${shareLinkVisitors.shareId} = ${desktopShares.id})`.mapWith(Number) })
      .from(desktopShares)
      .leftJoin(users, eq(users.id, desktopShares.userId))
      .where(and(eq(desktopShares.desktopId, row.id), liveShare(new Date())))
      .orderBy(asc(desktopShares.createdAt), asc(desktopShares.id));
    return {
      available: reason === null,
      reason,
      viewAllowed: this.viewAllowed(row),
      linkControl: this.settings.linkControl,
      linkDefaultSeconds: Math.round(this.settings.linkDefaultTtlMs / 1000),
      linkMaxSeconds: Math.round(this.settings.linkMaxTtlMs / 1000),
      shares: rows.map(({ share, username, visitors }) => shareView(share, username, visitors)),
    };
  }

  private check(row: DesktopRow, mode: ShareMode): void {
    const reason = this.unavailable(row);
    if (reason !== null) throw conflict(reason);
    if (mode === 'view' && !this.viewAllowed(row)) {
      throw conflict(`desktops of type "${row.type}" have no read-only user (catalog sharing.viewer), so they can be shared for control only`);
    }
  }

  private async countShares(desktopId: string): Promise<number> {
    const [row] = await this.options.db.select({ n: sql<number>`count(*)`.mapWith(Number) }).from(desktopShares).where(eq(desktopShares.desktopId, desktopId));
    return row?.n ?? 0;
  }

  /** Shares `row` with the user named `username` (or changes that share's mode and expiry). */
  async shareWithUser(row: DesktopRow, by: Owner, input: { username: string; mode: ShareMode; expiresAt: Date | null }): Promise<ShareView> {
    this.check(row, input.mode);
    if (input.expiresAt !== null && input.expiresAt.getTime() <= Date.now()) throw badRequest('expiresAt must be in the future');
    const [user] = await this.options.db.select({ id: users.id, username: users.username }).from(users).where(eq(users.username, input.username));
    if (!user) throw notFound(`there is no user "${input.username}" (they must have signed in to deskhub once)`);
    if (user.id === row.ownerId) throw badRequest('a desktop is not shared with its own owner');
    if ((await this.countShares(row.id)) >= MAX_SHARES_PER_DESKTOP) throw conflict(`a desktop has at most ${MAX_SHARES_PER_DESKTOP} shares`);
    const [share] = await this.options.db
      .insert(desktopShares)
      .values({ desktopId: row.id, kind: 'user', userId: user.id, mode: input.mode, createdBy: by.id, expiresAt: input.expiresAt })
      .onConflictDoUpdate({ target: [desktopShares.desktopId, desktopShares.userId], set: { mode: input.mode, expiresAt: input.expiresAt } })
      .returning();
    await this.journal.note(row.id, 'share', `shared with ${user.username} (${input.mode}${input.expiresAt ? `, until ${input.expiresAt.toISOString()}` : ''}) by ${by.username}`);
    return shareView(share!, user.username, 0);
  }

  /** A link any signed-in user may open; its secret is returned once, the database keeps its hash. */
  async createLink(row: DesktopRow, by: Owner, input: { mode: ShareMode; ttlMs: number | null }): Promise<{ share: ShareView; url: string }> {
    this.check(row, input.mode);
    if (input.mode === 'control' && !this.settings.linkControl) {
      throw conflict('a link gives view only here: control through a link is off (an admin turns it on with SHARE_LINK_CONTROL=true)');
    }
    const ttlMs = input.ttlMs ?? this.settings.linkDefaultTtlMs;
    if (ttlMs <= 0 || ttlMs > this.settings.linkMaxTtlMs) {
      throw badRequest(`a link lasts at most ${describeDuration(this.settings.linkMaxTtlMs)} (SHARE_LINK_MAX_TTL), and more than nothing`);
    }
    if ((await this.countShares(row.id)) >= MAX_SHARES_PER_DESKTOP) throw conflict(`a desktop has at most ${MAX_SHARES_PER_DESKTOP} shares`);
    const secret = randomBytes(LINK_SECRET_BYTES).toString('base64url');
    const expiresAt = new Date(Date.now() + ttlMs);
    const [share] = await this.options.db
      .insert(desktopShares)
      .values({ desktopId: row.id, kind: 'link', mode: input.mode, secretHash: hashToken(secret), createdBy: by.id, expiresAt })
      .returning();
    await this.journal.note(row.id, 'share', `share link created (${input.mode}, until ${expiresAt.toISOString()}) by ${by.username}`);
    return { share: shareView(share!, null, 0), url: this.linkUrl(secret) };
  }

  /** Ends a share or link now (the caller republishes the route: the proxies close its WebSockets then). */
  async revoke(row: DesktopRow, shareId: string, who: string): Promise<void> {
    if (!isUuid(shareId)) throw notFound(`no share ${shareId} on this desktop`);
    const [gone] = await this.options.db
      .delete(desktopShares)
      .where(and(eq(desktopShares.id, shareId), eq(desktopShares.desktopId, row.id)))
      .returning({ kind: desktopShares.kind, mode: desktopShares.mode, userId: desktopShares.userId });
    if (!gone) throw notFound(`no share ${shareId} on this desktop`);
    await this.journal.note(row.id, 'share', `${gone.kind === 'link' ? 'share link' : `${gone.mode} share`} revoked by ${who}`);
  }

  /** Publishes the desktop's live shares in its route (nothing to do while it has no route). */
  async republish(desktopId: string, signal: AbortSignal): Promise<void> {
    const shares = await routeShares(this.options.db, desktopId);
    await this.routes.change(desktopId, (route) => ({ ...route, shares }), signal);
  }

  /** The usernames that may reach the desktop through a live share now: named, or a link they opened. */
  async holders(desktopId: string): Promise<Set<string>> {
    const now = new Date();
    const named = await this.options.db
      .select({ username: users.username })
      .from(desktopShares)
      .innerJoin(users, eq(users.id, desktopShares.userId))
      .where(and(eq(desktopShares.desktopId, desktopId), liveShare(now)));
    const visitors = await this.options.db
      .select({ username: users.username })
      .from(shareLinkVisitors)
      .innerJoin(desktopShares, eq(desktopShares.id, shareLinkVisitors.shareId))
      .innerJoin(users, eq(users.id, shareLinkVisitors.userId))
      .where(and(eq(desktopShares.desktopId, desktopId), liveShare(now)));
    return new Set([...named, ...visitors].map((r) => r.username));
  }

  /** Removes expired shares; returns the desktops whose routes must drop them. */
  async removeExpired(now = new Date()): Promise<string[]> {
    const gone = await this.options.db
      .delete(desktopShares)
      .where(lte(desktopShares.expiresAt, now))
      .returning({ desktopId: desktopShares.desktopId, kind: desktopShares.kind });
    const ids = [...new Set(gone.map((g) => g.desktopId))];
    for (const id of ids) await this.journal.note(id, 'share', 'a share ended (its expiry passed)');
    return ids;
  }

  /** Opens a share link as `user`: records them as its visitor. 404 for an unknown, revoked or expired link. */
  async openLink(user: Owner, secret: string): Promise<SharedDesktop> {
    const gone = notFound('this share link does not exist, was revoked, or has expired');
    if (!/^[A-Za-z0-9_-]{20,100}$/.test(secret)) throw gone;
    const [found] = await this.options.db
      .select({ share: desktopShares, desktop: desktops, owner: users.username })
      .from(desktopShares)
      .innerJoin(desktops, eq(desktops.id, desktopShares.desktopId))
      .innerJoin(users, eq(users.id, desktops.ownerId))
      .where(and(eq(desktopShares.secretHash, hashToken(secret)), eq(desktopShares.kind, 'link'), liveShare(new Date())));
    if (!found) throw gone;
    if (found.desktop.ownerId !== user.id) {
      const inserted = await this.options.db.insert(shareLinkVisitors).values({ shareId: found.share.id, userId: user.id }).onConflictDoNothing().returning();
      if (inserted.length > 0) await this.journal.note(found.desktop.id, 'share', `${user.username} opened a share link`);
    }
    return sharedDesktop(found.desktop, found.owner, found.share, 'link');
  }

  /** The desktops shared with `user` (or just `desktopId`), by name or through links they opened, with the best share of each. */
  async sharedWith(user: Owner, desktopId?: string): Promise<SharedDesktop[]> {
    const now = new Date();
    const visited = this.options.db.select({ id: shareLinkVisitors.shareId }).from(shareLinkVisitors).where(eq(shareLinkVisitors.userId, user.id));
    const rows = await this.options.db
      .select({ share: desktopShares, desktop: desktops, owner: users.username })
      .from(desktopShares)
      .innerJoin(desktops, eq(desktops.id, desktopShares.desktopId))
      .innerJoin(users, eq(users.id, desktops.ownerId))
      .where(and(liveShare(now), desktopId === undefined ? undefined : eq(desktopShares.desktopId, desktopId), or(eq(desktopShares.userId, user.id), inArray(desktopShares.id, visited))))
      .orderBy(asc(desktops.proxyPath), asc(desktopShares.createdAt));
    const best = new Map<string, SharedDesktop>();
    for (const { share, desktop, owner } of rows) {
      if (desktop.ownerId === user.id) continue;
      const seen = best.get(desktop.id);
      if (seen === undefined || (seen.mode === 'view' && share.mode === 'control')) best.set(desktop.id, sharedDesktop(desktop, owner, share, share.kind));
    }
    return [...best.values()];
  }

  /**
   * Whether `user` may reach the desktop at `proxyPath`, and as what: its owner, or the holder of
   * its best live share (a named one, or a link they opened). null: not at all.
   */
  async accessFor(user: Owner, proxyPath: string): Promise<DesktopAccess | null> {
    const [desktop] = await this.options.db.select().from(desktops).where(eq(desktops.proxyPath, proxyPath));
    if (!desktop || desktop.ownerId === null) return null;
    if (desktop.ownerId === user.id) return { desktopId: desktop.id, proxyPath, ownerId: desktop.ownerId, grantId: null, mode: 'owner' };
    if (this.unavailable(desktop) !== null) return null;
    // Only this desktop's shares: the hand-off asks at every renewal of an open desktop.
    const [shared] = await this.sharedWith(user, desktop.id);
    return shared ? { desktopId: desktop.id, proxyPath, ownerId: desktop.ownerId, grantId: shared.shareId, mode: shared.mode } : null;
  }
}

function shareView(share: ShareRow, username: string | null, visitors: number): ShareView {
  return {
    id: share.id,
    kind: share.kind,
    username,
    mode: share.mode,
    createdAt: share.createdAt.toISOString(),
    expiresAt: share.expiresAt?.toISOString() ?? null,
    visitors,
  };
}

function sharedDesktop(desktop: DesktopRow, owner: string, share: ShareRow, via: 'user' | 'link'): SharedDesktop {
  return {
    desktopId: desktop.id,
    proxyPath: desktop.proxyPath,
    owner,
    name: desktop.label,
    type: desktop.type,
    state: desktop.state,
    mode: share.mode,
    via,
    shareId: share.id,
    expiresAt: share.expiresAt?.toISOString() ?? null,
  };
}
