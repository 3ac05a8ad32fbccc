/**
 * The deployed topology the control-plane cases run on (the warm pool, the fleet, first frame):
 * a private Redis and Postgres, the control plane (`src/main.ts`) and proxy replicas as processes
 * of their own, which know routes only through Redis. The public address is the first replica,
 * which sends everything but `/desktop/` on to the control plane, as in production. Also the
 * harness's HTTP client of the API, signed in through the dev login.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startPostgresCluster, type PostgresCluster } from '../../packages/testkit/src/postgres-cluster.ts';
import { startRedis, type RedisServer } from '../../packages/testkit/src/redis.ts';
import { freePort } from '../../packages/testkit/src/net.ts';
import { startService, type ServiceProcess } from '../../packages/testkit/src/service.ts';
import { dockerCleanup } from '../../soak/lib/docker.ts';
import { waitFor } from '../../soak/lib/topology.ts';
import { deployedAllocatorEnv } from './deskhub.ts';
import { median, percentile } from './stats.ts';

/** Every process desktop of a run carries this in its environment, so strays can be found in /proc. */
export const MARK = 'DESKHUB_BENCH_RUN';

export interface DesktopJson {
  id: string;
  type: string;
  state: string;
  path?: string;
  pool?: boolean;
  createdAt?: string;
  readyAt?: string | null;
  reason?: string | null;
}

export class Api {
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

export interface DeployedOptions {
  /** The case's name: its folder under the run's directory and part of the Docker instance name. */
  name: string;
  /** The catalog's text, given the case's folder and the run id (to put `MARK=<runId>` in process desktops' env). */
  catalog: (dir: string, runId: string) => string;
  /** Whether desktops run on Docker (then its containers and network are removed at the end). */
  docker: boolean;
  replicas: number;
  /** More settings of the control plane (POOL_INTERVAL_MS, RECONCILE_INTERVAL_MS...). */
  env?: Record<string, string>;
}

export interface DeployedTopology {
  dir: string;
  runId: string;
  controlPlaneUrl: string;
  controlPlaneMetricsUrl: string;
  /** What a browser opens: the first replica. */
  publicUrl: string;
  replicas: { url: string; metricsUrl: string }[];
  redisUrl: string;
  /** An admin (`bench-admin`), signed in at the control plane. */
  admin: Api;
  signIn(username: string): Promise<Api>;
  close(): Promise<void>;
}

/**
 * Every service binds port 0 and says where it listens, but for the first replica: its address is
 * the control plane's PUBLIC_URL, so it is chosen before the control plane starts, and another
 * process on this machine (an outgoing connection's ephemeral port, another test) can take it in
 * the meantime. Then the whole topology starts again, up to three times.
 */
export async function startDeployedTopology(runDir: string, options: DeployedOptions, log: (m: string) => void): Promise<DeployedTopology> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(runDir, options, log, attempt);
    } catch (err) {
      if (attempt >= 3 || !/EADDRINUSE/.test((err as Error).message)) throw err;
      log(`${options.name}: a port chosen in advance was taken meanwhile; starting again (${(err as Error).message.slice(0, 200)})`);
    }
  }
}

async function startOnce(runDir: string, options: DeployedOptions, log: (m: string) => void, attempt: number): Promise<DeployedTopology> {
  const runId = randomBytes(4).toString('hex');
  const dir = path.join(runDir, attempt === 1 ? options.name : `${options.name}-attempt-${attempt}`);
  mkdirSync(dir, { recursive: true });
  const catalog = path.join(dir, 'catalog.yaml');
  writeFileSync(catalog, options.catalog(dir, runId));
  const instance = `bench-${options.name}-${runId}`;
  const network = `deskhub-${instance}`;
  const services: ServiceProcess[] = [];
  let redis: RedisServer | undefined;
  let postgres: PostgresCluster | undefined;
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= closeOnce());
  const closeOnce = async () => {
    // The control plane first, so nothing starts desktops any more; then what it leaves by design.
    await services[0]?.stop().catch(() => {});
    await Promise.all(services.slice(1).map((s) => s.stop().catch(() => {})));
    if (options.docker) await dockerCleanup(instance, network);
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
    const publicPort = await freePort();
    const publicUrl = `http://127.0.0.1:${publicPort}`;
    log(`${options.name}: starting the control plane and ${options.replicas} proxy replicas`);
    const controlPlane = await startService({
        entry: 'services/control-plane/src/main.ts',
        readyMessage: 'control plane listening',
        env: {
          PORT: '0',
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
          ...options.env,
        },
        timeoutMs: 120_000,
        logFile: path.join(dir, 'control-plane.log'),
      });
    services.push(controlPlane);
    const controlPlaneUrl = String(controlPlane.ready.url);
    const controlPlaneMetricsUrl = String(controlPlane.ready.metrics).replace(/\/metrics$/, '');
    await waitFor('control plane /readyz', async () => ((await fetch(`${controlPlaneUrl}/readyz`)).status === 200 ? true : undefined), 60_000);
    const allocatorEnv = deployedAllocatorEnv(path.resolve(import.meta.dirname, '../..'));
    const replicas: DeployedTopology['replicas'] = [];
    for (let i = 0; i < options.replicas; i++) {
      const replica = await startService({
        entry: 'services/proxy/src/main.ts',
        readyMessage: 'proxy listening',
        env: {
          ...allocatorEnv,
          PORT: i === 0 ? String(publicPort) : '0',
          HOST: '127.0.0.1',
          METRICS_PORT: '0',
          REDIS_URL: redis.url,
          CONTROL_PLANE_URL: controlPlaneUrl,
          PUBLIC_URL: publicUrl,
          AUTH_MODE: 'dev',
        },
        logFile: path.join(dir, `replica-${i + 1}.log`),
      });
      services.push(replica);
      const url = String(replica.ready.url);
      await waitFor(`replica ${i + 1} /readyz`, async () => ((await fetch(`${url}/readyz`)).status === 200 ? true : undefined), 30_000);
      replicas.push({ url, metricsUrl: String(replica.ready.metricsUrl) });
    }
    const admin = await Api.signIn(controlPlaneUrl, 'bench-admin');
    return {
      dir,
      runId,
      controlPlaneUrl,
      controlPlaneMetricsUrl,
      publicUrl,
      replicas,
      redisUrl: redis.url,
      admin,
      signIn: (username) => Api.signIn(controlPlaneUrl, username),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** create→running of a series of creates. */
export interface Series {
  /** create→running per create, ms, in order. */
  samplesMs: number[];
  medianMs: number;
  p99Ms: number;
  maxMs: number;
  /** Until POST /api/desktops answered (201), median, ms. */
  answeredMedianMs: number;
}

export interface Created {
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
export async function timedCreate(api: Api, type: string, name?: string): Promise<Created> {
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

export function series(created: Created[]): Series {
  const samples = created.map((c) => c.runningMs);
  return {
    samplesMs: samples.map((v) => Math.round(v * 10) / 10),
    medianMs: median(samples),
    p99Ms: percentile(samples, 99),
    maxMs: Math.max(...samples),
    answeredMedianMs: median(created.map((c) => c.answeredMs)),
  };
}

/** A Prometheus text exposition's samples: `name{labels}` → value. */
export async function scrape(metricsUrl: string): Promise<Map<string, number>> {
  const res = await fetch(`${metricsUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
  if (res.status !== 200) throw new Error(`${metricsUrl}/metrics: ${res.status}`);
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}
