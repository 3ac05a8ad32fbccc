/**
 * The route-stream suite over a real Redis (a private redis-server started by the test), then what
 * only a server can do to us: stop, come back, come back empty, hold 100,000 routes.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { startRedis } from '@deskhub/testkit/redis';
import { createRouteStream, type Route, type RouteStream } from '../src/index.ts';
import { routeStreamOver } from '../src/stream.ts';
import { RedisRouteBus } from '../src/transports/redis.ts';
import { captureLog, eventually, nextEvent, paths, route, type CapturedLog } from './helpers.ts';
import { routeStreamSuite } from './suite.ts';

const WAIT = 15_000;
const server = await startRedis();
t.teardown(() => server.close());
const raw = new Redis(server.url, { maxRetriesPerRequest: null, retryStrategy: (n) => Math.min(n * 50, 300) });
raw.on('error', () => undefined); // the server is stopped on purpose below
t.teardown(() => raw.disconnect());

/** Streams on one key prefix, as separate processes would have them; closed together. */
function streams(log: CapturedLog, keyPrefix = `t-${randomUUID().slice(0, 8)}:`) {
  const made: RouteStream[] = [];
  const buses: RedisRouteBus[] = [];
  const make = (): RouteStream => {
    const bus = new RedisRouteBus({ url: server.url, keyPrefix, logger: log.logger });
    buses.push(bus);
    const stream = routeStreamOver(bus, log.logger);
    made.push(stream);
    return stream;
  };
  const first = make();
  return { first, make, bus: buses[0] as RedisRouteBus, keyPrefix, close: () => Promise.all(made.map((s) => s.close())) };
}

routeStreamSuite(t, 'redis', async (log) => {
  const s = streams(log);
  const k = s.bus.keys;
  return {
    stream: s.first,
    replicaStream: s.make,
    bus: s.bus,
    log,
    injectMessage: async (channel, message) => {
      await raw.publish(k.channel[channel], message);
    },
    writeSilently: async (version, path, json) => {
      const m = raw.multi();
      if (json === null) m.hdel(k.routes, path);
      else m.hset(k.routes, path, json);
      await m.set(k.version, String(version)).exec();
    },
    loseData: async () => {
      await raw.del(k.routes, k.version, k.times.activity, k.times.presence, k.replicas);
    },
    dropSubscriptions: async () => {
      await raw.client('KILL', 'TYPE', 'pubsub');
    },
    close: async () => {
      await s.close();
    },
  };
});

