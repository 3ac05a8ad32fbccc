/**
 * Desktop lifecycle: the verbs the API, the reconciler and policies call (list, get, create,
 * start, stop, delete, repair, shutdown), each a few lines over modules of one concern:
 * views.ts (what the API shows), journal.ts (events and state changes), admission.ts (checks,
 * quotas, the proxy path), bring-up.ts (create/start until running), readiness.ts,
 * desktop-routes.ts (publish, withdraw, confirm), repairs.ts, activity.ts.
 *
 * Create allocates a collision-safe proxy path and checks quotas in one transaction, answers at
 * once (state `creating`), then in the background: the runtime creates the desktop, the readiness
 * probe waits for it, its route is published and every live proxy replica confirms it, and only
 * then is it `running`. Stop and delete withdraw the route first, then touch the runtime. Every
 * operation on one desktop runs in its queue (desktop-queue.ts), one at a time.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { and, eq, inArray } from 'drizzle-orm';
import type { Logger } from '@deskhub/config';
import { activeStates, desktops } from '../db/schema.ts';
import { conflict, forbidden } from '../errors.ts';
import type { DesktopRuntime, NodeView } from '../runtime/types.ts';
import { recordActivity, type Seen } from './activity.ts';
import { homeHolder, Homes, inUse, lockHomes, standInHome, type HomeView } from './homes.ts';
import { ClockState } from './clock-state.ts';
import { Sharing, type DesktopAccess, type ShareMode, type SharedDesktop, type ShareView, type SharingView } from './sharing.ts';
import type { Deadline } from './clocks.ts';
import { Admission } from './admission.ts';
import { BringUp } from './bring-up.ts';
import { DesktopQueue } from './desktop-queue.ts';
import { DesktopRoutes } from './desktop-routes.ts';
import { ExitNotices } from './readiness.ts';
import { DesktopJournal, type LifecycleEvents } from './journal.ts';
import type { LifecycleOptions } from './options.ts';
import { Repairs, type Orphan, type Repair } from './repairs.ts';
import { DesktopViews, loadDesktop, type DesktopEventView, type DesktopRow, type DesktopView, type Owner, type Scope } from './views.ts';

export { decideRepair, type Repair } from './repairs.ts';
export type { DesktopAccess, ShareMode, SharedDesktop, ShareView, SharingView } from './sharing.ts';

/** How recent a proxy's sighting of someone must be to say they have a desktop open now (three flushes). */
const CONNECTED_NOW_MS = 15_000;

const NO_SHARING = { desktopOrigins: null, linkDefaultTtlMs: 24 * 3_600_000, linkMaxTtlMs: 7 * 24 * 3_600_000, linkControl: false };
export type { DesktopEventView, DesktopView, Owner, Scope } from './views.ts';
export type { LifecycleOptions } from './options.ts';

export class DesktopLifecycle extends EventEmitter<LifecycleEvents> {
  readonly queue = new DesktopQueue();
  private readonly logger: Logger;
  private readonly views: DesktopViews;
  private readonly journal: DesktopJournal;
  private readonly routes: DesktopRoutes;
  private readonly admission: Admission;
  private readonly bringUp: BringUp;
  private readonly repairs: Repairs;
  private readonly exits: ExitNotices;
  private readonly clocks: ClockState;
  private readonly homes: Homes;
  private readonly sharing: Sharing;
  private closed = false;

  constructor(private readonly options: LifecycleOptions) {
    super();
    // One listener per open event stream (the UI follows each launching desktop).
    this.setMaxListeners(0);
    const logger = (this.logger = options.logger.child({ component: 'lifecycle' }));
    this.views = new DesktopViews(options.db, options.publicUrl, options.catalog, options.connectedWindowMs, options.sharing?.desktopOrigins ?? null, options.homeNodeLost);
    this.journal = new DesktopJournal(options.db, logger, this);
    this.routes = new DesktopRoutes(options, this.journal, logger);
    this.admission = new Admission(options, this.journal);
    this.exits = new ExitNotices(options.runtimes.all);
    this.bringUp = new BringUp(options, this.journal, this.routes, this.exits, logger);
    this.clocks = new ClockState(options, this.journal, this.routes, logger);
    this.homes = new Homes(options);
    this.sharing = new Sharing(options, options.sharing ?? NO_SHARING, this.journal, this.routes);
    this.repairs = new Repairs(options, { bringUp: this.bringUp, routes: this.routes, journal: this.journal, finishStop: (id) => this.finishStop(id) }, logger);
  }

