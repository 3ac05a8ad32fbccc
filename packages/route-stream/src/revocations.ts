/**
 * Session revocations, beside the route stream: when a session ends (logout, an admin), every
 * proxy must refuse the access tokens it already handed out, at once. Deliberately not versioned
 * like routes: a revocation is idempotent and only ever extends, so it travels as a Redis sorted
 * set `<prefix>revoked` (member: session id, score: `until`, epoch ms) plus a channel
 * `<prefix>revocations`. A proxy subscribes, then loads every entry still in force, and loads
 * them again after each reconnect, so a message missed while Redis was unreachable is not lost.
 * Entries past `until` are dropped by the publisher (the tokens they stopped have expired anyway).
 * Without Redis (the embedded start) the control plane calls its in-process proxy directly.
 */
import { Redis } from 'ioredis';
import type { Logger } from '@deskhub/config';

export interface Revocation {
  sessionId: string;
  /** Epoch ms: no token of the session is valid before this; after it, the entry may be forgotten. */
  until: number;
}

export interface RevocationChannel {
  /** Stores the revocation (never shortening one already stored) and tells every subscriber. */
  publish(revocation: Revocation): Promise<void>;
  /**
   * Calls `listener` for every revocation in force now and for every later one (again after a
   * reconnect: listeners must be idempotent). Resolves once subscribed and loaded.
   */
  subscribe(listener: (revocation: Revocation) => void): Promise<void>;
  close(): Promise<void>;
}

const SESSION_ID = /^[A-Za-z0-9_-]{1,128}$/;

function parse(raw: string): Revocation | null {
  try {
    const value = JSON.parse(raw) as Partial<Revocation>;
    if (typeof value.sessionId !== 'string' || !SESSION_ID.test(value.sessionId)) return null;
    if (typeof value.until !== 'number' || !Number.isSafeInteger(value.until)) return null;
    return { sessionId: value.sessionId, until: value.until };
  } catch {
    return null;
  }
}

export function createRevocationChannel(options: { redisUrl: string; keyPrefix?: string; logger: Logger }): RevocationChannel {
  const prefix = options.keyPrefix ?? 'deskhub:';
  const setKey = `${prefix}revoked`;
  const channel = `${prefix}revocations`;
  const log = options.logger.child({ component: 'revocations' });
  const connections: Redis[] = [];
  const connect = (role: string, extra: Record<string, unknown> = {}): Redis => {
    const connection = new Redis(options.redisUrl, { retryStrategy: (n) => Math.min(n * 50, 500), connectionName: `deskhub-revocations-${role}`, ...extra });
    connection.on('error', (err: Error) => log.warn({ err: err.message, role }, 'revocations: Redis connection lost; reconnecting'));
    connections.push(connection);
    return connection;
  };
  let commands: Redis | null = null;
  const command = (): Redis => (commands ??= connect('commands'));

  return {
    async publish(revocation) {
      if (!SESSION_ID.test(revocation.sessionId)) throw new RangeError('revocation: malformed session id');
      await command()
        .multi()
        // GT: a later `until` replaces an earlier one, never the reverse.
        .zadd(setKey, 'GT', revocation.until, revocation.sessionId)
        .zremrangebyscore(setKey, '-inf', Date.now())
        .publish(channel, JSON.stringify(revocation))
        .exec();
    },
    async subscribe(listener) {
      const load = async (): Promise<void> => {
        const flat = await command().zrangebyscore(setKey, Date.now(), '+inf', 'WITHSCORES');
        for (let i = 0; i + 1 < flat.length; i += 2) listener({ sessionId: flat[i]!, until: Number(flat[i + 1]) });
      };
      const subscriber = connect('subscriber', { autoResubscribe: false, maxRetriesPerRequest: null });
      let subscribed = false;
      subscriber.on('message', (_name: string, raw: string) => {
        const revocation = parse(raw);
        if (revocation) listener(revocation);
        else log.warn('revocations: ignored a malformed message');
      });
      subscriber.on('ready', () => {
        if (!subscribed) return;
        // Messages sent while we were away are in the set: subscribe again, then reload it.
        subscriber.subscribe(channel).then(load).catch((err: unknown) => log.warn({ err: String(err) }, 'revocations: resubscribe failed'));
      });
      await subscriber.subscribe(channel);
      subscribed = true;
      await load();
    },
    async close() {
      // quit() lets commands already sent finish; a connection that is not up is just dropped.
      const all = connections.splice(0);
      await Promise.all(all.map((c) => (c.status === 'ready' ? c.quit().then(() => undefined, () => c.disconnect(false)) : c.disconnect(false))));
    },
  };
}
