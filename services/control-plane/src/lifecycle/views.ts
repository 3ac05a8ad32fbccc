/**
 * What the API shows of desktops and their event history, and the queries behind it: a desktop
 * is only ever read through the caller's scope (their own, or anyone's for the admin API).
 */
import { and, asc, eq, gt } from 'drizzle-orm';
import type { Database } from '../db/client.ts';
import { desktopEvents, desktops, users, type DesktopState } from '../db/schema.ts';
import { notFound } from '../errors.ts';
import type { Catalog } from '../catalog.ts';
import { desktopOrigin, type DesktopOrigins } from '@deskhub/access-token';
import { deadlines, type ClockName } from './clocks.ts';

/** A clock's deadline as the API shows it (clocks.ts). */
export interface DeadlineView {
  clock: ClockName;
  /** When it acts. */
  at: string;
  /** When its warning starts (the UI counts down from here). */
  warnAt: string;
  action: 'disconnect' | 'stop' | 'delete';
  /** The clock's period in seconds. */
  periodSeconds: number;
}

export interface ClocksView {
  /** An admin took it out of every clock. */
  exempt: boolean;
  /** Set while its streams are held disconnected after an idle period: reconnect with keepalive. */
  disconnected: { at: string; reason: string } | null;
  /** The running desktop's deadlines, soonest first (none when stopped, exempt or without clocks). */
  deadlines: DeadlineView[];
}

export interface DesktopView {
  id: string;
  type: string;
  name: string | null;
  owner: string;
  proxyPath: string;
  /** Where the desktop is: PUBLIC_URL/desktop/<path>/ (or, with DESKTOP_ORIGIN, its own origin) and its entry query. */
  url: string;
  /**
   * Where a browser opens it: `url` itself, or with DESKTOP_ORIGIN the hand-off on the UI's origin
   * that carries a fresh access cookie to the desktop's origin and then loads `url`.
   */
  openUrl: string;
  state: DesktopState;
  reason: string | null;
  runtime: string;
  createdAt: string;
  updatedAt: string;
  readyAt: string | null;
  lastActivityAt: string | null;
  /** What lastActivityAt counts: input (VNC desktops) or traffic (web apps); null for a type no longer in the catalog. */
  activity: 'input' | 'traffic' | null;
  /** The last time any proxy saw someone connected (an open WebSocket or a request). */
  lastConnectedAt: string | null;
  clocks: ClocksView;
  /** Its home (GET /api/volumes), if its type keeps one. */
  homeId: string | null;
  /**
   * Set when it failed because the node that holds its home is lost: it can be started again once
   * the node is back, and, where the operator allows (HOME_NODE_LOST=offer-new-home), with a new, empty home.
   */
  homeLost: { offerNewHome: boolean } | null;
  /** A warm pool member nobody has claimed yet (admins only see these; `owner` is ""). */
  pool: boolean;
}

export interface DesktopEventView {
  id: number;
  at: string;
  kind: string;
  message: string;
  progress: number | null;
  /** Set on state changes: the state entered (the UI's final event carries it). */
  state: DesktopState | null;
}

export interface Owner {
  id: string;
  username: string;
}

/** Whose desktops an operation may touch: the caller's own, or (the admin API) anyone's. */
export type Scope = Owner | { admin: true };

export type DesktopRow = typeof desktops.$inferSelect;

