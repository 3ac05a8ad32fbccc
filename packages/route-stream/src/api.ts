/** Public interfaces of the route stream. Implementations: see transports/. */
import type { ActivityMap, ReplicaStatus, Route, RouteChange, Snapshot, Viewer } from './types.ts';

/** Read-only view of the routes a proxy holds. Lookup is a Map get: constant cost. */
export interface RouteTable {
  get(path: string): Route | undefined;
  readonly size: number;
  values(): IterableIterator<Route>;
}

export interface SubscriberEvents {
  /** A route was added, replaced or removed (by a change or by a resync). */
  change: (path: string, before: Route | undefined, after: Route | undefined) => void;
  /**
   * A full resync finished, `durationMs` after it began (snapshot read, parsed and swapped in,
   * retries of a failed read included).
   */
  resync: (version: number, reason: string, durationMs: number) => void;
  /** The first snapshot is loaded: the proxy may report ready. */
  ready: (version: number) => void;
}

/** Proxy side. */
export interface RouteSubscriber {
  /** Subscribes, loads the snapshot, applies buffered newer changes. Resolves once subscribed (not necessarily ready). */
  start(): Promise<void>;
  readonly ready: boolean;
  /** Version of the last applied change or snapshot; 0 before the first snapshot. */
  readonly version: number;
  readonly table: RouteTable;
  /** Number of full resyncs since start (for metrics). */
  readonly resyncs: number;
  on<E extends keyof SubscriberEvents>(event: E, listener: SubscriberEvents[E]): this;
  off<E extends keyof SubscriberEvents>(event: E, listener: SubscriberEvents[E]): this;
  /** Records activity on a route in memory; flushed in batches every few seconds. No I/O here. */
  recordActivity(path: string, at?: number): void;
  /**
   * Records that someone is connected to a route (a request reached it) in memory; flushed with
   * the activity. No I/O here.
   */
  recordPresence(path: string, at?: number): void;
  /**
   * Sets (null: clears) what lists the routes someone is connected to right now, as the
   * `connectedPaths` option does: called at each flush, each path it yields gets presence = now.
   */
  setConnectedPaths(source: (() => Iterable<string>) | null): void;
  /**
   * Sets (null: clears) what lists who is connected right now, as `viewerKey(path, role, username)`
   * strings: called at each flush, each gets the time of that flush in the `viewers` map.
   */
  setConnectedViewers(source: (() => Iterable<string>) | null): void;
  /** Name this replica announces itself under (see RoutePublisher.replicas). */
  readonly replicaId: string;
  /** Resolves true once the table is ready and holds `version` or newer; false after `timeoutMs` or on close. */
  waitForVersion(version: number, timeoutMs: number): Promise<boolean>;
  /**
   * Writes the recorded activity and presence now, in one batch with one round trip (also done
   * every few seconds), after marking the connected routes present.
   */
  flushActivity(): Promise<void>;
  /** Stops timers, flushes activity and presence, withdraws the replica announcement, closes connections. */
  close(): Promise<void>;
}

/** Control-plane side. The only writer of routes. */
export interface RoutePublisher {
  /** Applies one change to the snapshot and publishes it, atomically; ignored if not newer. Returns whether applied. */
  publish(change: RouteChange): Promise<boolean>;
  /** Replaces the whole snapshot (republish from the database) unless the stored one is newer. */
  republish(snapshot: Snapshot): Promise<boolean>;
  /** Version of the stored snapshot, or null when the store has none (e.g. Redis lost its data). */
  storedVersion(): Promise<number | null>;
  /** Live replicas (announcement not expired). */
  replicas(): Promise<ReplicaStatus[]>;
  /**
   * Waits until every live replica has applied `version` (or newer). Resolves with ok=false and
   * the laggards when the timeout passes. With no live replica, ok is true at once.
   */
  waitForReplicas(version: number, timeoutMs: number): Promise<{ ok: boolean; lagging: ReplicaStatus[] }>;
  /** Latest activity per route as seen by any replica (merged). */
  readActivity(): Promise<ActivityMap>;
  /**
   * Latest presence per route as seen by any replica (merged): the last request, or the last
   * flush at which a WebSocket of the route was open. A route never connected to is absent.
   */
  readPresence(): Promise<ActivityMap>;
  /** Who had each route open at the proxies' recent flushes (entries older than a day are pruned as they are read). */
  readViewers(): Promise<Viewer[]>;
  /** Called when a proxy asks for a full republish (it found the store behind its own table). */
  onResyncRequest(listener: () => void): void;
  close(): Promise<void>;
}