  // ---------------------------------------------------------------- reading

  list(owner: Owner): Promise<DesktopView[]> {
    return this.views.list(owner);
  }

  /** Every desktop of every user (the admin API). */
  listAll(): Promise<DesktopView[]> {
    return this.views.listAll();
  }

  get(scope: Scope, id: string): Promise<DesktopView> {
    return this.views.get(scope, id);
  }

  events(scope: Scope, id: string, after = 0): Promise<DesktopEventView[]> {
    return this.views.events(scope, id, after);
  }

  // ---------------------------------------------------------------- create

  async create(owner: Owner, input: { type: string; name?: string | undefined }): Promise<DesktopView> {
    const admissible = await this.admission.check(owner, input);
    if (admissible.type.pool) {
      // A ready member of the warm pool: only its route is left to publish.
      const claimed = await this.admission.claim(owner, admissible);
      if (claimed) {
        const startedAt = Date.now();
        this.queue
          .run(claimed.id, async (signal) => {
            try {
              await this.bringUp.publishAndRun(claimed.id, 'claim', signal, startedAt);
            } catch (err) {
              if (signal.aborted) return;
              await this.bringUp.fail(claimed.id, (err as Error).message, 'stop', admissible.type.id);
            }
          })
          .catch((err: unknown) => this.logger.error({ err, desktopId: claimed.id }, 'claim failed unexpectedly'));
        this.journal.changed(claimed.id);
        this.emit('claimed', claimed.id, admissible.type.id);
        this.logger.info({ desktopId: claimed.id, type: admissible.type.id, proxyPath: claimed.proxyPath, owner: owner.username }, 'desktop claimed from the warm pool');
        return this.views.view(claimed, owner.username);
      }
    }
    const id = randomUUID();
    const row = await this.createQueued(id, () => this.admission.insert(id, owner, admissible));
    this.logger.info({ desktopId: id, type: admissible.type.id, proxyPath: row.proxyPath, owner: owner.username }, 'desktop created');
    return this.views.view(row, owner.username);
  }

  /**
   * Starts one warm pool member of `typeId` in the background (the pool policy); resolves with
   * its id once its row exists. 409 over the total quota.
   */
  async createPoolMember(typeId: string): Promise<string> {
    const type = this.options.catalog.get(typeId);
    if (!type?.pool) throw conflict(`desktop type "${typeId}" has no warm pool`);
    const id = randomUUID();
    await this.createQueued(id, () => this.admission.insertPoolMember(id, type));
    return id;
  }

  /**
   * Deletes a warm pool member (the pool policy), unless a create claimed it since the policy
   * looked: the row is locked and checked for `pool` in the deleting transaction, and a claim
   * skips locked members. Returns whether it was deleted.
   */
  async recyclePoolMember(id: string, reason: string): Promise<boolean> {
    return this.queue.run(
      id,
      async () => {
        const row = await this.options.db.transaction(async (tx) => {
          const [member] = await tx.select().from(desktops).where(and(eq(desktops.id, id), eq(desktops.pool, true))).for('update');
          if (member) await tx.delete(desktops).where(eq(desktops.id, id));
          return member;
        });
        if (!row) return false;
        this.journal.changed(id);
        const runtime = this.options.runtimes.get(row.runtime);
        if (runtime && row.runtimeId) {
          await runtime.remove(row.runtimeId).catch((err: Error) => this.logger.warn({ desktopId: id, err: err.message }, 'could not remove a recycled pool member yet'));
        }
        this.logger.info({ desktopId: id, type: row.type, reason }, 'warm pool member recycled');
        return true;
      },
      { preempt: true },
    );
  }