export type DesktopWithOwner = { row: DesktopRow; ownerName: string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `id` can be a row id (anything else is a 404 without a query). */
export const isUuid = (id: string): boolean => UUID.test(id);

export function eventView(e: typeof desktopEvents.$inferSelect): DesktopEventView {
  return { id: e.id, at: e.at.toISOString(), kind: e.kind, message: e.message, progress: e.progress, state: e.state };
}

/** A desktop's row, whoever owns it (the lifecycle's own reads). */
export async function loadDesktop(db: Database, id: string): Promise<DesktopRow | undefined> {
  const [row] = await db.select().from(desktops).where(eq(desktops.id, id));
  return row;
}

/** The path on the UI's origin that hands a desktop's origin its access cookie (routes/auth.ts). */
export const HANDOFF_PATH = '/auth/desktop-handoff';

/** Where a desktop is, and where a browser opens it (see DesktopView). */
export function desktopUrls(publicUrl: string, origins: DesktopOrigins | null, proxyPath: string, entryQuery: string): { url: string; openUrl: string } {
  const path = `/desktop/${proxyPath}/${entryQuery ? `?${entryQuery}` : ''}`;
  if (origins === null) return { url: `${publicUrl}${path}`, openUrl: `${publicUrl}${path}` };
  return {
    url: `${desktopOrigin(origins, proxyPath)}${path}`,
    openUrl: `${publicUrl}${HANDOFF_PATH}?desktop=${encodeURIComponent(proxyPath)}&next=${encodeURIComponent(path)}`,
  };
}

export class DesktopViews {
  constructor(
    private readonly db: Database,
    private readonly publicUrl: string,
    private readonly catalog: Catalog,
    private readonly connectedWindowMs: number,
    private readonly desktopOrigins: DesktopOrigins | null = null,
    private readonly homeNodeLost: 'wait' | 'offer-new-home' = 'wait',
  ) {}

  private clocks(row: DesktopRow, now: number): ClocksView {
    const running = row.state === 'running';
    const settings = this.catalog.get(row.type)?.clocks;
    const list = running && settings ? deadlines(row, settings, now, this.connectedWindowMs) : [];
    return {
      exempt: row.clocksExempt,
      disconnected: running && row.disconnectedAt ? { at: row.disconnectedAt.toISOString(), reason: row.disconnectReason ?? 'Disconnected' } : null,
      deadlines: list.map((d) => ({
        clock: d.clock,
        at: new Date(d.at).toISOString(),
        warnAt: new Date(d.warnAt).toISOString(),
        action: d.action,
        periodSeconds: Math.round(d.periodMs / 1000),
      })),
    };
  }

  view(row: DesktopRow, ownerName: string): DesktopView {
    const { url, openUrl } = desktopUrls(this.publicUrl, this.desktopOrigins, row.proxyPath, row.entryQuery);
    return {
      id: row.id,
      type: row.type,
      name: row.label,
      owner: ownerName,
      proxyPath: row.proxyPath,
      url,
      openUrl,
      state: row.state,
      reason: row.reason,
      runtime: row.runtime,
      createdAt: row.createdAt.toISOString(),
      updatedAt: row.updatedAt.toISOString(),
      readyAt: row.readyAt?.toISOString() ?? null,
      lastActivityAt: row.lastActivityAt?.toISOString() ?? null,
      activity: this.catalog.get(row.type)?.activity.on ?? null,
      lastConnectedAt: row.lastConnectedAt?.toISOString() ?? null,
      clocks: this.clocks(row, Date.now()),
      homeId: row.homeId,
      homeLost: row.state === 'failed' && row.failure === 'home-unreachable' ? { offerNewHome: this.homeNodeLost === 'offer-new-home' } : null,
      pool: row.pool,
    };
  }

  async list(owner: Owner): Promise<DesktopView[]> {
    const rows = await this.db.select().from(desktops).where(eq(desktops.ownerId, owner.id)).orderBy(asc(desktops.createdAt), asc(desktops.proxyPath));
    return rows.map((row) => this.view(row, owner.username));
  }

  /** Every desktop of every user, and the warm pool's members (the admin API). */
  async listAll(): Promise<DesktopView[]> {
    const rows = await this.db
      .select({ row: desktops, ownerName: users.username })
      .from(desktops)
      .leftJoin(users, eq(users.id, desktops.ownerId))
      .orderBy(asc(desktops.createdAt), asc(desktops.proxyPath));
    return rows.map(({ row, ownerName }) => this.view(row, ownerName ?? ''));
  }

  /** A desktop in scope; 404 for unknown and foreign ids alike, so ids reveal nothing. */
  async owned(scope: Scope, id: string): Promise<DesktopWithOwner> {
    if (isUuid(id)) {
      const [found] = await this.db
        .select({ row: desktops, ownerName: users.username })
        .from(desktops)
        .leftJoin(users, eq(users.id, desktops.ownerId))
        .where('admin' in scope ? eq(desktops.id, id) : and(eq(desktops.id, id), eq(desktops.ownerId, scope.id)));
      // A pool member (no owner) is reachable by admins (and the pool policy) only.
      if (found) return { row: found.row, ownerName: found.ownerName ?? '' };
    }
    throw notFound(`no desktop ${id}`);
  }

  async get(scope: Scope, id: string): Promise<DesktopView> {
    const { row, ownerName } = await this.owned(scope, id);
    return this.view(row, ownerName);
  }

  async events(scope: Scope, id: string, after = 0): Promise<DesktopEventView[]> {
    await this.owned(scope, id);
    const rows = await this.db
      .select()
      .from(desktopEvents)
      .where(and(eq(desktopEvents.desktopId, id), gt(desktopEvents.id, after)))
      .orderBy(asc(desktopEvents.id))
      .limit(1000);
    return rows.map(eventView);
  }
}
