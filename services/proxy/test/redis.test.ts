/**
 * Proxy replicas on one real Redis (a private redis-server): the same changes everywhere, and
 * the route table surviving what a Redis server can do: stop, come back, come back empty; a
 * change that never arrived; a proxy restart; a replica that joins late. The test plays the
 * control plane: it owns the routes and publishes them.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import t, { type Test } from 'tap';
import { startRedis } from '@deskhub/testkit/redis';
import { createRouteStream, type Route, type RoutePublisher, type RouteSubscriber } from '@deskhub/route-stream';
import { startProxy, type RunningProxy } from '../src/index.ts';
import { closedPort, makeRoute, send, silentLogger, startUpstream, waitForSubscriber, type TestUpstream } from './helpers.ts';

const WAIT_MS = 15_000;

function redisCli(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), ...args], { timeout: 5000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout.trim()),
    );
  });
}

const redis = await startRedis();
t.teardown(() => redis.close());

interface Replica {
  name: string;
  proxy: RunningProxy;
  subscriber: RouteSubscriber;
  /** Every version the replica reported, in order (from resync and change events). */
  versions: number[];
  close(): Promise<void>;
}

async function startReplica(t: Test, keyPrefix: string, name: string): Promise<Replica> {
  const stream = createRouteStream({ redisUrl: redis.url, keyPrefix, logger: silentLogger });
  const subscriber = stream.subscriber({ replicaId: name, checkIntervalMs: 200, announceTtlMs: 1500 });
  const proxy = await startProxy({ subscriber, port: 0, authMode: 'dev', logger: silentLogger });
  const versions: number[] = [];
  subscriber.on('resync', (v) => versions.push(v));
  subscriber.on('change', () => versions.push(subscriber.version));
  const replica: Replica = {
    name,
    proxy,
    subscriber,
    versions,
    async close() {
      await proxy.close();
      await stream.close();
    },
  };
  t.teardown(() => replica.close());
  return replica;
}

/** The control plane's side: the source of truth for routes, and the publisher. */
class Routes {
  version = 0;
  readonly routes = new Map<string, Route>();
  constructor(readonly publisher: RoutePublisher) {}
  async put(route: Route): Promise<number> {
    this.routes.set(route.path, route);
    await this.publisher.publish({ version: ++this.version, op: 'put', route });
    return this.version;
  }
  async remove(path: string): Promise<number> {
    this.routes.delete(path);
    await this.publisher.publish({ version: ++this.version, op: 'delete', path });
    return this.version;
  }
  async republish(): Promise<void> {
    await this.publisher.republish({ version: this.version, routes: [...this.routes.values()] });
  }
}

async function control(t: Test): Promise<{ routes: Routes; keyPrefix: string; a: TestUpstream; b: TestUpstream }> {
  const keyPrefix = `proxy-${randomUUID().slice(0, 8)}:`;
  const stream = createRouteStream({ redisUrl: redis.url, keyPrefix, logger: silentLogger });
  t.teardown(() => stream.close());
  const a = await startUpstream((_req, res) => res.end('upstream-a'));
  t.teardown(() => a.close());
  const b = await startUpstream((_req, res) => res.end('upstream-b'));
  t.teardown(() => b.close());
  return { routes: new Routes(stream.publisher()), keyPrefix, a, b };
}

async function body(replica: Replica, path: string): Promise<string> {
  const reply = await send(`${replica.proxy.url}/desktop/${path}/`);
  return reply.status === 200 ? reply.text : `status ${reply.status}`;
}

function atVersion(replica: Replica, version: number): Promise<void> {
  return waitForSubscriber(replica.subscriber, () => replica.subscriber.ready && replica.subscriber.version >= version, WAIT_MS, `${replica.name} at version ${version}`);
}

function neverBackwards(t: Test, replica: Replica): void {
  const backwards = replica.versions.some((v, i) => i > 0 && v < (replica.versions[i - 1] as number));
  t.notOk(backwards, `${replica.name} never went back to an older version (${replica.versions.join(',')})`);
}

