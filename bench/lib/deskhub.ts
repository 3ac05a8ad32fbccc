/**
 * deskhub's side of a benchmark run: a Redis started for the run, the route stream on it with
 * the harness acting as the control plane (the only publisher), and proxy replicas started as
 * separate processes from services/proxy/src/main.ts so their CPU and memory can be read.
 */
import { buildPackage, compiledPackages } from '../../scripts/build-dist.ts';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { allocatorInUse, createLogger, parseEnvFile, type Allocator } from '../../packages/config/src/index.ts';
import { createRouteStream, type Route, type RoutePublisher, type RouteStream, type Snapshot } from '../../packages/route-stream/src/index.ts';
import { startRedis } from '../../packages/testkit/src/redis.ts';
import { spawnService, type Service } from './child.ts';

export interface ReplicaOptions {
  name: string;
  port: number;
  metricsPort: number;
  upstreamPort: number;
  /** Extra environment, e.g. ACCESS_TOKEN_PUBLIC_KEYS and PUBLIC_URL for the authorized variant. */
  env?: Record<string, string>;
  /** Entry point to run instead of services/proxy/src/main.ts (another version of the proxy: compare.ts). */
  main?: string;
}

/** The allocator settings replicas are deployed with (deploy/allocator.env): every replica here starts with them. */
export function deployedAllocatorEnv(repoRoot: string): Record<string, string> {
  const file = path.join(repoRoot, 'deploy/allocator.env');
  return parseEnvFile(readFileSync(file, 'utf8'), file);
}

/** The allocator a running replica actually uses (the preload may have been ignored). */
export function replicaAllocator(pid: number): Allocator {
  return allocatorInUse(readFileSync(`/proc/${pid}/maps`, 'utf8'));
}

/** Owner of every route the harness publishes: the user the deskhub+auth target mints its token for. */
export const BENCH_OWNER = 'bench-owner';

export interface DeskhubStream {
  redisUrl: string;
  keyPrefix: string;
  stream: RouteStream;
  publisher: RoutePublisher;
  /** Last published version. */
  version: number;
  /** Publishes a route to the upstream on 127.0.0.1:port; resolves with its version. */
  put(routePath: string, upstreamPort: number): Promise<number>;
  startReplica(opts: ReplicaOptions): Service;
  /** A second stream on the same Redis under another prefix (snapshot figures use their own key space). */
  openStream(keyPrefix: string): Promise<RouteStream>;
  close(): Promise<void>;
}

export function benchRoute(routePath: string, upstreamPort: number): Route {
  return {
    path: routePath,
    desktopId: routePath,
    owner: BENCH_OWNER,
    shares: [],
    upstream: { scheme: 'http', host: '127.0.0.1', port: upstreamPort, verifyTls: false },
    stripPrefix: true,
    authorization: null,
    entryQuery: '',
    state: 'running',
  };
}

/** What a proxy replica loads: the proxy and the workspace packages it imports. */
const PROXY_PACKAGES = ['packages/config', 'packages/route-stream', 'packages/access-token', 'services/proxy'];

/** `nodeArgs` go before the entry point of every replica (e.g. --cpu-prof). */
export async function startDeskhubStream(repoRoot: string, runDir: string, nodeArgs: string[] = []): Promise<DeskhubStream> {
  // Replicas run as deployed: the compiled proxy (scripts/build-dist.ts), no TypeScript loader;
  // built here when its sources (or the packages it loads) changed. The rest is not the proxy's.
  for (const pkg of compiledPackages.filter((p) => PROXY_PACKAGES.includes(p.dir))) buildPackage(pkg, true);
  const main = path.join(repoRoot, 'services/proxy/dist/main.js');
  const allocatorEnv = deployedAllocatorEnv(repoRoot);
  const redis = await startRedis();
  const logger = createLogger('bench', 'warn');
  const keyPrefix = 'bench:';
  const streams: RouteStream[] = [];
  const openStream = async (prefix: string) => {
    const s = createRouteStream({ redisUrl: redis.url, keyPrefix: prefix, logger });
    streams.push(s);
    return s;
  };
  const stream = await openStream(keyPrefix);
  const publisher = stream.publisher();
  const replicas: Service[] = [];
  const state: DeskhubStream = {
    redisUrl: redis.url,
    keyPrefix,
    stream,
    publisher,
    version: 1,
    async put(routePath, upstreamPort) {
      const version = ++state.version;
      const applied = await publisher.publish({ version, op: 'put', route: benchRoute(routePath, upstreamPort) });
      if (!applied) throw new Error(`deskhub: publisher refused version ${version}`);
      return version;
    },
    startReplica(opts) {
      const entry = opts.main ?? main;
      if (!existsSync(entry)) throw new Error(`deskhub: ${entry} does not exist (the proxy is not built)`);
      // Another version's sources (compare.ts) run through tsx; the built proxy with its packages' dist/.
      const loader = entry.endsWith('.ts') ? ['--import', 'tsx'] : ['--conditions=deskhub-dist'];
      const service = spawnService({
        name: opts.name,
        command: process.execPath,
        args: [...nodeArgs, ...loader, entry],
        cwd: repoRoot,
        env: {
          PORT: String(opts.port),
          HOST: '127.0.0.1',
          METRICS_PORT: String(opts.metricsPort),
          REDIS_URL: redis.url,
          ROUTE_STREAM_PREFIX: keyPrefix,
          AUTH_MODE: 'dev',
          // Paths outside /desktop/ are not measured; the upstream answers them.
          CONTROL_PLANE_URL: `http://127.0.0.1:${opts.upstreamPort}`,
          LOG_LEVEL: 'warn',
          NODE_ENV: 'production',
          ...allocatorEnv,
          ...opts.env,
        },
        logDir: runDir,
      });
      replicas.push(service);
      return service;
    },
    openStream,
    async close() {
      await Promise.all(replicas.map((r) => r.stop()));
      for (const s of streams) await s.close().catch(() => {});
      await redis.close();
    },
  };
  const snapshot: Snapshot = { version: 1, routes: [] };
  await publisher.republish(snapshot);
  return state;
}