t.test('redis: createRouteStream picks the transport and checks its options', async (t) => {
  const memory = createRouteStream({ logger: captureLog().logger });
  t.equal(memory.transport, 'memory');
  await memory.close();
  const redis = createRouteStream({ redisUrl: server.url, keyPrefix: `t-${randomUUID().slice(0, 8)}:`, logger: captureLog().logger });
  t.equal(redis.transport, 'redis');
  t.equal(await redis.publisher().storedVersion(), null);
  await redis.close();
  t.throws(() => createRouteStream({ redisUrl: 'localhost:6379' }), /redisUrl: expected a redis:\/\//);
  t.throws(() => createRouteStream({ redisUrl: 'redis://u:hunter2@127.0.0.1:1', keyPrefix: 'bad prefix' }), /keyPrefix/);
  let message = '';
  try {
    createRouteStream({ redisUrl: 'http://u:hunter2@x' });
  } catch (err) {
    message = (err as Error).message;
  }
  t.match(message, /redisUrl/, 'a bad URL is refused');
  t.notMatch(message, /hunter2/, 'without repeating its password');
});

t.test('redis: two replicas in separate connections see the same changes in the same order', async (t) => {
  const log = captureLog();
  const s = streams(log);
  t.teardown(() => s.close());
  const publisher = s.first.publisher();
  await publisher.republish({ version: 0, routes: [] });
  const replicas = [s.make().subscriber({ replicaId: 'one' }), s.make().subscriber({ replicaId: 'two' })];
  const seen: string[][] = [[], []];
  replicas.forEach((r, i) => r.on('change', (path, _b, after) => seen[i]?.push(`${path}=${after?.upstream.port ?? '-'}`)));
  await Promise.all(replicas.map(async (r) => { const ready = nextEvent(r, 'ready'); await r.start(); await ready; }));

  const latencies: number[] = [];
  for (let v = 1; v <= 100; v++) {
    const change = v % 7 === 0 ? { version: v, op: 'delete' as const, path: `r${v - 3}` } : { version: v, op: 'put' as const, route: route(`r${v}`, 1000 + v) };
    const sent = performance.now();
    t.equal(await publisher.publish(change), true);
    await Promise.all(replicas.map((r) => r.waitForVersion(v, WAIT)));
    latencies.push(performance.now() - sent);
  }
  t.equal(seen[0]?.length, 100, 'one event per change (86 puts, 14 deletes)');
  t.same(seen[0], seen[1], 'identical sequences');
  t.same(paths(replicas[0]!), paths(replicas[1]!));
  const waited = await publisher.waitForReplicas(100, WAIT);
  t.same(waited, { ok: true, lagging: [] });
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!.toFixed(2);
  t.comment(`publish -> applied on both replicas: p50 ${at(0.5)} ms, p99 ${at(0.99)} ms (100 changes; not asserted)`);
});

t.test('redis: stopped and started again, subscribers keep serving, then resync', async (t) => {
  const log = captureLog();
  const s = streams(log);
  t.teardown(() => s.close());
  const publisher = s.first.publisher();
  await publisher.republish({ version: 3, routes: [route('a'), route('b')] });
  const one = s.make().subscriber({ replicaId: 'one', checkIntervalMs: 200 });
  const two = s.make().subscriber({ replicaId: 'two', checkIntervalMs: 200 });
  for (const r of [one, two]) {
    const ready = nextEvent(r, 'ready');
    await r.start();
    await ready;
  }
  const resynced = [one, two].map((r) => nextEvent(r, 'resync', (_v, reason) => reason === 'reconnect', WAIT));

  await server.stop();
  await t.rejects(publisher.publish({ version: 4, op: 'put', route: route('c') }), 'publishing fails while Redis is down');
  t.same(paths(one), ['a', 'b'], 'replica one keeps serving');
  t.equal(two.table.get('b')?.path, 'b', 'replica two keeps serving');
  t.equal(one.ready && two.ready, true, 'and stays ready');

  await server.start();
  t.same((await Promise.all(resynced)).map(([v]) => v), [3, 3], 'both resynced on reconnect, data kept');
  t.ok(await eventually(async () => publisher.publish({ version: 4, op: 'put', route: route('c') }).catch(() => false), WAIT), 'publishing works again');
  t.ok(await one.waitForVersion(4, WAIT));
  t.ok(await two.waitForVersion(4, WAIT));
  t.same(paths(two), ['a', 'b', 'c']);
  t.ok(log.find('lost its Redis connection').length > 0, 'the outage is logged');
});

t.test('redis: restarted without its data, replicas keep their table and converge after the republish', async (t) => {
  const log = captureLog();
  const s = streams(log);
  t.teardown(() => s.close());
  const publisher = s.first.publisher();
  const database: { version: number; routes: Route[] } = { version: 7, routes: [route('a'), route('b'), route('c')] };
  let requests = 0;
  let answer = false;
  publisher.onResyncRequest(() => {
    requests++;
    if (answer) void publisher.republish(database).catch(() => undefined);
  });
  await publisher.republish(database);
  const replicas = [s.make().subscriber({ checkIntervalMs: 100 }), s.make().subscriber({ checkIntervalMs: 100 })];
  for (const r of replicas) {
    const ready = nextEvent(r, 'ready');
    await r.start();
    await ready;
  }
  const versions: number[] = [];
  for (const r of replicas) r.on('resync', (v) => versions.push(v));

  await server.restart({ loseData: true });
  t.ok(await eventually(() => requests > 0, WAIT), 'the replicas asked for a republish');
  t.equal(await publisher.storedVersion(), null, 'the store is empty');
  t.equal(await publisher.publish({ version: 8, op: 'put', route: route('d') }), false, 'a change cannot land on an empty store');
  for (const r of replicas) {
    t.equal(r.version, 7, 'keeps its version');
    t.same(paths(r), ['a', 'b', 'c'], 'keeps serving its table');
  }

  // The control plane republishes from the database (which has change 8 by now).
  database.version = 8;
  database.routes = [...database.routes, route('d')];
  answer = true;
  for (const r of replicas) t.ok(await r.waitForVersion(8, WAIT), 'converges');
  for (const r of replicas) t.same(paths(r), ['a', 'b', 'c', 'd']);
  t.ok(versions.every((v) => v >= 7), `never went back (resynced to ${[...new Set(versions)].join(', ')})`);
  t.ok(await eventually(async () => (await publisher.replicas()).length === 2, WAIT), 'replicas announce again on the new server');
});

t.test('redis: a 100,000-route snapshot loads', async (t) => {
  const log = captureLog();
  const s = streams(log);
  t.teardown(() => s.close());
  const publisher = s.first.publisher();
  const routes = Array.from({ length: 100_000 }, (_, i) => route(`user${i}-ubuntu-desktop`, 10_000 + (i % 50_000)));
  let started = performance.now();
  t.equal(await publisher.republish({ version: 100_000, routes }), true);
  const publishMs = performance.now() - started;

  const sub = s.make().subscriber();
  const ready = nextEvent(sub, 'ready', () => true, 60_000);
  started = performance.now();
  const cpu = process.cpuUsage();
  await sub.start();
  await ready;
  const loadMs = performance.now() - started;
  const used = process.cpuUsage(cpu);
  const loadCpuMs = (used.user + used.system) / 1000;
  t.equal(sub.table.size, 100_000);
  t.equal(sub.version, 100_000);
  t.same(sub.table.get('user99999-ubuntu-desktop'), routes[99_999]);
  t.comment(`100,000 routes: republish ${publishMs.toFixed(0)} ms; subscriber start to ready ${loadMs.toFixed(0)} ms wall, ${loadCpuMs.toFixed(0)} ms CPU in this process (not asserted)`);
});

t.test('redis: a subscriber started while Redis is down is not ready until it is back', async (t) => {
  const log = captureLog();
  const s = streams(log);
  t.teardown(() => s.close());
  await s.first.publisher().republish({ version: 2, routes: [route('a')] });
  await server.stop();
  const sub = s.make().subscriber();
  const ready = nextEvent(sub, 'ready', () => true, WAIT);
  const started = sub.start();
  await new Promise((r) => setTimeout(r, 200)); // long enough for a wrong "ready" to show
  t.equal(sub.ready, false, 'not ready without a snapshot');
  t.equal(sub.table.size, 0);
  await server.start();
  await started;
  t.same(await ready, [2], 'ready with the stored snapshot once Redis answers');
  t.same(paths(sub), ['a']);
});

t.test('redis: closing a subscriber still waiting for Redis ends cleanly', async (t) => {
  const log = captureLog();
  const s = streams(log);
  await server.stop();
  t.teardown(() => server.start());
  const sub = s.make().subscriber();
  const started = sub.start();
  await s.close();
  await t.resolves(started, 'start() settles without an error once closed');
  t.equal(sub.ready, false);
});
