/**
 * The Redis route bus (ioredis), for any number of proxy processes. Key layout (prefix p):
 *   p+routes           hash  path -> route JSON          (the snapshot)
 *   p+version          string                             (its version)
 *   p+changes          channel of change JSON
 *   p+resync           channel of control messages (republish requests and notices)
 *   p+acks             channel of replica announcements, so a waiting publisher wakes at once
 *   p+replica:<id>     string {id, version, at} with a TTL (one per live replica)
 *   p+replicas         set of announced ids (index of the keys above; expired ones are pruned)
 *   p+activity         hash  path -> epoch ms, merged with max (last activity)
 *   p+presence         hash  path -> epoch ms, merged with max (last time someone was connected)
 *   p+viewers          hash  path TAB role TAB username -> epoch ms, merged with max (who had it open);
 *                      entries of routes deleted are pruned by the reader (pruneTimes)
 * Every write that must be atomic is one Lua script; the snapshot is read in one MULTI.
 */
import { randomUUID } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '@deskhub/config';
import { parseReplicaStatus, TIME_MAPS, type ApplyResult, type BusHandlers, type BusSubscription, type Channel, type ControlMessage, type RouteBus, type StoredSnapshot, type TimeMap, type TimesBatch } from '../bus.ts';
import type { ActivityMap, ReplicaStatus } from '../types.ts';

/** Stores or deletes one route, sets the version and publishes, only if the store holds version - 1. */
const APPLY_CHANGE = `
local stored = tonumber(redis.call('GET', KEYS[2]) or '0')
local version = tonumber(ARGV[1])
if stored >= version then return 0 end
if stored ~= version - 1 then return -1 end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('HDEL', KEYS[4], ARGV[2])
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[6], ARGV[5])
return 1`;

/**
 * Swaps the staged routes in as the snapshot unless the stored version is newer. The staged
 * hash is checked for its expected size first: if Redis lost it meanwhile, nothing changes.
 */
const REPLACE_SNAPSHOT = `
local stored = redis.call('GET', KEYS[3])
if stored and tonumber(stored) > tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 0
end
if redis.call('HLEN', KEYS[1]) ~= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  return -1
end
if tonumber(ARGV[4]) > 0 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`;

const ANNOUNCE = `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1`;

/** Returns id, status, id, status... of live replicas and prunes the index of expired ones. */
const LIST_REPLICAS = `
local ids = redis.call('SMEMBERS', KEYS[1])
local out = {}
for _, id in ipairs(ids) do
  local status = redis.call('GET', ARGV[1] .. id)
  if status then
    out[#out + 1] = id
    out[#out + 1] = status
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out`;

/**
 * Keeps, per time map (one hash per key) and path, the later of the stored and the given time.
 * ARGV, for each key in turn: the number of entries n, then n pairs path, epoch ms.
 */
const MERGE_TIMES = `
local i = 1
for k = 1, #KEYS do
  local n = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, n do
    local seen = redis.call('HGET', KEYS[k], ARGV[i])
    if not seen or tonumber(seen) < tonumber(ARGV[i + 1]) then
      redis.call('HSET', KEYS[k], ARGV[i], ARGV[i + 1])
    end
    i = i + 2
  end
end
return 1`;

/** Fields per HSET while staging a snapshot: bounded commands, no giant single request. */
const STAGE_CHUNK = 2000;
const STAGING_TTL_MS = 120_000;

interface Scripts {
  applyChange(routes: string, version: string, activity: string, presence: string, ...args: string[]): Promise<number>;
  replaceSnapshot(staging: string, routes: string, version: string, ...args: string[]): Promise<number>;
  announce(key: string, set: string, ...args: string[]): Promise<number>;
  listReplicas(set: string, keyPrefix: string): Promise<string[]>;
  mergeTimes(activity: string, presence: string, viewers: string, ...args: string[]): Promise<number>;
}

