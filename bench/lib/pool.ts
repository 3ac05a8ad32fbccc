/**
 * The warm pool's figures (issue 26, section 3), on the deployed topology: a private Redis and
 * Postgres, the control plane (`src/main.ts`) and proxy replicas as processes of their own, which
 * know routes only through Redis. A create is `running` only once every live replica confirmed its
 * route, so create→running includes the route reaching every replica.
 *
 * Per runtime (Docker with the locally built kasm-test image when the engine answers and the image
 * is there; the process runtime with busybox httpd always), the catalog holds the same type twice,
 * pooled (`pool: { size }`) and not. Measured from the harness over HTTP, as a browser would:
 * - create→running: hrtime before `POST /api/desktops` until the event stream
 *   (`/api/desktops/:id/events/stream`) delivers the event entering `running`. Pooled and cold
 *   alternate; before every pooled claim the pool is full (every member `running`), so each claim
 *   meets the steady state and never a refill under way; before a cold create the refill of the
 *   previous claim has finished too, so the two never share the machine. Each desktop is deleted
 *   (DELETE answers once its container is gone) before the next create.
 * - burst: with the pool full, `burst` creates at once; each claim's create→running, and the time
 *   until the pool is full again (every member running, none of them claimed), from the first POST
 *   and from the last 201.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { startPostgresCluster, type PostgresCluster } from '../../packages/testkit/src/postgres-cluster.ts';
import { startRedis, type RedisServer } from '../../packages/testkit/src/redis.ts';
import { freePort } from '../../packages/testkit/src/net.ts';
import { startService, type ServiceProcess } from '../../packages/testkit/src/service.ts';
import { catalogYaml, shippedType, type CatalogTypeSource } from '../../services/control-plane/test/catalog-fixtures.ts';
import { dockerCleanup } from '../../soak/lib/docker.ts';
import { waitFor } from '../../soak/lib/topology.ts';
import { deployedAllocatorEnv } from './deskhub.ts';
import { median, percentile } from './stats.ts';

const run = promisify(execFile);

export type PoolRuntime = 'docker' | 'process';

export interface PoolSettings {
  /** Creates per series (pooled and cold each). */
  claims: number;
  /** Pool size of the pooled type; also the number of concurrent claims in the burst. */
  poolSize: number;
  replicas: number;
  /** POOL_INTERVAL_MS of the control plane (left at its default: a claim wakes a pass at once anyway). */
  poolIntervalMs: number;
}

export interface Series {
  /** create→running per create, ms, in order. */
  samplesMs: number[];
  medianMs: number;
  p99Ms: number;
  maxMs: number;
  /** Until POST /api/desktops answered (201), median, ms. */
  answeredMedianMs: number;
}

export interface PoolRuntimeResult {
  runtime: PoolRuntime;
  /** What the desktops are (image or command). */
  desktop: string;
  pooled: Series;
  cold: Series;
  burst: {
    claims: number;
    /** Creates of the burst that were claims (the rest started cold: the pool had run dry). */
    fromPool: number;
    /** Each burst claim's create→running. */
    claim: Series;
    /** Until the pool was full again, from the first POST, ms. */
    refillFromFirstPostMs: number;
    /** The same from the last 201. */
    refillFromLastAnswerMs: number;
    /** When each member that refilled the pool was started (its row created) and ready, ms after the first POST (server clock). */
    refillStartedMs: number[];
    refillReadyMs: number[];
  };
  /**
   * `claims` creates of the cold type at once (issue 31: create→running, 20 one at a time and 20
   * at once): each one's create→running; none of them can be a claim.
   */
  coldBurst: Series;
  /** Pooled creates that were not claims (should be 0: the pool was full before each). */
  pooledNotClaimed: number;
  /** Events saying a replica did not confirm a route in time (should be 0). */
  laggingReplicaNotes: number;
}

export interface PoolResult {
  settings: PoolSettings;
  runtimes: PoolRuntimeResult[];
  /** Runtimes not measured, with why (no Docker Engine, no image). */
  notMeasured: string[];
}

