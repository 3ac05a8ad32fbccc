/**
 * The figures only deskhub has: how fast a published route reaches every proxy replica, and how
 * long a large snapshot takes to load and how much a lookup costs as the table grows.
 */
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { benchRoute, type DeskhubStream } from './deskhub.ts';
import { freePort, httpGet, waitUntil, type Service } from './child.ts';
import { percentile, median } from './stats.ts';

export interface PropagationResult {
  replicas: number;
  changes: number;
  /** Publication until the last replica served the route, milliseconds. */
  allP50Ms: number;
  allP99Ms: number;
  allMaxMs: number;
  /** Publication until one replica served it, over every replica and change. */
  eachP50Ms: number;
  eachP99Ms: number;
  /** The route stream alone: publication until the `change` event on every one of N in-process subscribers. */
  streamP50Ms: number;
  streamP99Ms: number;
  method: string;
}

/**
 * Pause between probes of one replica. Probing back to back kept three replicas and the harness
 * busy answering 404s, which on 2 cores delayed the very change being measured (p99 180-240 ms
 * against 30-120 ms with the pause); 1 ms costs about 1 ms of resolution.
 */
const PROBE_PAUSE_MS = 1;

/** GET status with a keep-alive agent of one connection per replica: the probe stays cheap and in order. */
function probe(agent: http.Agent, port: number, urlPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('error', reject);
  });
}

/** Probes one replica in a tight loop until the path stops being 404; returns ms since `t0`. */
async function arrival(agent: http.Agent, port: number, urlPath: string, t0: bigint, timeoutMs: number): Promise<number> {
  for (;;) {
    const status = await probe(agent, port, urlPath);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (status === 200) return ms;
    if (status !== 404) throw new Error(`replica on :${port} answered ${status} for ${urlPath}`);
    if (ms > timeoutMs) throw new Error(`replica on :${port} did not serve ${urlPath} within ${timeoutMs} ms`);
    await sleep(PROBE_PAUSE_MS);
  }
}