export interface RedisRouteBusOptions {
  url: string;
  keyPrefix: string;
  logger: Logger;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class RedisRouteBus implements RouteBus {
  readonly transport = 'redis' as const;
  private readonly redis: Redis & Scripts;
  private readonly url: string;
  private readonly log: Logger;
  private readonly connections = new Set<Redis>();
  private readonly onDrop = new Map<Redis, () => void>();
  readonly keys: {
    routes: string;
    version: string;
    times: Record<TimeMap, string>;
    replicas: string;
    replica: string;
    channel: Record<Channel, string>;
  };
  private closed = false;

  constructor(options: RedisRouteBusOptions) {
    if (!/^rediss?:\/\//.test(options.url)) {
      throw new RangeError(`redisUrl: expected a redis:// or rediss:// URL, got ${JSON.stringify(options.url.replace(/\/\/[^@/]*@/, '//***@'))}`);
    }
    this.url = options.url;
    this.log = options.logger;
    const p = options.keyPrefix;
    this.keys = {
      routes: `${p}routes`,
      version: `${p}version`,
      times: { activity: `${p}activity`, presence: `${p}presence`, viewers: `${p}viewers` },
      replicas: `${p}replicas`,
      replica: `${p}replica:`,
      channel: { changes: `${p}changes`, resync: `${p}resync`, acks: `${p}acks` },
    };
    this.redis = this.connect('commands', {
      // Fail a command after two reconnection attempts instead of queueing it for the whole
      // outage: callers keep serving and retry (the subscriber) or report the error (the publisher).
      maxRetriesPerRequest: 2,
    }) as Redis & Scripts;
    this.redis.defineCommand('applyChange', { numberOfKeys: 4, lua: APPLY_CHANGE });
    this.redis.defineCommand('replaceSnapshot', { numberOfKeys: 3, lua: REPLACE_SNAPSHOT });
    this.redis.defineCommand('announce', { numberOfKeys: 2, lua: ANNOUNCE });
    this.redis.defineCommand('listReplicas', { numberOfKeys: 1, lua: LIST_REPLICAS });
    this.redis.defineCommand('mergeTimes', { numberOfKeys: TIME_MAPS.length, lua: MERGE_TIMES });
  }

  async applyChange(version: number, path: string, routeJson: string | null, message: string): Promise<ApplyResult> {
    const k = this.keys;
    const result = await this.redis.applyChange(
      k.routes, k.version, k.times.activity, k.times.presence,
      String(version), path, routeJson ?? '', routeJson === null ? '0' : '1', message, k.channel.changes,
    );
    return result === 1 ? 'applied' : result === 0 ? 'stale' : 'behind';
  }

  async replaceSnapshot(version: number, routes: Array<[string, string]>): Promise<boolean> {
    const k = this.keys;
    const staging = `${k.routes}:staging:${randomUUID()}`;
    if (routes.length > 0) {
      const pipeline = this.redis.pipeline();
      for (let i = 0; i < routes.length; i += STAGE_CHUNK) {
        pipeline.hset(staging, Object.fromEntries(routes.slice(i, i + STAGE_CHUNK)));
        if (i === 0) pipeline.pexpire(staging, STAGING_TTL_MS); // a publisher dying half-way leaves nothing behind
      }
      const results = (await pipeline.exec()) ?? [];
      const failed = results.find(([err]) => err);
      if (failed) throw failed[0] as Error;
    }
    const notice: ControlMessage = { kind: 'republished', version };
    const result = await this.redis.replaceSnapshot(
      staging, k.routes, k.version,
      String(version), k.channel.resync, JSON.stringify(notice), String(routes.length),
    );
    if (result === -1) throw new Error('route snapshot staging was lost before the swap (Redis restarted?); republish again');
    return result === 1;
  }

  async readSnapshot(): Promise<StoredSnapshot> {
    const results = await this.redis.multi().get(this.keys.version).hvals(this.keys.routes).exec();
    if (!results) throw new Error('route snapshot read was aborted');
    const [versionResult, routesResult] = results;
    if (versionResult?.[0]) throw versionResult[0];
    if (routesResult?.[0]) throw routesResult[0];
    return { version: toVersion(versionResult?.[1]), routes: (routesResult?.[1] as string[] | undefined) ?? [] };
  }

  async readVersion(): Promise<number | null> {
    return toVersion(await this.redis.get(this.keys.version));
  }

  async subscribe(channels: Channel[], handlers: BusHandlers): Promise<BusSubscription> {
    const names = channels.map((c) => this.keys.channel[c]);
    const byName = new Map(channels.map((c) => [this.keys.channel[c], c] as const));
    // Each subscription has its own connection, and resubscribes itself after a reconnect (then
    // says so), rather than relying on ioredis doing it silently.
    const connection = this.connect(`subscriber:${channels.join(',')}`, { maxRetriesPerRequest: null, autoResubscribe: false });
    let subscribed = false;
    let closed = false;
    connection.on('message', (name: string, raw: string) => {
      const channel = byName.get(name);
      if (channel && !closed) handlers.onMessage(channel, raw);
    });
    connection.on('ready', () => {
      if (!subscribed || closed) return;
      connection.subscribe(...names).then(
        () => {
          if (!closed) handlers.onReconnect();
        },
        (err: unknown) => this.log.warn({ err: errorText(err) }, 'route stream resubscribe failed'),
      );
    });
    // ioredis leaves a command queued during an outage pending for ever when the connection is
    // closed between two reconnection attempts: closing the bus must end this wait anyway.
    const dropped = new Promise<never>((_, reject) => {
      this.onDrop.set(connection, () => reject(new Error('route stream closed before it could subscribe')));
    });
    dropped.catch(() => undefined);
    try {
      await Promise.race([connection.subscribe(...names), dropped]);
    } catch (err) {
      this.dropConnection(connection);
      throw err;
    }
    subscribed = true;
    return {
      close: async () => {
        closed = true;
        this.dropConnection(connection);
      },
    };
  }

  async publishControl(message: ControlMessage): Promise<void> {
    await this.redis.publish(this.keys.channel.resync, JSON.stringify(message));
  }

  async announce(status: ReplicaStatus, ttlMs: number): Promise<void> {
    await this.redis.announce(
      this.keys.replica + status.id, this.keys.replicas,
      JSON.stringify(status), String(Math.max(1, Math.round(ttlMs))), status.id, this.keys.channel.acks,
    );
  }

  async withdraw(replicaId: string): Promise<void> {
    await this.redis.multi().del(this.keys.replica + replicaId).srem(this.keys.replicas, replicaId).exec();
  }

  async listReplicas(): Promise<ReplicaStatus[]> {
    const flat = await this.redis.listReplicas(this.keys.replicas, this.keys.replica);
    const live: ReplicaStatus[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const status = parseReplicaStatus(flat[i + 1] as string, flat[i] as string);
      if (status) live.push(status);
    }
    return live;
  }

  async mergeTimes(batch: TimesBatch): Promise<void> {
    const args: string[] = [];
    for (const map of TIME_MAPS) {
      const entries = batch[map] ?? [];
      args.push(String(entries.length));
      for (const [path, at] of entries) args.push(path, String(Math.round(at)));
    }
    if (args.length === TIME_MAPS.length) return; // nothing in any map
    await this.redis.mergeTimes(this.keys.times.activity, this.keys.times.presence, this.keys.times.viewers, ...args);
  }

  async forgetTimes(map: TimeMap, keys: string[]): Promise<void> {
    if (keys.length > 0) await this.redis.hdel(this.keys.times[map], ...keys);
  }

  async readTimes(map: TimeMap): Promise<ActivityMap> {
    const raw = await this.redis.hgetall(this.keys.times[map]);
    const times: ActivityMap = new Map();
    for (const [path, at] of Object.entries(raw)) {
      const ms = Number(at);
      if (Number.isFinite(ms)) times.set(path, ms);
    }
    return times;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const connection of [...this.connections]) {
      if (connection === this.redis && connection.status === 'ready') {
        // Let commands already sent (a last activity flush) finish.
        await Promise.race([connection.quit().catch(() => undefined), new Promise((r) => setTimeout(r, 1000).unref())]);
      }
      this.dropConnection(connection);
    }
  }

  private connect(role: string, extra: RedisOptions): Redis {
    const connection = new Redis(this.url, {
      // Redis back after a restart is noticed within half a second.
      retryStrategy: (attempt) => Math.min(attempt * 50, 500),
      connectionName: `deskhub-route-stream-${role}`.replace(/[^A-Za-z0-9_-]/g, '_'),
      ...extra,
    });
    let down = false;
    connection.on('error', (err: Error) => {
      if (!down) this.log.warn({ err: errorText(err), role }, 'route stream lost its Redis connection; reconnecting');
      down = true;
    });
    connection.on('ready', () => {
      if (down) this.log.info({ role }, 'route stream reconnected to Redis');
      down = false;
    });
    this.connections.add(connection);
    return connection;
  }

  private dropConnection(connection: Redis): void {
    this.onDrop.get(connection)?.();
    this.onDrop.delete(connection);
    this.connections.delete(connection);
    connection.disconnect(false);
  }
}

function toVersion(raw: unknown): number | null {
  if (raw === null || raw === undefined) return null;
  const version = Number(raw);
  return Number.isSafeInteger(version) ? version : null;
}