const DOCKER_IMAGE = 'deskhub/kasm-test:local';
/** Every process desktop of a run carries this in its environment, so strays can be found in /proc. */
const MARK = 'DESKHUB_BENCH_POOL_RUN';

interface DesktopJson {
  id: string;
  type: string;
  state: string;
  pool?: boolean;
  createdAt?: string;
  readyAt?: string | null;
  reason?: string | null;
}

/** Desktop types: `<runtime>-pooled` and `<runtime>-cold`, identical but for the pool. */
function catalogText(runtimes: PoolRuntime[], poolSize: number, www: string, runId: string): string {
  const body: Record<PoolRuntime, CatalogTypeSource> = {
    // The shipped kasm-test entry, as it is (image deskhub/kasm-test:local).
    docker: shippedType('kasm-test'),
    process: {
      runtime: 'process',
      command: ['busybox', 'httpd', '-f', '-p', '127.0.0.1:{port}', '-h', www],
      port: 80,
      credentials: { kind: 'basic', username: 'webuser', passwordEnv: 'WEB_PASSWORD' },
      env: { [MARK]: runId },
      readiness: { path: '/', timeoutSeconds: 30 },
    },
  };
  return catalogYaml(
    runtimes.flatMap((rt) => [
      { ...body[rt], id: `${rt}-pooled`, name: `${rt} desktop (pooled)`, pool: { size: poolSize, expireAfter: '4h' } },
      { ...body[rt], id: `${rt}-cold`, name: `${rt} desktop (cold)` },
    ]),
  );
}

/** Processes carrying this run's mark (process-runtime desktops outlive the control plane by design). */
function markedProcesses(runId: string): number[] {
  const needle = `\0${MARK}=${runId}\0`;
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      if (`\0${readFileSync(`/proc/${pid}/environ`, 'latin1')}`.includes(needle)) out.push(pid);
    } catch {
      // gone, or not ours to read
    }
  }
  return out;
}

/** Why Docker cannot be measured here, or null when it can. */
export async function dockerUnavailable(): Promise<string | null> {
  const info = await run('docker', ['info', '--format', '{{.ServerVersion}}'], { timeout: 10_000 }).catch(() => null);
  if (!info) return 'Docker Engine does not answer (scripts/ensure-services.sh starts it)';
  const image = await run('docker', ['image', 'inspect', DOCKER_IMAGE, '--format', '{{.Id}}'], { timeout: 10_000 }).catch(() => null);
  if (!image) return `image ${DOCKER_IMAGE} missing (bash deploy/images/build.sh kasm-test)`;
  return null;
}

class Api {
  constructor(
    readonly base: string,
    readonly cookie: string,
  ) {}