export async function routePropagation(
  deskhub: DeskhubStream, upstreamPort: number, replicaCount: number, changes: number,
): Promise<PropagationResult> {
  const replicas: { service: Service; port: number; agent: http.Agent }[] = [];
  // The route replicas are checked on; published here too so this figure can run without the deskhub target.
  await deskhub.put('bench', upstreamPort);
  try {
    for (let i = 0; i < replicaCount; i++) {
      const port = await freePort();
      const service = deskhub.startReplica({ name: `deskhub-replica-${i + 1}`, port, metricsPort: await freePort(), upstreamPort });
      replicas.push({ service, port, agent: new http.Agent({ keepAlive: true, maxSockets: 1 }) });
    }
    for (const r of replicas) {
      await waitUntil(r.service, 'replica ready', async () => (await httpGet(`http://127.0.0.1:${r.port}/desktop/bench/small`)).status === 200, 60_000);
    }
    const all: number[] = [];
    const each: number[] = [];
    for (let i = 0; i < changes; i++) {
      const urlPath = `/desktop/prop-${i}/small`;
      const t0 = process.hrtime.bigint();
      const published = deskhub.put(`prop-${i}`, upstreamPort);
      const times = await Promise.all(replicas.map((r) => arrival(r.agent, r.port, urlPath, t0, 10_000)));
      await published;
      each.push(...times);
      all.push(Math.max(...times));
      // Room between changes so each is measured on its own, not as a burst.
      await sleep(10);
    }
    const stream = await streamOnly(deskhub, upstreamPort, replicaCount, changes);
    return {
      ...stream,
      replicas: replicaCount,
      changes,
      allP50Ms: percentile(all, 50),
      allP99Ms: percentile(all, 99),
      allMaxMs: Math.max(...all),
      eachP50Ms: percentile(each, 50),
      eachP99Ms: percentile(each, 99),
      method:
        `${replicaCount} proxy replicas as separate processes on one Redis; the harness publishes a put of a new route ` +
        'and, from the moment before publish(), probes each replica in a tight loop (keep-alive HTTP GET of the new ' +
        `route's path, ${PROBE_PAUSE_MS} ms apart) until it answers 200 instead of 404; time = hrtime at the first 200. ` +
        `Stream only: ${replicaCount} subscribers in the harness process, no probing, time = their 'change' event`,
    };
  } finally {
    for (const r of replicas) {
      r.agent.destroy();
      await r.service.stop();
    }
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The same changes seen by subscribers in this process through their `change` event: the stream's share of propagation. */
async function streamOnly(deskhub: DeskhubStream, upstreamPort: number, count: number, changes: number): Promise<{ streamP50Ms: number; streamP99Ms: number }> {
  const subscribers = Array.from({ length: count }, (_, i) => deskhub.stream.subscriber({ replicaId: `bench-stream-${i}` }));
  try {
    for (const s of subscribers) {
      const ready = new Promise<void>((resolve) => s.on('ready', () => resolve()));
      await s.start();
      if (!s.ready) await ready;
    }
    const all: number[] = [];
    for (let i = 0; i < changes; i++) {
      const routePath = `stream-${i}`;
      const t0 = process.hrtime.bigint();
      const arrived = subscribers.map(
        (s) =>
          new Promise<number>((resolve) => {
            const onChange = (p: string) => {
              if (p !== routePath) return;
              s.off('change', onChange);
              resolve(Number(process.hrtime.bigint() - t0) / 1e6);
            };
            s.on('change', onChange);
          }),
      );
      await deskhub.put(routePath, upstreamPort);
      const times = await withTimeout(Promise.all(arrived), 10_000, `route ${routePath} did not reach every in-process subscriber within 10 s`);
      all.push(Math.max(...times));
      await sleep(10);
    }
    return { streamP50Ms: percentile(all, 50), streamP99Ms: percentile(all, 99) };
  } finally {
    for (const s of subscribers) await s.close();
  }
}

export interface SnapshotResult {
  routes: number;
  /** republish() of the whole snapshot into Redis, milliseconds. */
  publishMs: number;
  /** A new subscriber: start() until ready (snapshot fetched, parsed and loaded), milliseconds. */
  loadMs: number;
  /** RouteTable.get() of the same 8 existing routes over and over (same key strings), nanoseconds: the lookup's own cost. */
  hotLookupNs: number;
  /**
   * The same 8 routes, but each key sliced afresh from a request path as the proxy does for every
   * request (`/desktop/<p>/small` → `<p>`, so the string's hash is computed each time), nanoseconds.
   */
  requestLookupNs: number;
  /** RouteTable.get() of uniformly random existing routes, nanoseconds: adds the cache misses of a large table. */
  lookupNs: number;
  /** RouteTable.get() of a missing route, nanoseconds. */
  missNs: number;
}

/** A table loaded from a snapshot, kept open until every table's lookups are measured. */
export interface LoadedSnapshot {
  routes: number;
  publishMs: number;
  loadMs: number;
  table: { get(path: string): unknown };
  close(): Promise<void>;
}

export async function snapshotLoad(deskhub: DeskhubStream, size: number): Promise<LoadedSnapshot> {
  const stream = await deskhub.openStream(`bench-snapshot-${size}:`);
  const publisher = stream.publisher();
  const routes = Array.from({ length: size }, (_, i) => benchRoute(`snap-${i}`, 1 + (i % 60000)));
  let t0 = process.hrtime.bigint();
  await publisher.republish({ version: 1, routes });
  const publishMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const subscriber = stream.subscriber();
  try {
    const ready = new Promise<void>((resolve) => subscriber.on('ready', () => resolve()));
    t0 = process.hrtime.bigint();
    await subscriber.start();
    if (!subscriber.ready) await ready;
    const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
    if (subscriber.table.size !== size) throw new Error(`snapshot of ${size} routes loaded ${subscriber.table.size}`);
    return { routes: size, publishMs, loadMs, table: subscriber.table, close: () => subscriber.close() };
  } catch (err) {
    await subscriber.close();
    throw err;
  }
}

/** Nanoseconds per call of `lookup(i)` over `perPass` calls (`i` counts up). */
function lookupPass(lookup: (i: number) => unknown, perPass: number): number {
  let found = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < perPass; i++) if (lookup(i) !== undefined) found++;
  const ns = Number(process.hrtime.bigint() - t0) / perPass;
  // Keeps the loop's result alive so it is not optimised away.
  if (found < 0) throw new Error('unreachable');
  return ns;
}

/**
 * Lookup cost in every loaded table with the same access patterns: the same 8 routes (the
 * lookup's own cost), the same 8 routes with each key sliced afresh from a request path (what a
 * request costs the proxy), uniformly random routes (cache misses grow with the table) and
 * missing routes. The tables' passes are interleaved (pass 1 of every table and pattern, then
 * pass 2, ...) after the heap has settled from loading, so JIT warm-up, a garbage collection
 * left over from the 100,000-route load, or a busy moment on the machine falls on every table
 * alike instead of on whichever was measured last; the median pass counts.
 */
export async function lookupFigures(loaded: LoadedSnapshot[], passes = 7, perPass = 1_000_000): Promise<SnapshotResult[]> {
  const patterns = loaded.map(({ routes: size, table }) => {
    const hot = Array.from({ length: 8 }, (_, i) => `snap-${Math.floor((i * size) / 8)}`);
    const requests = hot.map((p) => `/desktop/${p}/small`);
    // Random existing keys, fixed in advance so the loop measures get() and not key building.
    const random = Array.from({ length: 4096 }, () => `snap-${Math.floor(Math.random() * size)}`);
    const missing = Array.from({ length: 4096 }, (_, i) => `absent-${i}`);
    const get = (p: string) => table.get(p);
    return {
      hot: (i: number) => get(hot[i & 7]!),
      // As the proxy's splitDesktopTarget does: the segment after "/desktop/", a new string each time.
      request: (i: number) => {
        const url = requests[i & 7]!;
        return get(url.slice(9, url.indexOf('/', 9)));
      },
      random: (i: number) => get(random[i & 4095]!),
      missing: (i: number) => get(missing[i & 4095]!),
    };
  });
  // Loading 100,000 routes leaves garbage collection work behind; let it finish first.
  await sleep(1500);
  const names = ['hot', 'request', 'random', 'missing'] as const;
  for (const p of patterns) for (const n of names) lookupPass(p[n], perPass / 10);
  const samples = patterns.map(() => ({ hot: [] as number[], request: [] as number[], random: [] as number[], missing: [] as number[] }));
  for (let pass = 0; pass < passes; pass++) {
    for (let t = 0; t < patterns.length; t++) for (const n of names) samples[t]![n].push(lookupPass(patterns[t]![n], perPass));
  }
  return loaded.map((l, t) => ({
    routes: l.routes,
    publishMs: l.publishMs,
    loadMs: l.loadMs,
    hotLookupNs: median(samples[t]!.hot),
    requestLookupNs: median(samples[t]!.request),
    lookupNs: median(samples[t]!.random),
    missNs: median(samples[t]!.missing),
  }));
}
