/**
 * The proxy side of the route stream: keeps a full route table in memory and in step with the
 * publisher, whatever the transport loses on the way.
 *
 * It subscribes first, then loads the snapshot, then applies the buffered changes newer than it.
 * A gap (a change that is not applied + 1), a malformed message, a reconnect, or a periodic check
 * that finds it behind all lead to a full resync. It never goes back: when the store is older than
 * its table (Redis lost its data), it keeps serving what it has, asks the publisher for a
 * republish, and retries until the store has caught up.
 */
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Logger } from '@deskhub/config';
import type { RouteSubscriber, SubscriberEvents } from './api.ts';
import { parseViewerKey, parseControlMessage, type BusSubscription, type Channel, type RouteBus, type StoredSnapshot } from './bus.ts';
import { parseRoute, parseRouteChange, sameRoute } from './schema.ts';
import { MapRouteTable } from './table.ts';
import type { Route, RouteChange } from './types.ts';

export interface SubscriberOptions {
  /** Name this replica announces itself under; default host-pid-random. */
  replicaId?: string;
  /** How often to compare the stored version with ours, in ms (default 5000). */
  checkIntervalMs?: number;
  /** How often recorded activity and presence are written to the store, in ms (default 5000). */
  activityFlushMs?: number;
  /**
   * Routes someone is connected to right now (the proxy: routes with an open WebSocket). Called at
   * each flush; every path it yields gets presence = now, so an open connection keeps its desktop
   * "connected" at flush granularity even while no byte moves. Also settable later
   * (`setConnectedPaths`), for a subscriber made before its proxy.
   */
  connectedPaths?: () => Iterable<string>;
  /** How long an announcement lives without refresh, in ms (default 15000); refreshed every third of it. */
  announceTtlMs?: number;
}

