/**
 * The deployed topology the soak breaks, every part a real process of its own: a private Redis,
 * a private Postgres cluster, the control plane (`src/main.ts`, Docker runtime, the locally built
 * kasm-test image) and two proxy replicas A and B, which know routes only through Redis. Desktops
 * are containers labelled with this run's own instance name (DESKHUB_INSTANCE) on a network of
 * their own, so the soak only ever counts and removes its own containers.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startPostgresCluster, type PostgresCluster } from '../../packages/testkit/src/postgres-cluster.ts';
import { startRedis, type RedisServer } from '../../packages/testkit/src/redis.ts';
import { freePort } from '../../packages/testkit/src/net.ts';
import { startService, type ServiceProcess } from '../../packages/testkit/src/service.ts';
import { deployedAllocatorEnv } from '../../bench/lib/deskhub.ts';
import { repoRoot } from '../../packages/testkit/src/service.ts';
import { catalogYaml, shippedType, shippedTypes } from '../../services/control-plane/test/catalog-fixtures.ts';
import { dockerCleanup } from './docker.ts';
import { RUN_MARK } from './processes.ts';

export type ReplicaName = 'A' | 'B';

export interface Desktop {
  id: string;
  proxyPath: string;
  state: string;
  reason?: string | null;
}

export interface TopologyOptions {
  runDir: string;
  /** Marks every process of the run (environment), so strays can be found in /proc. */
  runId: string;
  /** How often the control plane reconciles (RECONCILE_INTERVAL_MS). */
  reconcileMs: number;
}

export interface Topology {
  readonly instance: string;
  readonly redis: RedisServer;
  readonly postgres: PostgresCluster;
  controlPlane: ServiceProcess | null;
  readonly controlPlaneUrl: string;
  readonly replicas: Record<ReplicaName, { url: string; metricsUrl: string; service: ServiceProcess | null }>;
  /** An API call to the control plane as the soak's user; the JSON answer, or throws with the status. */
  api<T = unknown>(method: string, apiPath: string, body?: unknown, timeoutMs?: number): Promise<T>;
  /** A desktop of `type` (default kasm-test; `kasm-home` is the same image with a home). */
  createDesktop(type?: string): Promise<Desktop>;
  listDesktops(): Promise<Desktop[]>;
  /** Waits until the desktop is running (throws when it fails or the time is up). */
  waitRunning(id: string, timeoutMs?: number): Promise<Desktop>;
  startControlPlane(): Promise<void>;
  killControlPlane(): Promise<void>;
  startReplica(name: ReplicaName): Promise<void>;
  killReplica(name: ReplicaName): Promise<void>;
  close(): Promise<void>;
}