  async call<T>(method: string, apiPath: string, body?: unknown): Promise<{ status: number; json: T }> {
    const res = await fetch(`${this.base}${apiPath}`, {
      method,
      headers: { cookie: this.cookie, 'x-deskhub-csrf': '1', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(120_000),
    });
    const text = await res.text();
    if (res.status >= 300) throw new Error(`${method} ${apiPath}: ${res.status} ${text.slice(0, 300)}`);
    return { status: res.status, json: (text ? JSON.parse(text) : undefined) as T };
  }

  static async signIn(base: string, username: string): Promise<Api> {
    const res = await fetch(`${base}/auth/dev-login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username }) });
    if (res.status !== 200) throw new Error(`dev-login ${username}: ${res.status} ${await res.text()}`);
    return new Api(base, res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; '));
  }
}

interface Created {
  id: string;
  answeredMs: number;
  runningMs: number;
  claimed: boolean;
  lagging: number;
}

/**
 * POST a create, then follow its event stream until it enters `running` (throws on `failed`), the
 * first `running` after the create's own first event.
 * Times from just before the POST, in ms.
 */
async function timedCreate(api: Api, type: string, name?: string): Promise<Created> {
  const t0 = performance.now();
  const { json: desktop } = await api.call<DesktopJson>('POST', '/api/desktops', name ? { type, name } : { type });
  const answeredMs = performance.now() - t0;
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 120_000);
  let claimed = false;
  let armed = false;
  let lagging = 0;
  try {
    const res = await fetch(`${api.base}/api/desktops/${desktop.id}/events/stream`, { headers: { cookie: api.cookie }, signal: ac.signal });
    if (res.status !== 200 || !res.body) throw new Error(`event stream of ${desktop.id}: ${res.status}`);
    const decoder = new TextDecoder();
    let buffered = '';
    for await (const chunk of res.body) {
      buffered += decoder.decode(chunk as Uint8Array, { stream: true });
      let end: number;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const message = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const data = message.split('\n').find((l) => l.startsWith('data: '));
        if (!data) continue;
        const event = JSON.parse(data.slice(6)) as { message: string; state: string | null };
        // A claimed member's history holds its own "Ready" from when it joined the pool: only a
        // `running` after this create's first event (the claim, or the cold create) counts.
        if (/^Claimed a ready .* from the warm pool/.test(event.message)) (armed = true), (claimed = true);
        if (/^Creating /.test(event.message) && event.state === 'creating') armed = true;
        if (!armed) continue;
        if (/not confirming/.test(event.message)) lagging++;
        if (event.state === 'running') return { id: desktop.id, answeredMs, runningMs: performance.now() - t0, claimed, lagging };
        if (event.state === 'failed') throw new Error(`desktop ${desktop.id} (${type}) failed: ${event.message}`);
      }
    }
    throw new Error(`event stream of ${desktop.id} ended before it was running`);
  } catch (err) {
    if (ac.signal.aborted) throw new Error(`desktop ${desktop.id} (${type}) not running within 120 s`);
    throw err;
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

function series(created: Created[]): Series {
  const samples = created.map((c) => c.runningMs);
  return {
    samplesMs: samples.map((v) => Math.round(v * 10) / 10),
    medianMs: median(samples),
    p99Ms: percentile(samples, 99),
    maxMs: Math.max(...samples),
    answeredMedianMs: median(created.map((c) => c.answeredMs)),
  };
}

interface PoolTopology {
  controlPlaneUrl: string;
  user: Api;
  admin: Api;
  close(): Promise<void>;
}

async function startPoolTopology(runDir: string, runId: string, runtimes: PoolRuntime[], settings: PoolSettings, log: (m: string) => void): Promise<PoolTopology> {
  const dir = path.join(runDir, 'pool');
  const www = path.join(dir, 'www');
  mkdirSync(www, { recursive: true });
  writeFileSync(path.join(www, 'index.html'), '<!doctype html><title>pool bench</title>\n');
  const catalog = path.join(dir, 'catalog.yaml');
  writeFileSync(catalog, catalogText(runtimes, settings.poolSize, www, runId));
  const instance = `bench-pool-${runId}`;
  const network = `deskhub-${instance}`;
  const services: ServiceProcess[] = [];
  let redis: RedisServer | undefined;
  let postgres: PostgresCluster | undefined;
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= closeOnce());
  const closeOnce = async () => {
    // The control plane first, so the pool stops refilling; then what it leaves by design.
    await services[0]?.stop().catch(() => {});
    await Promise.all(services.slice(1).map((s) => s.stop().catch(() => {})));
    if (runtimes.includes('docker')) await dockerCleanup(instance, network);
    for (const pid of markedProcesses(runId)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await redis?.close().catch(() => {});
    await postgres?.close().catch(() => {});
  };
  try {
    [redis, postgres] = await Promise.all([startRedis(), startPostgresCluster()]);
    const cpPort = await freePort();
    const replicaPorts = await Promise.all(Array.from({ length: settings.replicas }, async () => [await freePort(), await freePort()] as const));
    const controlPlaneUrl = `http://127.0.0.1:${cpPort}`;
    const publicUrl = `http://127.0.0.1:${replicaPorts[0]![0]}`;
    log(`pool: starting the control plane and ${settings.replicas} proxy replicas (runtimes ${runtimes.join(', ')})`);
    services.push(
      await startService({
        entry: 'services/control-plane/src/main.ts',
        readyMessage: 'control plane listening',
        env: {
          PORT: String(cpPort),
          HOST: '127.0.0.1',
          METRICS_PORT: '0',
          PUBLIC_URL: publicUrl,
          DATA_DIR: path.join(dir, 'data'),
          DATABASE_URL: postgres.url,
          SECRET_KEY: randomBytes(32).toString('base64'),
          REDIS_URL: redis.url,
          CATALOG: catalog,
          DESKHUB_INSTANCE: instance,
          DOCKER_NETWORK: network,
          AUTH_MODE: 'dev',
          ADMIN_USERS: 'bench-admin',
          MAX_DESKTOPS_PER_USER: '0',
          MAX_DESKTOPS_TOTAL: '0',
          POOL_INTERVAL_MS: String(settings.poolIntervalMs),
        },
        timeoutMs: 120_000,
        logFile: path.join(dir, 'control-plane.log'),
      }),
    );
    await waitFor('control plane /readyz', async () => ((await fetch(`${controlPlaneUrl}/readyz`)).status === 200 ? true : undefined), 60_000);
    const allocatorEnv = deployedAllocatorEnv(path.resolve(import.meta.dirname, '../..'));
    for (const [i, [port, metricsPort]] of replicaPorts.entries()) {
      const replica = await startService({
        entry: 'services/proxy/src/main.ts',
        readyMessage: 'proxy listening',
        env: {
          ...allocatorEnv,
          PORT: String(port),
          HOST: '127.0.0.1',
          METRICS_PORT: String(metricsPort),
          REDIS_URL: redis.url,
          CONTROL_PLANE_URL: controlPlaneUrl,
          PUBLIC_URL: publicUrl,
          AUTH_MODE: 'dev',
        },
        logFile: path.join(dir, `replica-${i + 1}.log`),
      });
      services.push(replica);
      await waitFor(`replica ${i + 1} /readyz`, async () => ((await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200 ? true : undefined), 30_000);
    }
    const [user, admin] = await Promise.all([Api.signIn(controlPlaneUrl, 'bench'), Api.signIn(controlPlaneUrl, 'bench-admin')]);
    return { controlPlaneUrl, user, admin, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** The pool's members of a type, as the admin API shows them. */
async function members(admin: Api, type: string): Promise<DesktopJson[]> {
  return (await admin.call<DesktopJson[]>('GET', '/api/admin/desktops')).json.filter((d) => d.pool && d.type === type);
}

/** Resolves once the pool of `type` holds `size` members, every one running. */
function poolFull(admin: Api, type: string, size: number, timeoutMs = 180_000): Promise<true> {
  return waitFor(`the pool of ${type} full (${size} running)`, async () => {
    const list = await members(admin, type);
    return list.length === size && list.every((m) => m.state === 'running') ? true : undefined;
  }, timeoutMs, 50);
}

async function measureRuntime(topo: PoolTopology, runtime: PoolRuntime, settings: PoolSettings, log: (m: string) => void): Promise<PoolRuntimeResult> {
  const pooledType = `${runtime}-pooled`;
  const coldType = `${runtime}-cold`;
  const { user, admin } = topo;
  const remove = (id: string) => user.call('DELETE', `/api/desktops/${id}`);
  log(`pool (${runtime}): waiting for the pool of ${settings.poolSize} to fill`);
  await poolFull(admin, pooledType, settings.poolSize);
  // One of each first, not counted: the first create of a type pays for code paths compiled once.
  for (const type of [pooledType, coldType]) {
    await remove((await timedCreate(user, type)).id);
    await poolFull(admin, pooledType, settings.poolSize);
  }
  const pooled: Created[] = [];
  const cold: Created[] = [];
  for (let i = 0; i < settings.claims; i++) {
    await poolFull(admin, pooledType, settings.poolSize);
    const p = await timedCreate(user, pooledType);
    pooled.push(p);
    await remove(p.id);
    await poolFull(admin, pooledType, settings.poolSize);
    const c = await timedCreate(user, coldType);
    cold.push(c);
    await remove(c.id);
    log(`pool (${runtime}): ${i + 1}/${settings.claims}: claim ${p.runningMs.toFixed(0)} ms, cold ${c.runningMs.toFixed(0)} ms`);
  }

  await poolFull(admin, pooledType, settings.poolSize);
  log(`pool (${runtime}): burst of ${settings.poolSize} claims at once`);
  const t0 = performance.now();
  const t0Wall = Date.now();
  const claimedIds = new Set<string>();
  const burst = await Promise.all(
    Array.from({ length: settings.poolSize }, async (_, i) => {
      const c = await timedCreate(user, pooledType, `burst-${i + 1}`);
      claimedIds.add(c.id);
      return c;
    }),
  );
  const lastAnswer = Math.max(...burst.map((c) => c.answeredMs));
  const refilled = await waitFor(`the pool of ${pooledType} refilled after the burst`, async () => {
    const list = await members(admin, pooledType);
    return list.length === settings.poolSize && list.every((m) => m.state === 'running' && !claimedIds.has(m.id)) ? list : undefined;
  }, 300_000, 50);
  const since = (at: string | null | undefined) => (at ? Date.parse(at) - t0Wall : NaN);
  const refillStartedMs = refilled.map((m) => since(m.createdAt)).sort((a, b) => a - b);
  const refillReadyMs = refilled.map((m) => since(m.readyAt)).sort((a, b) => a - b);
  const refill = performance.now() - t0;
  log(`pool (${runtime}): refilled ${(refill / 1000).toFixed(1)} s after the first POST of the burst`);
  for (const c of burst) await remove(c.id);

  // As many cold creates at once as were made one at a time: what a morning rush costs without a pool.
  await poolFull(admin, pooledType, settings.poolSize);
  log(`pool (${runtime}): ${settings.claims} cold creates at once`);
  const coldBurst = await Promise.all(Array.from({ length: settings.claims }, (_, i) => timedCreate(user, coldType, `rush-${i + 1}`)));
  log(`pool (${runtime}): cold rush running after median ${median(coldBurst.map((c) => c.runningMs)).toFixed(0)} ms, slowest ${Math.max(...coldBurst.map((c) => c.runningMs)).toFixed(0)} ms`);
  for (const c of coldBurst) await remove(c.id);

  return {
    runtime,
    desktop: runtime === 'docker' ? `${DOCKER_IMAGE} container` : 'busybox httpd process',
    pooled: series(pooled),
    cold: series(cold),
    burst: {
      claims: burst.length,
      fromPool: burst.filter((c) => c.claimed).length,
      claim: series(burst),
      refillFromFirstPostMs: refill,
      refillFromLastAnswerMs: refill - lastAnswer,
      refillStartedMs,
      refillReadyMs,
    },
    coldBurst: series(coldBurst),
    pooledNotClaimed: pooled.filter((c) => !c.claimed).length,
    laggingReplicaNotes: [...pooled, ...cold, ...burst, ...coldBurst].reduce((n, c) => n + c.lagging, 0),
  };
}

/**
 * The whole case: Docker first when it can run here, then the process runtime. A runtime whose
 * measurement fails is reported in `errors` and the other still runs.
 */
export async function poolFigures(
  runDir: string,
  settings: PoolSettings,
  log: (m: string) => void,
  errors: string[],
  /** Gets what stops everything this case started, for the harness's interrupt handler. */
  onStarted: (close: () => Promise<void>) => void = () => {},
): Promise<PoolResult> {
  const result: PoolResult = { settings, runtimes: [], notMeasured: [] };
  const runtimes: PoolRuntime[] = ['docker', 'process'];
  const noDocker = await dockerUnavailable();
  if (noDocker) {
    result.notMeasured.push(`docker: ${noDocker}`);
    runtimes.shift();
  }
  const runId = randomBytes(4).toString('hex');
  const topo = await startPoolTopology(runDir, runId, runtimes, settings, log);
  onStarted(topo.close);
  try {
    for (const runtime of runtimes) {
      try {
        result.runtimes.push(await measureRuntime(topo, runtime, settings, log));
      } catch (err) {
        const message = `pool (${runtime}): ${(err as Error).message}`;
        log(`FAILED ${message}`);
        errors.push(message);
      }
    }
  } finally {
    await topo.close();
  }
  return result;
}

/** The case's Markdown: create→running side by side, then the burst. */
export function poolMarkdown(p: PoolResult): string {
  const s = p.settings;
  const f = (ms: number) => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms).toLocaleString('en-US')} ms`);
  const lines: string[] = [];
  lines.push(
    `Warm pool (issue 26): create→running, from \`POST /api/desktops\` until its event stream says \`running\` (every one of ${s.replicas} proxy replicas holds the route), ` +
      `${s.claims} creates each, pooled and cold alternating, the pool (size ${s.poolSize}) full before each claim, every desktop deleted before the next create. ` +
      `p99 is nearest-rank: with ${s.claims} samples it is the slowest one.`,
  );
  lines.push('');
  lines.push('| runtime | figure | from the pool | cold start | cold ÷ pool |');
  lines.push('|---|---|---:|---:|---:|');
  for (const r of p.runtimes) {
    const row = (label: string, a: number, b: number) => `| ${r.runtime} (${r.desktop}) | ${label} | ${f(a)} | ${f(b)} | ${(b / a).toFixed(1)}x |`;
    lines.push(row('create→running median', r.pooled.medianMs, r.cold.medianMs));
    lines.push(row('create→running p99', r.pooled.p99Ms, r.cold.p99Ms));
    lines.push(row('POST answered (201), median', r.pooled.answeredMedianMs, r.cold.answeredMedianMs));
  }
  lines.push('');
  for (const r of p.runtimes) {
    const b = r.burst;
    lines.push(
      `Burst (${r.runtime}): ${b.claims} creates at once on a full pool of ${s.poolSize}, ${b.fromPool} claimed from it; each running after median ${f(b.claim.medianMs)}, ` +
        `slowest ${f(b.claim.maxMs)}; the pool full again (${s.poolSize} members running) ${f(b.refillFromFirstPostMs)} after the first POST ` +
        `(${f(b.refillFromLastAnswerMs)} after the last 201; POOL_INTERVAL_MS ${s.poolIntervalMs}); the new members started at ${b.refillStartedMs.map((v) => (v / 1000).toFixed(1)).join(', ')} s ` +
        `and were ready at ${b.refillReadyMs.map((v) => (v / 1000).toFixed(1)).join(', ')} s.` +
        (r.pooledNotClaimed ? ` **${r.pooledNotClaimed} pooled creates were not claims.**` : '') +
        (r.laggingReplicaNotes ? ` **${r.laggingReplicaNotes} route changes not confirmed by every replica in time.**` : ''),
    );
  }
  for (const r of p.runtimes) {
    const c = r.coldBurst;
    if (!c) continue;
    lines.push(
      `Cold, ${c.samplesMs.length} at once (${r.runtime}): create→running median ${f(c.medianMs)}, p99 ${f(c.p99Ms)} (one at a time: median ${f(r.cold.medianMs)}, p99 ${f(r.cold.p99Ms)}); POST answered after median ${f(c.answeredMedianMs)}.`,
    );
  }
  for (const n of p.notMeasured) lines.push(`Not measured: ${n}.`);
  const target = p.runtimes.map((r) => `${r.runtime} p99 ${f(r.pooled.p99Ms)} (${r.pooled.p99Ms < 1000 ? 'met' : '**not met**'})`);
  if (target.length) lines.push('', `Target (issue 26): create→running from the pool under 1 s at p99: ${target.join(', ')}.`);
  lines.push('');
  return lines.join('\n');
}