  /**
   * Queues the bring-up of a new desktop before its row exists, so reconciliation never finds it
   * in `creating` with nobody working on it; then `insert` writes the row (or throws, and the
   * queued bring-up does nothing).
   */
  private async createQueued(id: string, insert: () => Promise<DesktopRow>): Promise<DesktopRow> {
    let admit!: (admitted: boolean) => void;
    const admitted = new Promise<boolean>((resolve) => (admit = resolve));
    const startedAt = Date.now();
    this.queue
      .run(id, async (signal) => {
        if (await admitted) await this.bringUp.run(id, 'create', signal, startedAt);
      })
      .catch((err: unknown) => this.logger.error({ err, desktopId: id }, 'desktop create failed unexpectedly'));
    try {
      const row = await insert();
      admit(true);
      return row;
    } catch (err) {
      admit(false);
      throw err;
    }
  }

  // ---------------------------------------------------------------- stop, start, delete

  /**
   * Withdraws the route (before answering), then stops the desktop in the background. `reason`
   * (a policy's: "Stopped: nobody was connected for 2 hours") stays as the stopped state's reason.
   */
  async stop(scope: Scope, id: string, reason?: string): Promise<DesktopView> {
    const { row, ownerName } = await this.views.owned(scope, id);
    if (row.state === 'stopped' || row.state === 'failed') return this.views.view(row, ownerName);
    const withdrawn = this.queue.run(
      id,
      async () => {
        const current = await loadDesktop(this.options.db, id);
        if (!current || current.state === 'stopped' || current.state === 'failed') return;
        await this.journal.setState(id, 'stopping', reason ?? null);
        await this.routes.withdraw(id);
      },
      { preempt: true },
    );
    this.queue.run(id, () => this.finishStop(id)).catch((err: unknown) => this.logger.error({ err, desktopId: id }, 'stop failed'));
    await withdrawn;
    return this.get(scope, id);
  }

  private async finishStop(id: string): Promise<void> {
    const row = await loadDesktop(this.options.db, id);
    if (!row || row.state !== 'stopping') return;
    await this.routes.withdraw(id);
    const runtime = this.options.runtimes.get(row.runtime);
    try {
      if (runtime && row.runtimeId) await runtime.stop(row.runtimeId);
      await this.journal.setState(id, 'stopped', row.reason, { disconnectedAt: null, disconnectReason: null, clockWarnings: {} });
    } catch (err) {
      await this.journal.setState(id, 'failed', `could not stop: ${(err as Error).message}`);
    }
  }

  async start(scope: Scope, id: string): Promise<DesktopView> {
    const { row, ownerName } = await this.views.owned(scope, id);
    if (row.state !== 'stopped' && row.state !== 'failed' && row.state !== 'stopping') return this.views.view(row, ownerName);
    const type = this.options.catalog.get(row.type);
    if (type) {
      const availability = await this.options.runtimes.availability(type);
      if (!availability.ok) throw conflict(`desktop type "${type.id}" cannot run here: ${availability.reason}`);
    }
    const startedAt = Date.now();
    let marked!: (refused?: Error) => void;
    const markedStarting = new Promise<Error | undefined>((resolve) => (marked = resolve));
    this.queue
      .run(id, async (signal) => {
        const current = await loadDesktop(this.options.db, id);
        if (!current || (current.state !== 'stopped' && current.state !== 'failed')) return marked();
        const refused = await this.markStarting(current.id, current.homeId, type?.home?.name ?? 'home');
        marked(refused);
        if (!refused) await this.bringUp.run(id, 'start', signal, startedAt);
      })
      .catch((err: unknown) => this.logger.error({ err, desktopId: id }, 'desktop start failed unexpectedly'))
      .finally(() => marked());
    const refused = await markedStarting;
    if (refused) throw refused;
    return this.get(scope, id);
  }