export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      if ((err as { final?: boolean }).final) throw err; // no point waiting longer
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function startTopology(options: TopologyOptions): Promise<Topology> {
  const instance = `soak-${options.runId}`;
  const logDir = path.join(options.runDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const [redis, postgres, cpPort, portA, portB, metricsA, metricsB] = await Promise.all([
    startRedis(), startPostgresCluster(), freePort(), freePort(), freePort(), freePort(), freePort(),
  ]);
  const controlPlaneUrl = `http://127.0.0.1:${cpPort}`;
  const publicUrl = `http://127.0.0.1:${portA}`;
  const mark = { [RUN_MARK]: options.runId };
  // The shipped catalog, plus kasm-test with a home (the docker-restart scenario checks its files).
  const catalog = path.join(options.runDir, 'catalog.yaml');
  writeFileSync(
    catalog,
    catalogYaml([...shippedTypes(), shippedType('kasm-test', { id: 'kasm-home', name: 'Kasm test desktop with a home', home: { path: '/home/kasm-user' } })]),
  );
  const cpEnv = {
    ...mark,
    CATALOG: catalog,
    PORT: String(cpPort),
    HOST: '127.0.0.1',
    METRICS_PORT: '0',
    PUBLIC_URL: publicUrl,
    DATA_DIR: path.join(options.runDir, 'control-plane-data'),
    DATABASE_URL: postgres.url,
    SECRET_KEY: randomBytes(32).toString('base64'),
    REDIS_URL: redis.url,
    RUNTIME: 'docker',
    DESKHUB_INSTANCE: instance,
    DOCKER_NETWORK: `deskhub-${instance}`,
    AUTH_MODE: 'dev',
    RECONCILE_INTERVAL_MS: String(options.reconcileMs),
    MAX_DESKTOPS_PER_USER: '0',
    MAX_DESKTOPS_TOTAL: '0',
  };
  // Replicas run as deployed: on the allocator of deploy/allocator.env (jemalloc).
  const allocatorEnv = deployedAllocatorEnv(repoRoot);
  const replicaEnv = (port: number, metricsPort: number) => ({
    ...allocatorEnv,
    ...mark,
    PORT: String(port),
    METRICS_PORT: String(metricsPort),
    REDIS_URL: redis.url,
    CONTROL_PLANE_URL: controlPlaneUrl,
    PUBLIC_URL: publicUrl,
    AUTH_MODE: 'dev',
  });
  const ports: Record<ReplicaName, [number, number]> = { A: [portA, metricsA], B: [portB, metricsB] };
  let session = '';

  const topology: Topology = {
    instance,
    redis,
    postgres,
    controlPlane: null,
    controlPlaneUrl,
    replicas: {
      A: { url: `http://127.0.0.1:${portA}`, metricsUrl: `http://127.0.0.1:${metricsA}/metrics`, service: null },
      B: { url: `http://127.0.0.1:${portB}`, metricsUrl: `http://127.0.0.1:${metricsB}/metrics`, service: null },
    },
    async api<T>(method: string, apiPath: string, body?: unknown, timeoutMs = 30_000): Promise<T> {
      const res = await fetch(`${controlPlaneUrl}${apiPath}`, {
        method,
        headers: { cookie: session, 'x-deskhub-csrf': '1', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      if (res.status >= 300) throw new Error(`${method} ${apiPath}: ${res.status} ${text.slice(0, 300)}`);
      return (text ? JSON.parse(text) : undefined) as T;
    },
    createDesktop: (type = 'kasm-test') => topology.api<Desktop>('POST', '/api/desktops', { type }),
    listDesktops: () => topology.api<Desktop[]>('GET', '/api/desktops'),
    waitRunning: (id, timeoutMs = 60_000) =>
      waitFor(`desktop ${id} running`, async () => {
        const d = await topology.api<Desktop>('GET', `/api/desktops/${id}`);
        if (d.state === 'failed') throw Object.assign(new Error(`desktop ${d.proxyPath} failed: ${d.reason}`), { final: true });
        return d.state === 'running' ? d : undefined;
      }, timeoutMs),
    async startControlPlane() {
      topology.controlPlane = await startService({
        entry: 'services/control-plane/src/main.ts',
        readyMessage: 'control plane listening',
        env: cpEnv,
        timeoutMs: 120_000,
        logFile: path.join(logDir, 'control-plane.log'),
      });
      await waitFor('control plane /readyz', async () => ((await fetch(`${controlPlaneUrl}/readyz`)).status === 200 ? true : undefined), 60_000);
    },
    async killControlPlane() {
      await topology.controlPlane?.kill();
      topology.controlPlane = null;
    },
    async startReplica(name) {
      const [port, metricsPort] = ports[name];
      topology.replicas[name].service = await startService({
        entry: 'services/proxy/src/main.ts',
        readyMessage: 'proxy listening',
        env: replicaEnv(port, metricsPort),
        logFile: path.join(logDir, `replica-${name}.log`),
      });
      await waitFor(`replica ${name} /readyz`, async () => ((await fetch(`${topology.replicas[name].url}/readyz`)).status === 200 ? true : undefined), 30_000);
    },
    async killReplica(name) {
      await topology.replicas[name].service?.kill();
      topology.replicas[name].service = null;
    },
    async close() {
      await Promise.all([topology.controlPlane?.stop(), topology.replicas.A.service?.stop(), topology.replicas.B.service?.stop()]);
      await dockerCleanup(instance, `deskhub-${instance}`);
      await redis.close();
      await postgres.close();
    },
  };

  try {
    await topology.startControlPlane();
    await Promise.all([topology.startReplica('A'), topology.startReplica('B')]);
    const login = await fetch(`${controlPlaneUrl}/auth/dev-login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'soak' }),
    });
    if (login.status !== 200) throw new Error(`dev-login: ${login.status} ${await login.text()}`);
    session = login.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  } catch (err) {
    await topology.close().catch(() => {});
    throw err;
  }
  return topology;
}
