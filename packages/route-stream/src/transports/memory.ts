/**
 * The in-process route bus, for the embedded start (one process, no Redis). Same semantics as the
 * Redis transport: messages are delivered asynchronously and in order (setImmediate, like a socket
 * read), announcements expire, and the snapshot is stored as JSON text.
 */
import { TIME_MAPS, type ApplyResult, type BusHandlers, type BusSubscription, type Channel, type ControlMessage, type RouteBus, type StoredSnapshot, type TimeMap, type TimesBatch } from '../bus.ts';
import type { ActivityMap, ReplicaStatus } from '../types.ts';

interface Listener {
  channels: Set<Channel>;
  handlers: BusHandlers;
}

export class MemoryRouteBus implements RouteBus {
  readonly transport = 'memory' as const;
  private version: number | null = null;
  private routes = new Map<string, string>();
  private readonly replicas = new Map<string, { status: ReplicaStatus; expiresAt: number }>();
  private readonly times: Record<TimeMap, ActivityMap> = { activity: new Map(), presence: new Map(), viewers: new Map() };
  private readonly listeners = new Set<Listener>();
  private closed = false;

  async applyChange(version: number, path: string, routeJson: string | null, message: string): Promise<ApplyResult> {
    this.assertOpen();
    const stored = this.version ?? 0;
    if (stored >= version) return 'stale';
    if (stored !== version - 1) return 'behind';
    if (routeJson === null) {
      this.routes.delete(path);
      this.times.activity.delete(path);
      this.times.presence.delete(path);
      for (const key of this.times.viewers.keys()) if (key.startsWith(`${path}\t`)) this.times.viewers.delete(key);
    } else {
      this.routes.set(path, routeJson);
    }
    this.version = version;
    this.deliver('changes', message);
    return 'applied';
  }

  async replaceSnapshot(version: number, routes: Array<[string, string]>): Promise<boolean> {
    this.assertOpen();
    if (this.version !== null && this.version > version) return false;
    this.routes = new Map(routes);
    this.version = version;
    this.deliver('resync', JSON.stringify({ kind: 'republished', version } satisfies ControlMessage));
    return true;
  }

  async readSnapshot(): Promise<StoredSnapshot> {
    this.assertOpen();
    return { version: this.version, routes: [...this.routes.values()] };
  }

  async readVersion(): Promise<number | null> {
    this.assertOpen();
    return this.version;
  }

  async subscribe(channels: Channel[], handlers: BusHandlers): Promise<BusSubscription> {
    this.assertOpen();
    const listener: Listener = { channels: new Set(channels), handlers };
    this.listeners.add(listener);
    return {
      close: async () => {
        this.listeners.delete(listener);
      },
    };
  }

  async publishControl(message: ControlMessage): Promise<void> {
    this.assertOpen();
    this.deliver('resync', JSON.stringify(message));
  }

  async announce(status: ReplicaStatus, ttlMs: number): Promise<void> {
    this.assertOpen();
    this.replicas.set(status.id, { status: { ...status }, expiresAt: Date.now() + ttlMs });
    this.deliver('acks', JSON.stringify(status));
  }

  async withdraw(replicaId: string): Promise<void> {
    this.replicas.delete(replicaId);
  }

  async listReplicas(): Promise<ReplicaStatus[]> {
    this.assertOpen();
    const now = Date.now();
    const live: ReplicaStatus[] = [];
    for (const [id, entry] of this.replicas) {
      if (entry.expiresAt <= now) this.replicas.delete(id);
      else live.push({ ...entry.status });
    }
    return live;
  }

  async mergeTimes(batch: TimesBatch): Promise<void> {
    this.assertOpen();
    for (const map of TIME_MAPS) {
      const stored = this.times[map];
      for (const [path, at] of batch[map] ?? []) {
        const seen = stored.get(path);
        if (seen === undefined || seen < at) stored.set(path, at);
      }
    }
  }

  async forgetTimes(map: TimeMap, keys: string[]): Promise<void> {
    this.assertOpen();
    for (const key of keys) this.times[map].delete(key);
  }

  async readTimes(map: TimeMap): Promise<ActivityMap> {
    this.assertOpen();
    return new Map(this.times[map]);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
  }

  /** Test hook: sends a raw message on a channel without touching the store (a forged or malformed message). */
  injectMessage(channel: Channel, raw: string): void {
    this.deliver(channel, raw);
  }

  /** Test hook: changes the store without publishing anything (a message every subscriber missed). */
  writeSilently(version: number, path: string, routeJson: string | null): void {
    if (routeJson === null) this.routes.delete(path);
    else this.routes.set(path, routeJson);
    this.version = version;
  }

  /** Test hook: the store loses everything, as a Redis restarted without its data. */
  loseData(): void {
    this.version = null;
    this.routes = new Map();
    this.replicas.clear();
    for (const map of TIME_MAPS) this.times[map].clear();
  }

  /** Test hook: every subscription sees a reconnect. */
  simulateReconnect(): void {
    for (const l of [...this.listeners]) setImmediate(() => this.listeners.has(l) && l.handlers.onReconnect());
  }

  private deliver(channel: Channel, raw: string): void {
    for (const l of this.listeners) {
      if (!l.channels.has(channel)) continue;
      // One setImmediate per message keeps them in publication order, delivered after the
      // publisher's await, as a socket would.
      setImmediate(() => {
        if (this.listeners.has(l)) l.handlers.onMessage(channel, raw);
      });
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('route stream is closed');
  }
}