  /**
   * Starts a desktop that failed because its home's node is lost with a stand-in home instead, new
   * and empty (HOME_NODE_LOST=offer-new-home; 403 otherwise), once its owner has confirmed
   * (homes.ts standInHome). The choice is recorded as one of the desktop's events (who, which
   * home, which node). 409 for any other desktop.
   */
  async startWithNewHome(scope: Scope, id: string, by: string): Promise<DesktopView> {
    if ((this.options.homeNodeLost ?? 'wait') !== 'offer-new-home') {
      throw forbidden("starting with a new, empty home is not allowed here (HOME_NODE_LOST=wait): start the desktop again once its home's node is back, or ask an admin to move the home");
    }
    const { row, ownerName } = await this.views.owned(scope, id);
    const lost = (r: DesktopRow) => r.state === 'failed' && r.failure === 'home-unreachable' && r.homeId !== null && r.ownerId !== null;
    if (!lost(row)) throw conflict(`only a desktop that failed because its home's node is lost can start with a new home; this one is ${row.state}`);
    const replaced = await this.queue.run(id, async () => {
      const swap = await this.options.db.transaction(async (tx) => {
        await lockHomes(tx);
        const current = await loadDesktop(tx, id);
        if (!current || !lost(current)) throw conflict('the desktop changed meanwhile: it is no longer failed for its home');
        const swapped = await standInHome(tx, this.options, { id: current.ownerId!, username: ownerName }, id, current.homeId!);
        const where = swapped.location ? ` on node ${swapped.location.slice(0, 12)}` : '';
        await this.journal.record(tx, id, 'home', `${by} confirmed starting with the stand-in home "${swapped.standIn}": the home "${swapped.name}" stays${where} with its files, and new desktops take it again once that node is back`);
        return { ...swapped, runtimeId: current.runtimeId };
      });
      // A stopped instance (its start failed) mounts the old home, fixed when it was made: it is
      // removed, and the start makes a new one with the stand-in.
      const runtime = this.options.runtimes.get(row.runtime);
      if (swap.runtimeId && runtime) {
        await runtime.remove(swap.runtimeId);
        await this.options.db.update(desktops).set({ runtimeId: null, upstream: null, updatedAt: new Date() }).where(eq(desktops.id, id));
      }
      return swap;
    });
    this.logger.info({ desktopId: id, owner: row.ownerId, by, home: replaced.name, standIn: replaced.standIn, node: replaced.location }, 'desktop given a stand-in home in place of one on a lost node');
    return this.start(scope, id);
  }

  /**
   * Marks the desktop `starting`; with a home, only if no other active desktop holds it (checked
   * and marked under the home lock, so two starts never share one). Returns the 409 if held.
   */
  private async markStarting(id: string, homeId: string | null, homeName: string): Promise<Error | undefined> {
    if (homeId === null) {
      await this.journal.setState(id, 'starting', null);
      return undefined;
    }
    const holder = await this.options.db.transaction(async (tx) => {
      await lockHomes(tx);
      const held = await homeHolder(tx, homeId, id);
      if (!held) await this.journal.setStateIn(tx, id, 'starting', null);
      return held;
    });
    if (holder) return inUse(homeName, holder);
    this.journal.changed(id);
    return undefined;
  }

  /** Withdraws the route, forgets the desktop, then removes it from its runtime. `reason` is logged (the desktop's events go with it). */
  async delete(scope: Scope, id: string, reason?: string): Promise<void> {
    await this.views.owned(scope, id);
    await this.queue.run(
      id,
      async () => {
        const row = await loadDesktop(this.options.db, id);
        if (!row) return;
        await this.routes.withdraw(id, async (tx) => {
          await tx.delete(desktops).where(eq(desktops.id, id));
        });
        this.journal.changed(id);
        const runtime = this.options.runtimes.get(row.runtime);
        if (runtime && row.runtimeId) {
          // If this fails, the instance is an orphan now and reconciliation removes it.
          await runtime.remove(row.runtimeId).catch((err: Error) => this.logger.warn({ desktopId: id, err: err.message }, 'could not remove a deleted desktop yet'));
        }
        this.logger.info({ desktopId: id, proxyPath: row.proxyPath, owner: row.ownerId, ...(reason ? { reason } : {}) }, 'desktop deleted');
      },
      { preempt: true },
    );
  }

  // ---------------------------------------------------------------- homes (homes.ts)