/** How long a change the check saw in the store may take to arrive before we stop waiting for it. */
const IN_FLIGHT_GRACE_MS = 250;
const FIRST_RETRY_MS = 100;

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name}: expected a positive number of milliseconds, got ${value}`);
  return value;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

type LoadOutcome = 'loaded' | 'store-behind' | 'gap';

export class StreamSubscriber extends EventEmitter implements RouteSubscriber {
  readonly replicaId: string;
  readonly table = new MapRouteTable();
  private applied = 0;
  private isReady = false;
  private resyncCount = 0;
  private readonly checkIntervalMs: number;
  private readonly activityFlushMs: number;
  private readonly announceTtlMs: number;
  private readonly log: Logger;

  private subscription: BusSubscription | null = null;
  private started = false;
  private closed = false;
  /** While true, changes wait in `buffer` for the snapshot being loaded. */
  private buffering = false;
  private buffer: RouteChange[] = [];
  private resyncing: Promise<void> | null = null;
  /** Reason for another pass, set when something happens while a resync runs. */
  private resyncAgain: string | null = null;
  /** Ends the resync loop's wait between retries early (reconnect, republish, close). */
  private wake: (() => void) | null = null;
  private storeBehind = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private announcePending = false;
  /** Recorded since the last flush, per route: the latest activity and the latest presence. */
  private activity = new Map<string, number>();
  private presence = new Map<string, number>();
  private connectedPaths: (() => Iterable<string>) | null;
  private connectedViewers: (() => Iterable<string>) | null = null;
  /** Who was connected at flushes not yet written (kept when a write fails). */
  private viewers = new Map<string, number>();
  private readonly versionWaiters = new Set<{ version: number; resolve: (ok: boolean) => void }>();

  constructor(
    private readonly bus: RouteBus,
    logger: Logger,
    options: SubscriberOptions = {},
    private readonly onClosed: () => void = () => undefined,
  ) {
    super();
    this.replicaId = options.replicaId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    if (!/^[A-Za-z0-9._:-]{1,128}$/.test(this.replicaId)) {
      throw new RangeError(`replicaId: expected 1-128 characters of A-Z a-z 0-9 . _ : -, got ${JSON.stringify(this.replicaId)}`);
    }
    this.checkIntervalMs = positive(options.checkIntervalMs, 5000, 'checkIntervalMs');
    this.activityFlushMs = positive(options.activityFlushMs, 5000, 'activityFlushMs');
    this.announceTtlMs = positive(options.announceTtlMs, 15000, 'announceTtlMs');
    this.connectedPaths = options.connectedPaths ?? null;
    this.log = logger.child({ replica: this.replicaId });
  }

  get ready(): boolean {
    return this.isReady;
  }

  get version(): number {
    return this.applied;
  }

  get resyncs(): number {
    return this.resyncCount;
  }

  async start(): Promise<void> {
    if (this.started) return;
    if (this.closed) throw new Error('route subscriber is closed');
    this.started = true;
    // Buffer from the first message on: the snapshot we are about to read decides which to keep.
    this.buffering = true;
    const channels: Channel[] = ['changes', 'resync'];
    let subscription: BusSubscription;
    try {
      subscription = await this.bus.subscribe(channels, {
        onMessage: (channel, raw) => this.onMessage(channel, raw),
        onReconnect: () => {
          this.log.info('route stream reconnected: resyncing');
          void this.resync('reconnect');
        },
      });
    } catch (err) {
      if (this.closed) return; // closed while waiting for the transport: nothing to start
      this.started = false; // the caller may try again
      throw err;
    }
    if (this.closed) {
      await subscription.close();
      return;
    }
    this.subscription = subscription;
    this.every(this.checkIntervalMs, () => void this.checkVersion());
    this.every(this.activityFlushMs, () => void this.flushActivity());
    this.every(this.announceTtlMs / 3, () => this.scheduleAnnounce());
    void this.resync('start');
  }

  /** Resolves true once the table holds `version` or newer, false after `timeoutMs`. */
  waitForVersion(version: number, timeoutMs: number): Promise<boolean> {
    if (this.applied >= version && this.isReady) return Promise.resolve(true);
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const waiter = {
        version,
        resolve: (ok: boolean) => {
          clearTimeout(timer);
          this.versionWaiters.delete(waiter);
          resolve(ok);
        },
      };
      const timer = setTimeout(() => waiter.resolve(false), timeoutMs);
      this.versionWaiters.add(waiter);
    });
  }

  recordActivity(path: string, at: number = Date.now()): void {
    this.keepLatest(this.activity, path, at);
  }

  recordPresence(path: string, at: number = Date.now()): void {
    this.keepLatest(this.presence, path, at);
  }

  setConnectedPaths(source: (() => Iterable<string>) | null): void {
    this.connectedPaths = source;
  }

  setConnectedViewers(source: (() => Iterable<string>) | null): void {
    this.connectedViewers = source;
  }

  private keepLatest(times: Map<string, number>, path: string, at: number): void {
    // Only routes we serve: a flood of unknown paths must not grow this map or the store.
    if (!this.table.routes.has(path)) return;
    const seen = times.get(path);
    if (seen === undefined || seen < at) times.set(path, at);
  }

  /**
   * Writes the recorded activity and presence to the store in one batch (also done every
   * activityFlushMs), after marking every connected path present now.
   */
  async flushActivity(): Promise<void> {
    const connected = this.connectedPaths;
    if (connected !== null) {
      const now = Date.now();
      try {
        for (const path of connected()) this.recordPresence(path, now);
      } catch (err) {
        this.log.warn({ err: errorText(err) }, 'listing connected routes failed; their presence waits for the next flush');
      }
    }
    const viewersNow = this.connectedViewers;
    if (viewersNow !== null) {
      const now = Date.now();
      try {
        for (const key of viewersNow()) {
          const path = parseViewerKey(key)?.path;
          if (path !== undefined && this.table.routes.has(path)) this.viewers.set(key, now);
        }
      } catch (err) {
        this.log.warn({ err: errorText(err) }, 'listing connected viewers failed; they wait for the next flush');
      }
    }
    if (this.activity.size === 0 && this.presence.size === 0 && this.viewers.size === 0) return;
    const activity = this.activity;
    const presence = this.presence;
    const viewers = this.viewers;
    this.activity = new Map();
    this.presence = new Map();
    this.viewers = new Map();
    try {
      await this.bus.mergeTimes({ activity: [...activity], presence: [...presence], ...(viewers.size > 0 ? { viewers: [...viewers] } : {}) });
    } catch (err) {
      // Keep it for the next flush; later times recorded meanwhile win.
      for (const [path, at] of activity) this.recordActivity(path, at);
      for (const [path, at] of presence) this.recordPresence(path, at);
      for (const [key, at] of viewers) if (!this.viewers.has(key)) this.viewers.set(key, at);
      this.log.warn({ err: errorText(err) }, 'route activity flush failed; will retry');
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.onClosed();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.wake?.();
    for (const w of [...this.versionWaiters]) w.resolve(false);
    if (!this.started) return;
    await this.flushActivity();
    await this.bus.withdraw(this.replicaId).catch((err: unknown) => this.log.debug({ err: errorText(err) }, 'withdraw failed'));
    await this.subscription?.close();
    this.subscription = null;
  }

  // --- messages ---------------------------------------------------------------------------

  private onMessage(channel: Channel, raw: string): void {
    if (this.closed) return;
    if (channel === 'changes') {
      this.onChange(raw);
      return;
    }
    const notice = parseControlMessage(raw);
    if (notice === null) {
      this.log.warn({ channel, length: raw.length }, 'malformed control message ignored');
      return;
    }
    // A republish older than our table cannot help us: ignoring it keeps a replica that waits for
    // the store from re-reading it on every notice.
    if (
      notice.kind === 'republished' &&
      (notice.version > this.applied || (this.storeBehind && notice.version === this.applied) || !this.isReady)
    ) {
      void this.resync('republished');
    }
  }

  private onChange(raw: string): void {
    let change: RouteChange;
    try {
      change = parseRouteChange(raw);
    } catch (err) {
      // Never applied, never fatal: we cannot know what it said, so the snapshot decides.
      this.log.warn({ err: errorText(err), length: raw.length }, 'malformed route change ignored; resyncing');
      void this.resync('malformed');
      return;
    }
    if (this.buffering) {
      this.buffer.push(change);
      return;
    }
    if (change.version <= this.applied) return; // already held (replayed or covered by a snapshot)
    if (change.version !== this.applied + 1) {
      this.log.warn({ version: this.applied, received: change.version }, 'gap in route changes; resyncing');
      void this.resync('gap');
      return;
    }
    this.apply(change);
    this.afterVersionChange();
  }

  private apply(change: RouteChange): void {
    const routes = this.table.routes;
    const path = change.op === 'put' ? change.route.path : change.path;
    const before = routes.get(path);
    const after = change.op === 'put' ? change.route : undefined;
    if (after) routes.set(path, after);
    else routes.delete(path);
    this.applied = change.version;
    if (before === after || (before && after && sameRoute(before, after))) return;
    this.emitSafely('change', path, before, after);
  }

  // --- resync -----------------------------------------------------------------------------

  /** Starts a full resync, or asks the running one for another pass. */
  private resync(reason: string): Promise<void> {
    if (this.closed || !this.started) return Promise.resolve();
    if (this.resyncing) {
      this.resyncAgain ??= reason;
      this.wake?.();
      return this.resyncing;
    }
    this.buffering = true;
    this.resyncing = this.runResync(reason)
      .catch((err: unknown) => {
        // A bug, not an outage (those are retried inside): keep serving, the next check retries.
        this.log.error({ err: errorText(err), reason }, 'route resync failed');
      })
      .finally(() => {
        this.resyncing = null;
      });
    return this.resyncing;
  }

  private async runResync(firstReason: string): Promise<void> {
    const startedAt = performance.now();
    let reason = firstReason;
    let retryMs = FIRST_RETRY_MS;
    try {
      while (!this.closed) {
        this.resyncAgain = null;
        let snapshot: StoredSnapshot;
        try {
          snapshot = await this.bus.readSnapshot();
        } catch (err) {
          if (this.closed) return;
          this.log.warn({ err: errorText(err), reason }, 'route snapshot read failed; keeping the current table and retrying');
          await this.pause(retryMs);
          retryMs = Math.min(retryMs * 2, this.checkIntervalMs);
          reason = this.resyncAgain ?? reason;
          continue;
        }
        if (this.closed) return;
        const outcome = this.load(snapshot, reason, startedAt);
        if (outcome === 'store-behind') {
          this.storeBehind = true;
          this.log.warn(
            { version: this.applied, stored: snapshot.version },
            'route store is behind this replica (lost data?): keeping the current table, asking for a republish',
          );
          this.bus
            .publishControl({ kind: 'request', replica: this.replicaId, version: this.applied, reason: 'store-behind' })
            .catch((err: unknown) => this.log.debug({ err: errorText(err) }, 'resync request failed'));
          if (this.resyncAgain === null) await this.pause(retryMs);
          retryMs = Math.min(retryMs * 2, this.checkIntervalMs);
          reason = this.resyncAgain ?? 'store-behind';
          continue;
        }
        this.storeBehind = false;
        if (outcome === 'gap') {
          reason = 'gap';
          continue;
        }
        if (this.resyncAgain === null) return;
        reason = this.resyncAgain;
      }
    } finally {
      this.buffering = false;
      this.buffer = [];
      this.wake = null;
    }
  }

  /**
   * Replaces the table with the snapshot (if it is not older than ours), reports every route
   * that differs, then applies the buffered changes that follow it.
   */
  private load(snapshot: StoredSnapshot, reason: string, startedAt: number): LoadOutcome {
    // A store with no version was never published to (or lost everything): it holds version 0.
    const version = snapshot.version ?? 0;
    if (version < this.applied) return 'store-behind';

    const next = new Map<string, Route>();
    let rejected = 0;
    let firstProblem = '';
    for (const raw of snapshot.routes) {
      try {
        const route = parseRoute(raw);
        next.set(route.path, route);
      } catch (err) {
        rejected++;
        firstProblem ||= errorText(err);
      }
    }
    if (rejected > 0) {
      this.log.error({ rejected, firstProblem, version }, 'malformed routes in the snapshot left out of the table');
    }

    const previous = this.table.routes;
    this.table.routes = next;
    this.applied = version;
    this.resyncCount++;
    for (const [path, after] of next) {
      const before = previous.get(path);
      if (!before || !sameRoute(before, after)) this.emitSafely('change', path, before, after);
    }
    for (const [path, before] of previous) {
      if (!next.has(path)) this.emitSafely('change', path, before, undefined);
    }

    const buffered = this.buffer;
    this.buffer = [];
    let outcome: LoadOutcome = 'loaded';
    for (const change of buffered) {
      if (change.version <= this.applied) continue;
      if (change.version !== this.applied + 1) {
        outcome = 'gap';
        break;
      }
      this.apply(change);
    }
    const durationMs = Math.round((performance.now() - startedAt) * 1000) / 1000;
    this.log.info({ version: this.applied, routes: next.size, reason, durationMs }, 'route table resynced');
    this.emitSafely('resync', this.applied, reason, durationMs);
    if (!this.isReady) {
      this.isReady = true;
      this.emitSafely('ready', this.applied);
    }
    this.afterVersionChange();
    return outcome;
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done(): void {
        clearTimeout(timer);
        if (self.wake === done) self.wake = null;
        resolve();
      }
      this.wake = done;
    });
  }

  /** Compares the stored version with ours; a difference that persists means we missed something. */
  private async checkVersion(): Promise<void> {
    if (this.resyncing || this.closed) return;
    let stored: number;
    try {
      stored = (await this.bus.readVersion()) ?? 0;
    } catch (err) {
      this.log.debug({ err: errorText(err) }, 'route version check failed');
      return;
    }
    if (this.resyncing || this.closed) return;
    if (stored < this.applied) {
      void this.resync('store-behind');
    } else if (stored > this.applied) {
      // The change may be on its way; resync only if it has not arrived after a short grace.
      const applied = this.applied;
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        if (this.applied === applied && !this.closed) {
          this.log.warn({ version: this.applied, stored }, 'route table behind the store; resyncing');
          void this.resync('behind');
        }
      }, Math.min(IN_FLIGHT_GRACE_MS, this.checkIntervalMs));
      timer.unref();
      this.timers.add(timer);
    }
  }

  // --- announcement -----------------------------------------------------------------------

  private afterVersionChange(): void {
    for (const w of [...this.versionWaiters]) if (this.applied >= w.version && this.isReady) w.resolve(true);
    this.scheduleAnnounce();
  }

  /** Announces once for a burst of changes, right after it. Only a ready replica announces. */
  private scheduleAnnounce(): void {
    if (this.announcePending || !this.isReady || this.closed) return;
    this.announcePending = true;
    setImmediate(() => {
      this.announcePending = false;
      if (this.closed) return;
      this.bus
        .announce({ id: this.replicaId, version: this.applied, at: Date.now() }, this.announceTtlMs)
        .catch((err: unknown) => this.log.debug({ err: errorText(err) }, 'replica announcement failed'));
    });
  }

  // --- helpers ----------------------------------------------------------------------------

  private every(ms: number, task: () => void): void {
    const timer = setInterval(task, ms);
    timer.unref();
    this.timers.add(timer);
  }

  private emitSafely<E extends keyof SubscriberEvents>(event: E, ...args: Parameters<SubscriberEvents[E]>): void {
    try {
      this.emit(event, ...args);
    } catch (err) {
      // A listener's failure must not leave the table half-applied.
      this.log.error({ err: errorText(err), event }, 'route subscriber listener threw');
    }
  }
}