t.test('not listening until Redis answers and a snapshot is loaded; healthy all along', async (t) => {
  const { routes, keyPrefix, a } = await control(t);
  await routes.put(makeRoute('ada-desk', a.url));
  await redis.stop();
  let restarted = false;
  t.teardown(async () => {
    if (!restarted) await redis.start();
  });
  // The public port opens only once the table is loaded (drain.test.ts has the listener's side):
  // health and readiness are on the metrics port meanwhile.
  const [port, metricsPort] = [await closedPort(), await closedPort()];
  const stream = createRouteStream({ redisUrl: redis.url, keyPrefix, logger: silentLogger });
  t.teardown(() => stream.close());
  const subscriber = stream.subscriber({ replicaId: 'early', checkIntervalMs: 200, announceTtlMs: 1500 });
  const starting = startProxy({ subscriber, port, metricsPort, authMode: 'dev', logger: silentLogger });
  const metricsUrl = `http://127.0.0.1:${metricsPort}`;
  let healthy = 0;
  for (let i = 0; i < 100 && healthy !== 200; i++) {
    healthy = (await send(`${metricsUrl}/healthz`).catch(() => ({ status: 0 }))).status;
    if (healthy !== 200) await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(healthy, 200, 'alive while Redis is down');
  t.equal((await send(`${metricsUrl}/readyz`)).status, 503, 'not ready while Redis is down');
  await t.rejects(send(`http://127.0.0.1:${port}/desktop/ada-desk/`), { code: 'ECONNREFUSED' }, 'the public port refuses connections');
  await redis.start();
  restarted = true;
  const proxy = await starting;
  t.teardown(() => proxy.close());
  t.equal((await send(`${metricsUrl}/readyz`)).status, 200, 'ready once the snapshot is loaded');
  t.equal((await send(`${proxy.url}/readyz`)).status, 200, 'on the public port too');
  t.equal((await send(`${proxy.url}/desktop/ada-desk/`)).text, 'upstream-a');
});

t.test('two replicas see the same changes; the publisher can wait for both', async (t) => {
  const { routes, keyPrefix, a, b } = await control(t);
  const one = await startReplica(t, keyPrefix, 'one');
  const two = await startReplica(t, keyPrefix, 'two');
  await Promise.all([atVersion(one, 0), atVersion(two, 0)]);
  const v1 = await routes.put(makeRoute('bo-desk', a.url));
  const wait = await routes.publisher.waitForReplicas(v1, WAIT_MS);
  t.ok(wait.ok, 'every live replica confirmed the route');
  for (const r of [one, two]) t.equal(await body(r, 'bo-desk'), 'upstream-a', `${r.name} serves the new route`);
  const v2 = await routes.put(makeRoute('bo-desk', b.url));
  await Promise.all([atVersion(one, v2), atVersion(two, v2)]);
  for (const r of [one, two]) t.equal(await body(r, 'bo-desk'), 'upstream-b', `${r.name} follows the move`);
  const v3 = await routes.remove('bo-desk');
  await Promise.all([atVersion(one, v3), atVersion(two, v3)]);
  for (const r of [one, two]) t.equal(await body(r, 'bo-desk'), 'status 404', `${r.name} forgot the withdrawn route`);
});

t.test('Redis stopped and started again: replicas keep serving, then resync', async (t) => {
  const { routes, keyPrefix, a, b } = await control(t);
  await routes.put(makeRoute('cy-desk', a.url));
  const one = await startReplica(t, keyPrefix, 'one');
  const two = await startReplica(t, keyPrefix, 'two');
  await Promise.all([atVersion(one, 1), atVersion(two, 1)]);
  await redis.stop();
  for (const r of [one, two]) t.equal(await body(r, 'cy-desk'), 'upstream-a', `${r.name} serves its table while Redis is down`);
  t.equal((await send(`${one.proxy.url}/readyz`)).status, 200, 'and stays ready: its table is still good');
  await redis.start();
  const v2 = await routes.put(makeRoute('cy-other', b.url));
  await Promise.all([atVersion(one, v2), atVersion(two, v2)]);
  for (const r of [one, two]) {
    t.equal(await body(r, 'cy-other'), 'upstream-b', `${r.name} got the change made after the restart`);
    t.equal(await body(r, 'cy-desk'), 'upstream-a');
    neverBackwards(t, r);
  }
});

t.test('Redis lost all its data: replicas keep their table until the control plane republishes, never going back', async (t) => {
  const { routes, keyPrefix, a, b } = await control(t);
  await routes.put(makeRoute('di-one', a.url));
  await routes.put(makeRoute('di-two', b.url));
  const v = await routes.put(makeRoute('di-three', a.url));
  let asked = 0;
  routes.publisher.onResyncRequest(() => asked++);
  const one = await startReplica(t, keyPrefix, 'one');
  const two = await startReplica(t, keyPrefix, 'two');
  await Promise.all([atVersion(one, v), atVersion(two, v)]);

  await redis.restart({ loseData: true });
  t.equal(await routes.publisher.storedVersion(), null, 'the store is empty');
  // The replicas notice the reconnect and find the store behind them: they ask for a republish.
  const deadline = Date.now() + WAIT_MS;
  while (asked === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.ok(asked > 0, 'a replica asked the control plane to republish');
  for (const r of [one, two]) {
    t.equal(r.subscriber.version, v, `${r.name} kept version ${v}`);
    t.equal(await body(r, 'di-two'), 'upstream-b', `${r.name} still serves its table`);
  }

  await routes.republish();
  const v2 = await routes.put(makeRoute('di-four', b.url));
  await Promise.all([atVersion(one, v2), atVersion(two, v2)]);
  for (const r of [one, two]) {
    for (const [path, text] of [['di-one', 'upstream-a'], ['di-two', 'upstream-b'], ['di-three', 'upstream-a'], ['di-four', 'upstream-b']]) {
      t.equal(await body(r, path as string), text, `${r.name}: ${path}`);
    }
    neverBackwards(t, r);
  }
});

t.test('a change whose message never arrived (a gap) is repaired by a resync; so is a proxy restart', async (t) => {
  const { routes, keyPrefix, a, b } = await control(t);
  await routes.put(makeRoute('ed-desk', a.url));
  const one = await startReplica(t, keyPrefix, 'one');
  await atVersion(one, 1);

  // Version 2 lands in the store but its message is lost: written straight into Redis (the
  // route stream's key layout: <prefix>routes hash, <prefix>version), with no PUBLISH.
  const skipped = makeRoute('ed-skipped', b.url);
  routes.routes.set(skipped.path, skipped);
  routes.version += 1;
  await redisCli('HSET', `${keyPrefix}routes`, skipped.path, JSON.stringify(skipped));
  await redisCli('SET', `${keyPrefix}version`, String(routes.version));
  const before = one.subscriber.resyncs;
  const v3 = await routes.put(makeRoute('ed-after', a.url));
  await atVersion(one, v3);
  t.ok(one.subscriber.resyncs > before, 'version 3 after version 1 is a gap: the replica resynced');
  t.equal(await body(one, 'ed-skipped'), 'upstream-b', 'and holds the change it never saw as a message');
  t.equal(await body(one, 'ed-after'), 'upstream-a');
  neverBackwards(t, one);

  // A proxy restart: changes made while it was down are there when it comes back.
  await one.close();
  const v4 = await routes.put(makeRoute('ed-while-down', b.url));
  const again = await startReplica(t, keyPrefix, 'one-again');
  await atVersion(again, v4);
  t.equal(await body(again, 'ed-while-down'), 'upstream-b', 'the restarted proxy has the change made while it was down');
  t.equal(await body(again, 'ed-skipped'), 'upstream-b');
  t.equal(again.subscriber.table.size, 4);
});

t.test('a replica that joins late gets the full table', async (t) => {
  const { routes, keyPrefix, a, b } = await control(t);
  const early = await startReplica(t, keyPrefix, 'early');
  for (let i = 0; i < 20; i++) await routes.put(makeRoute(`fe-${i}`, i % 2 ? a.url : b.url));
  await routes.remove('fe-3');
  const late = await startReplica(t, keyPrefix, 'late');
  await Promise.all([atVersion(early, routes.version), atVersion(late, routes.version)]);
  t.equal(late.subscriber.table.size, 19, 'all 19 routes');
  t.equal(await body(late, 'fe-4'), 'upstream-b');
  t.equal(await body(late, 'fe-3'), 'status 404');
  t.same(
    [...late.subscriber.table.values()].map((r) => r.path).sort(),
    [...early.subscriber.table.values()].map((r) => r.path).sort(),
    'the same table as a replica that saw every change',
  );
});