  /** Homes in scope (the caller's, or everyone's for the admin API), with sizes and users. */
  listHomes(scope: Scope): Promise<HomeView[]> {
    return this.homes.list(scope);
  }

  /** Deletes a home and its storage; 409 while a desktop mounts it. */
  deleteHome(scope: Scope, id: string): Promise<void> {
    return this.homes.delete(scope, id);
  }

  /** Admins: moves a home to another swarm node; 409 while a desktop runs with it. */
  moveHome(id: string, node: string, by: string): Promise<HomeView> {
    return this.homes.move(id, node, by);
  }

  /** Admins: the nodes homes can live on (Swarm without shared storage), per runtime. */
  listNodes(): Promise<Array<NodeView & { runtime: string }>> {
    return this.homes.nodes();
  }

  // ---------------------------------------------------------------- reconciliation, activity, shutdown

  /**
   * Re-reads the desktop and its runtime instance inside the desktop's queue, and repairs what
   * is still wrong (repairs.ts). Returns the repair made, if any.
   */
  async repair(id: string, orphan?: Orphan): Promise<Repair | null> {
    if (this.closed) return null;
    return this.queue.run(id, (signal) => this.repairs.run(id, orphan, signal));
  }

  /** Ids of desktops with no operation queued or under way in this process ("idle" is a policy's word). */
  notBusy(ids: string[]): string[] {
    return ids.filter((id) => !this.queue.busy(id));
  }

  /** Updates last activity and presence from what the proxies saw (paths to epoch ms). */
  recordActivity(seen: Seen): Promise<number> {
    return recordActivity(this.options.db, seen, this.options.connectedWindowMs);
  }

  // ---------------------------------------------------------------- the idle clocks (clock-state.ts)

  /** How old presence may be and still mean "connected now" (clocks.ts). */
  get connectedWindowMs(): number {
    return this.options.connectedWindowMs;
  }

  /** Holds a running desktop's streams disconnected (the idle policy); false if there was nothing to do. */
  disconnect(id: string, reason: string): Promise<boolean> {
    return this.queue.run(id, (signal) => this.clocks.disconnect(id, reason, signal));
  }

  /** Pushes the idle and expire deadlines out by one period and re-arms held streams (409 unless running). */
  async keepAlive(scope: Scope, id: string, who: string): Promise<DesktopView> {
    await this.views.owned(scope, id);
    await this.queue.run(id, (signal) => this.clocks.keepAlive(id, who, signal));
    return this.get(scope, id);
  }

  /** Records the warnings of `current` deadlines whose window began, once each (the idle policy). */
  warnClocks(id: string, current: Deadline[], now = Date.now()): Promise<void> {
    return this.queue.run(id, () => this.clocks.warn(id, current, now));
  }

  // ---------------------------------------------------------------- sharing

  /** Its shares and links, and whether it can be shared here (its owner, or an admin). */
  async shares(scope: Scope, id: string): Promise<SharingView> {
    const { row } = await this.views.owned(scope, id);
    return this.sharing.view(row);
  }

  /** Shares it with a named user (or changes that share); the route carries it once this resolves. */
  async shareWithUser(owner: Owner, id: string, input: { username: string; mode: ShareMode; expiresAt: Date | null }): Promise<ShareView> {
    const { row } = await this.views.owned(owner, id);
    const share = await this.sharing.shareWithUser(row, owner, input);
    await this.publishShares(id);
    return share;
  }

  /** A share link (its URL holds a secret shown only now). */
  async createShareLink(owner: Owner, id: string, input: { mode: ShareMode; ttlMs: number | null }): Promise<{ share: ShareView; url: string }> {
    const { row } = await this.views.owned(owner, id);
    const made = await this.sharing.createLink(row, owner, input);
    await this.publishShares(id);
    return made;
  }

  /**
   * Ends a share or link. For a running desktop this resolves once every live proxy replica holds
   * its route without the share: its WebSockets are closed and its next request is refused.
   */
  async revokeShare(scope: Scope, id: string, shareId: string, who: string): Promise<void> {
    const { row } = await this.views.owned(scope, id);
    await this.sharing.revoke(row, shareId, who);
    await this.publishShares(id);
  }

