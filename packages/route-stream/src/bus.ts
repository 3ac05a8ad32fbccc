/**
 * The primitives a route-stream transport provides. The publisher and the subscriber are written
 * once over this interface; `transports/memory.ts` and `transports/redis.ts` implement it with the
 * same semantics, and one test suite runs against both.
 *
 * The bus carries routes and messages as JSON text in both transports: the memory transport then
 * shares no mutable object between publisher and subscribers, and every message is checked by the
 * same parser on the way in.
 */
import type { ActivityMap, ReplicaStatus } from './types.ts';

/**
 * The time maps the subscribers merge into the store, latest wins: per route `activity` (what a
 * person did) and `presence` (someone connected: a request, or a WebSocket open at a flush); and
 * `viewers`, per route and person (`viewerKey`): who had it open at a flush, and as what.
 */
export type TimeMap = 'activity' | 'presence' | 'viewers';
export const TIME_MAPS: readonly TimeMap[] = ['activity', 'presence', 'viewers'];

/** A `viewers` entry's key: route path, role and username, tab-separated (none of them holds a tab). */
export function viewerKey(path: string, role: string, username: string): string {
  return `${path}\t${role}\t${username}`;
}

/** The parts of a `viewerKey`, or null for a key that is not one. */
export function parseViewerKey(key: string): { path: string; role: string; username: string } | null {
  const parts = key.split('\t');
  return parts.length === 3 && parts.every((p) => p.length > 0) ? { path: parts[0]!, role: parts[1]!, username: parts[2]! } : null;
}
/** Entries to merge, per map; a map left out or empty is not touched. */
export type TimesBatch = Partial<Record<TimeMap, Array<[path: string, at: number]>>>;

/** Outcome of applying one change to the stored snapshot. */
export type ApplyResult =
  /** stored version was change.version - 1: snapshot updated and change published */
  | 'applied'
  /** stored version is already change.version or newer: nothing done */
  | 'stale'
  /** stored version is older than change.version - 1, or missing (the store lost its data): nothing done, a republish is needed */
  | 'behind';

export interface StoredSnapshot {
  /** null when the store holds no snapshot at all (never published, or Redis lost its data). */
  version: number | null;
  /** Route JSON texts, unchecked. */
  routes: string[];
}

/** Channels besides the change channel. */
export type ControlChannel =
  /** proxies asking for a republish, and the publisher announcing one: see ControlMessage */
  | 'resync'
  /** replica announcements (ReplicaStatus JSON), so a waiting publisher wakes at once */
  | 'acks';
export type Channel = 'changes' | ControlChannel;

export type ControlMessage =
  | { kind: 'request'; replica: string; version: number; reason: string }
  | { kind: 'republished'; version: number };

export interface BusHandlers {
  /** A message arrived on one of the subscribed channels, as sent (unchecked). */
  onMessage(channel: Channel, raw: string): void;
  /** The subscription was lost and is back: messages may have been missed in between. */
  onReconnect(): void;
}

export interface BusSubscription {
  close(): Promise<void>;
}

export interface RouteBus {
  readonly transport: 'redis' | 'memory';
  /**
   * Atomically: if the stored version is `version - 1` (a missing store counts as 0), store or
   * delete the route, set the version, and publish `message` on the change channel.
   */
  applyChange(version: number, path: string, routeJson: string | null, message: string): Promise<ApplyResult>;
  /**
   * Atomically replaces every route and the version unless the stored version is newer, then
   * publishes a `republished` notice. Returns whether it replaced.
   */
  replaceSnapshot(version: number, routes: Array<[path: string, json: string]>): Promise<boolean>;
  /** Version and routes read at one instant. */
  readSnapshot(): Promise<StoredSnapshot>;
  readVersion(): Promise<number | null>;
  /** Resolves once the subscription is active: every later message on `channels` reaches `handlers`. */
  subscribe(channels: Channel[], handlers: BusHandlers): Promise<BusSubscription>;
  publishControl(message: ControlMessage): Promise<void>;
  /** Stores the replica's status for `ttlMs` and publishes it on the ack channel. */
  announce(status: ReplicaStatus, ttlMs: number): Promise<void>;
  withdraw(replicaId: string): Promise<void>;
  /** Replicas whose announcement has not expired. */
  listReplicas(): Promise<ReplicaStatus[]>;
  /**
   * Keeps, per map and path, the later of the stored and the given time. One round trip for the
   * whole batch, every map in it. A route's times go with its delete (applyChange).
   */
  mergeTimes(batch: TimesBatch): Promise<void>;
  /** One per-route time map as stored (the latest any replica flushed). */
  readTimes(map: TimeMap): Promise<ActivityMap>;
  /** Removes entries from a time map (the reader's pruning of `viewers`). */
  forgetTimes(map: TimeMap, keys: string[]): Promise<void>;
  close(): Promise<void>;
}

/** Parses a control message; null when it is not one (logged by the caller). */
export function parseControlMessage(raw: string): ControlMessage | null {
  let m: unknown;
  try {
    m = JSON.parse(raw);
  } catch {
    return null;
  }
  if (typeof m !== 'object' || m === null) return null;
  const o = m as Record<string, unknown>;
  if (typeof o.version !== 'number' || !Number.isSafeInteger(o.version)) return null;
  if (o.kind === 'republished') return { kind: 'republished', version: o.version };
  if (o.kind === 'request' && typeof o.replica === 'string' && typeof o.reason === 'string') {
    return { kind: 'request', replica: o.replica, version: o.version, reason: o.reason };
  }
  return null;
}

/** Parses a replica status (from the ack channel or an announcement key); null when malformed. */
export function parseReplicaStatus(raw: string, id?: string): ReplicaStatus | null {
  let m: unknown;
  try {
    m = JSON.parse(raw);
  } catch {
    return null;
  }
  if (typeof m !== 'object' || m === null) return null;
  const o = m as Record<string, unknown>;
  const replica = id ?? o.id;
  if (typeof replica !== 'string' || typeof o.version !== 'number' || typeof o.at !== 'number') return null;
  return { id: replica, version: o.version, at: o.at };
}
