/**
 * The control-plane side of the route stream: the only writer of routes. Each change is checked
 * against the schema, then stored and published in one atomic step of the transport.
 */
import type { Logger } from '@deskhub/config';
import type { RoutePublisher } from './api.ts';
import { parseControlMessage, parseViewerKey, type BusSubscription, type Channel, type RouteBus } from './bus.ts';
import { RouteMessageError, parseRoute, parseRouteChange } from './schema.ts';
import type { ActivityMap, ReplicaStatus, RouteChange, Snapshot, Viewer } from './types.ts';

/** Requests for a republish closer together than this reach the listeners as one call. */
const RESYNC_REQUEST_COALESCE_MS = 250;
/** waitForReplicas re-reads the replicas at least this often, to notice expired announcements. */
const REPLICA_POLL_MS = 100;
/** Viewer entries older than this are removed when read: nobody asks who had a desktop open a day ago. */
const VIEWERS_KEPT_MS = 24 * 3_600_000;

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class StreamPublisher implements RoutePublisher {
  private readonly resyncListeners: Array<() => void> = [];
  private control: Promise<BusSubscription> | null = null;
  private readonly ackWaiters = new Set<() => void>();
  private resyncTimer: NodeJS.Timeout | null = null;
  private resyncPending = false;
  private closed = false;

  constructor(
    private readonly bus: RouteBus,
    private readonly log: Logger,
    private readonly onClosed: () => void = () => undefined,
  ) {}

  /**
   * Stores and publishes one change if the store holds exactly the version before it. A change
   * the store already has returns false. When the store is behind (it lost its data, or missed
   * changes), returns false and calls the onResyncRequest listeners: the caller republishes from
   * the database, which includes this change.
   */
  async publish(change: RouteChange): Promise<boolean> {
    const checked = parseRouteChange(change);
    const path = checked.op === 'put' ? checked.route.path : checked.path;
    const routeJson = checked.op === 'put' ? JSON.stringify(checked.route) : null;
    const result = await this.bus.applyChange(checked.version, path, routeJson, JSON.stringify(checked));
    if (result === 'behind') {
      this.log.warn({ version: checked.version }, 'route store is behind this change (lost data?): a republish is needed');
      this.requestResync();
    }
    return result === 'applied';
  }

  async republish(snapshot: Snapshot): Promise<boolean> {
    const version = snapshot.version;
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 0) {
      throw new RouteMessageError('snapshot.version', `expected an integer >= 0, got ${String(version)}`);
    }
    const entries = new Map<string, string>();
    for (const raw of snapshot.routes) {
      const route = parseRoute(raw);
      if (entries.has(route.path)) throw new RouteMessageError('snapshot.routes', `path "${route.path}" appears twice`);
      entries.set(route.path, JSON.stringify(route));
    }
    const replaced = await this.bus.replaceSnapshot(version, [...entries]);
    if (replaced) this.log.info({ version, routes: entries.size }, 'route snapshot republished');
    else this.log.info({ version }, 'route snapshot not republished: the store holds a newer version');
    return replaced;
  }

  storedVersion(): Promise<number | null> {
    return this.bus.readVersion();
  }

  replicas(): Promise<ReplicaStatus[]> {
    return this.bus.listReplicas();
  }

  async waitForReplicas(version: number, timeoutMs: number): Promise<{ ok: boolean; lagging: ReplicaStatus[] }> {
    const deadline = Date.now() + Math.max(0, timeoutMs);
    // Listen for acknowledgements before the first look, so one sent in between still wakes us;
    // if the transport cannot subscribe in time, polling alone still answers within the timeout.
    let waited: NodeJS.Timeout | undefined;
    await Promise.race([
      this.controlSubscription().catch(() => undefined),
      new Promise((resolve) => (waited = setTimeout(resolve, Math.max(0, timeoutMs)))),
    ]);
    clearTimeout(waited);
    for (;;) {
      const lagging = (await this.bus.listReplicas()).filter((r) => r.version < version);
      if (lagging.length === 0) return { ok: true, lagging };
      const left = deadline - Date.now();
      if (left <= 0 || this.closed) return { ok: false, lagging };
      await this.nextAck(Math.min(left, REPLICA_POLL_MS));
    }
  }

  readActivity(): Promise<ActivityMap> {
    return this.bus.readTimes('activity');
  }

  readPresence(): Promise<ActivityMap> {
    return this.bus.readTimes('presence');
  }

  async readViewers(): Promise<Viewer[]> {
    const times = await this.bus.readTimes('viewers');
    const viewers: Viewer[] = [];
    const stale: string[] = [];
    const keepAfter = Date.now() - VIEWERS_KEPT_MS;
    for (const [key, at] of times) {
      const parsed = parseViewerKey(key);
      if (parsed === null || at < keepAfter) stale.push(key);
      else viewers.push({ ...parsed, at });
    }
    // Nothing else removes the entries of people gone long ago (or of deleted routes).
    if (stale.length > 0) await this.bus.forgetTimes('viewers', stale).catch((err: unknown) => this.log.warn({ err: errorText(err) }, 'pruning old viewer entries failed'));
    return viewers;
  }

  onResyncRequest(listener: () => void): void {
    this.resyncListeners.push(listener);
    this.controlSubscription().catch((err: unknown) => this.log.error({ err: errorText(err) }, 'route resync channel subscription failed'));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.onClosed();
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
    for (const wake of [...this.ackWaiters]) wake();
    const control = this.control;
    this.control = null;
    if (control) await (await control.catch(() => null))?.close();
  }

  private controlSubscription(): Promise<BusSubscription> {
    if (this.closed) return Promise.reject(new Error('route publisher is closed'));
    this.control ??= this.bus.subscribe(['resync', 'acks'], {
      onMessage: (channel: Channel, raw: string) => {
        if (channel === 'acks') {
          for (const wake of [...this.ackWaiters]) wake();
          return;
        }
        const message = parseControlMessage(raw);
        if (message?.kind === 'request') {
          this.log.info({ replica: message.replica, version: message.version, reason: message.reason }, 'a replica asks for a route republish');
          this.requestResync();
        }
      },
      // Requests sent while we were disconnected are lost; the replicas repeat them until served.
      onReconnect: () => undefined,
    });
    const control = this.control;
    control.catch(() => {
      if (this.control === control) this.control = null; // try again next time
    });
    return control;
  }

  private nextAck(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.ackWaiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.ackWaiters.add(wake);
    });
  }

  /** Calls the listeners now, then at most once per coalescing window for requests that follow. */
  private requestResync(): void {
    if (this.closed) return;
    if (this.resyncTimer) {
      this.resyncPending = true;
      return;
    }
    this.callResyncListeners();
    const settle = (): void => {
      if (this.resyncPending && !this.closed) {
        this.resyncPending = false;
        this.callResyncListeners();
        this.resyncTimer = setTimeout(settle, RESYNC_REQUEST_COALESCE_MS);
        this.resyncTimer.unref();
      } else {
        this.resyncTimer = null;
      }
    };
    this.resyncTimer = setTimeout(settle, RESYNC_REQUEST_COALESCE_MS);
    this.resyncTimer.unref();
  }

  private callResyncListeners(): void {
    for (const listener of this.resyncListeners) {
      try {
        listener();
      } catch (err) {
        this.log.error({ err: errorText(err) }, 'route resync listener threw');
      }
    }
  }
}