  /** Opens a share link as `user` (GET /api/shared/links/:secret). */
  openShareLink(user: Owner, secret: string): Promise<SharedDesktop> {
    return this.sharing.openLink(user, secret);
  }

  /** The desktops others share with `user`. */
  sharedWith(user: Owner): Promise<SharedDesktop[]> {
    return this.sharing.sharedWith(user);
  }

  /**
   * Who has it open now (a WebSocket at any proxy replica, seen at their last flushes), and as
   * what: the owner, control or view. Proxies flush every 5 s; an entry counts for three flushes.
   */
  async connected(scope: Scope, id: string): Promise<Array<{ username: string; role: 'owner' | 'control' | 'view'; lastSeenAt: string }>> {
    const { row } = await this.views.owned(scope, id);
    const since = Date.now() - CONNECTED_NOW_MS;
    const [viewers, holders] = await Promise.all([this.options.publisher.readViewers(), this.sharing.holders(id)]);
    // Someone whose share was revoked or ended is gone at once, not a few flushes later.
    return viewers
      .filter((v) => v.path === row.proxyPath && v.at >= since && (v.role === 'owner' || ((v.role === 'control' || v.role === 'view') && holders.has(v.username))))
      .sort((a, b) => a.role.localeCompare(b.role) || a.username.localeCompare(b.username))
      .map((v) => ({ username: v.username, role: v.role as 'owner' | 'control' | 'view', lastSeenAt: new Date(v.at).toISOString() }));
  }

  /** Whether `user` may reach the desktop at `proxyPath`, and as what (the hand-off asks before minting a token). */
  accessFor(user: Owner, proxyPath: string): Promise<DesktopAccess | null> {
    return this.sharing.accessFor(user, proxyPath);
  }

  /** Removes expired shares and republishes the routes that carried them (the share-expiry policy). */
  async expireShares(): Promise<string[]> {
    const ids = await this.sharing.removeExpired();
    for (const id of ids) await this.publishShares(id);
    return ids;
  }

  /**
   * The route takes the desktop's current shares, in its queue. A running desktop's caller waits
   * until every replica holds them; any other desktop publishes them when it next runs anyway.
   */
  private async publishShares(id: string): Promise<void> {
    const row = await loadDesktop(this.options.db, id);
    const published = this.queue.run(id, (signal) => this.sharing.republish(id, signal));
    if (row?.state === 'running') await published;
    else published.catch((err: unknown) => this.logger.warn({ desktopId: id, err: (err as Error).message }, 'could not republish the shares of a desktop that is not running'));
  }

  /** Takes a desktop out of (or puts it back under) every clock: the admin API. */
  async exemptFromClocks(scope: Scope, id: string, exempt: boolean): Promise<DesktopView> {
    await this.views.owned(scope, id);
    await this.queue.run(id, (signal) => this.clocks.exempt(id, exempt, signal));
    return this.get(scope, id);
  }

  /**
   * Shutdown of the embedded start, whose desktop processes stop with it: withdraws their routes
   * and records them as stopped, so the next start shows the truth and `start` brings them back.
   */
  async stopForShutdown(runtime: DesktopRuntime['name'], reason: string): Promise<void> {
    const rows = await this.options.db
      .select({ id: desktops.id })
      .from(desktops)
      .where(and(eq(desktops.runtime, runtime), inArray(desktops.state, [...activeStates])));
    await Promise.all(
      rows.map(({ id }) =>
        this.queue
          .run(
            id,
            async () => {
              await this.routes.withdraw(id);
              await this.journal.setState(id, 'stopped', reason);
            },
            { preempt: true },
          )
          .catch((err: unknown) => this.logger.warn({ err, desktopId: id }, 'could not record a desktop as stopped at shutdown')),
      ),
    );
  }

  /** Waits for operations under way to stop (bring-ups are aborted; stops and deletes finish). */
  async close(): Promise<void> {
    this.closed = true;
    await this.queue.drain();
    this.exits.close();
    this.removeAllListeners();
  }
}
