/**
 * The ways the same traffic reaches the upstream: direct, nginx, HAProxy, configurable-http-proxy,
 * deskhub's proxy, and deskhub's proxy with access control on (every request carries a valid
 * access cookie, so its figures show what authorization costs). Each target exposes the upstream under a URL prefix, names the process
 * whose CPU and memory are measured, and can make an unrelated route change (for the figure
 * "a route change with WebSockets open").
 */
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { freePort, httpGet, portOpen, spawnService, waitUntil, type Service } from './child.ts';
import { nginxArgs, reloadNginx, writeNginxConf, type NginxConfig } from './nginx.ts';
import { haproxyArgs, writeHaproxyConf, type HaproxyConfig } from './haproxy.ts';
import type { DeskhubStream } from './deskhub.ts';
import { openFileLimit } from './machine.ts';
import { ACCESS_COOKIE_NAME, createSigner, generateKeyPair } from '../../packages/access-token/src/index.ts';
import { BENCH_OWNER } from './deskhub.ts';
import { openSocket } from './ws-load.ts';

export type TargetName = 'direct' | 'nginx' | 'haproxy' | 'chp' | 'deskhub' | 'deskhub+auth';
export const allTargets: TargetName[] = ['direct', 'nginx', 'haproxy', 'chp', 'deskhub', 'deskhub+auth'];
/** deskhub+auth only answers the question "what does authorization cost": the figures where it can matter. */
export const authFigures = ['small', 'mib', 'rtt'] as const;

export const targetLabels: Record<TargetName, string> = {
  direct: 'direct',
  nginx: 'nginx (1 worker)',
  haproxy: 'HAProxy (1 thread)',
  chp: 'configurable-http-proxy',
  deskhub: 'deskhub proxy',
  'deskhub+auth': 'deskhub proxy + auth',
};

export interface Target {
  name: TargetName;
  /** Prefix of every HTTP URL, ending in "/": `${httpBase}small`. */
  httpBase: string;
  wsBase: string;
  /** Sent with every HTTP request and WebSocket handshake (deskhub+auth: the access cookie). */
  headers: Record<string, string>;
  /** Root of the process tree whose CPU and memory count as the proxy's; null for direct. */
  pid: number | null;
  /** Adds a route to another upstream and resolves once this target serves it. */
  changeRoute(n: number): Promise<void>;
  /** deskhub's replicas: V8's used heap, from the replica's /metrics. */
  heapBytes?(): Promise<number>;
  stop(): Promise<void>;
}

export interface TargetContext {
  repoRoot: string;
  runDir: string;
  upstreamPort: number;
  /** Largest number of WebSockets a figure holds open at once (sizes nginx's connection table). */
  maxSockets: number;
  deskhub: () => Promise<DeskhubStream>;
}

function bases(port: number, prefix: string): { httpBase: string; wsBase: string; headers: Record<string, string> } {
  return { httpBase: `http://127.0.0.1:${port}${prefix}`, wsBase: `ws://127.0.0.1:${port}${prefix}`, headers: {} };
}

/** Polls a URL until it answers 200: how each target proves a new route is live. */
async function waitServed(service: Service | null, url: string, headers: Record<string, string> = {}): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (service && service.child.exitCode !== null) throw new Error(`${service.name} exited`);
    const r = await httpGet(url, headers).catch(() => ({ status: 0, body: '' }));
    if (r.status === 200) return;
    await new Promise((res) => setTimeout(res, 5));
  }
  throw new Error(`${url} not served within 30 s`);
}

async function startDirect(ctx: TargetContext): Promise<Target> {
  return {
    name: 'direct',
    ...bases(ctx.upstreamPort, '/'),
    pid: null,
    async changeRoute() {
      // Nothing to change: there is no proxy.
    },
    async stop() {},
  };
}

/**
 * A proxy run from a configuration file of locations (nginx, HAProxy): checked installed, started
 * on the bench route, and a route change is a new location and the proxy's own graceful reload.
 */
async function startConfigured<C extends { port: number; locations: Array<{ prefix: string; upstreamPort: number }> }>(
  ctx: TargetContext,
  proxy: { name: 'nginx' | 'haproxy'; label: string; package: string; conf: C; write(conf: C): void; args(conf: C): string[]; reload(conf: C, service: Service): void },
): Promise<Target> {
  try {
    execFileSync(proxy.name, ['-v'], { stdio: 'ignore' });
  } catch {
    throw new Error(`${proxy.name} is not installed: run scripts/ensure-services.sh (Debian package ${proxy.package})`);
  }
  const { conf } = proxy;
  proxy.write(conf);
  const service = spawnService({ name: proxy.name, command: proxy.name, args: proxy.args(conf), logDir: ctx.runDir });
  const b = bases(conf.port, '/desktop/bench/');
  await waitUntil(service, `${proxy.label} serving the bench route`, async () => (await httpGet(`${b.httpBase}small`)).status === 200);
  return {
    name: proxy.name,
    ...b,
    pid: service.pid,
    async changeRoute(n) {
      conf.locations.push({ prefix: `/desktop/other-${n}/`, upstreamPort: ctx.upstreamPort });
      proxy.reload(conf, service);
      await waitServed(service, `http://127.0.0.1:${conf.port}/desktop/other-${n}/small`);
    },
    stop: () => service.stop(),
  };
}

async function startNginx(ctx: TargetContext): Promise<Target> {
  const conf: NginxConfig = {
    dir: path.join(ctx.runDir, 'nginx'),
    port: await freePort(),
    // Two connections per WebSocket plus room, and nginx starts shedding connections that wait
    // for a request once fewer than 1/16 are free: size so the largest socket count stays under that.
    workerConnections: Math.ceil(((2 * ctx.maxSockets + 512) * 16) / 15),
    fileLimit: openFileLimit('hard'),
    locations: [{ prefix: '/desktop/bench/', upstreamPort: ctx.upstreamPort }],
  };
  return startConfigured(ctx, { name: 'nginx', label: 'nginx', package: 'nginx-light', conf, write: writeNginxConf, args: nginxArgs, reload: reloadNginx });
}

async function startHaproxy(ctx: TargetContext): Promise<Target> {
  const conf: HaproxyConfig = {
    dir: path.join(ctx.runDir, 'haproxy'),
    port: await freePort(),
    connections: ctx.maxSockets + 512,
    fileLimit: openFileLimit('hard'),
    locations: [{ prefix: '/desktop/bench/', upstreamPort: ctx.upstreamPort }],
  };
  return startConfigured(ctx, {
    name: 'haproxy',
    label: 'HAProxy',
    package: 'haproxy',
    conf,
    write: writeHaproxyConf,
    args: haproxyArgs,
    // Master-worker reload: a new worker takes new connections; the old one keeps its WebSockets.
    reload: (c, service) => {
      writeHaproxyConf(c);
      process.kill(service.pid, 'SIGUSR2');
    },
  });
}

async function startChp(ctx: TargetContext): Promise<Target> {
  const bin = path.join(ctx.repoRoot, 'node_modules/configurable-http-proxy/bin/configurable-http-proxy');
  if (!existsSync(bin)) {
    throw new Error('configurable-http-proxy is not installed: run `npx -y pnpm@10 install` at the repository root');
  }
  const port = await freePort();
  const apiPort = await freePort();
  const token = `bench-${process.pid}-${Date.now()}`;
  const service = spawnService({
    name: 'chp',
    command: process.execPath,
    args: [bin, '--ip', '127.0.0.1', '--port', String(port), '--api-ip', '127.0.0.1', '--api-port', String(apiPort),
      '--no-include-prefix', '--log-level', 'warn'],
    env: { CONFIGPROXY_AUTH_TOKEN: token },
    logDir: ctx.runDir,
  });
  await waitUntil(service, 'the CHP API port', () => portOpen(apiPort));
  const addRoute = async (prefix: string) => {
    const res = await fetch(`http://127.0.0.1:${apiPort}/api/routes${prefix}`, {
      method: 'POST',
      headers: { authorization: `token ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ target: `http://127.0.0.1:${ctx.upstreamPort}` }),
    });
    if (res.status !== 201) throw new Error(`CHP refused route ${prefix}: ${res.status} ${await res.text()}`);
  };
  await addRoute('/desktop/bench');
  const b = bases(port, '/desktop/bench/');
  await waitServed(service, `${b.httpBase}small`);
  return {
    name: 'chp',
    ...b,
    pid: service.pid,
    async changeRoute(n) {
      await addRoute(`/desktop/other-${n}`);
      await waitServed(service, `http://127.0.0.1:${port}/desktop/other-${n}/small`);
    },
    stop: () => service.stop(),
  };
}

async function startDeskhub(ctx: TargetContext): Promise<Target> {
  const stream = await ctx.deskhub();
  const port = await freePort();
  const metricsPort = await freePort();
  await stream.put('bench', ctx.upstreamPort);
  const service = stream.startReplica({ name: 'deskhub', port, metricsPort, upstreamPort: ctx.upstreamPort });
  const b = bases(port, '/desktop/bench/');
  await waitUntil(service, 'deskhub proxy ready and serving the bench route', async () => (await httpGet(`${b.httpBase}small`)).status === 200, 60_000);
  return {
    name: 'deskhub',
    ...b,
    pid: service.pid,
    heapBytes: () => replicaHeapBytes(metricsPort),
    async changeRoute(n) {
      await stream.put(`other-${n}`, ctx.upstreamPort);
      await waitServed(service, `http://127.0.0.1:${port}/desktop/other-${n}/small`);
    },
    stop: () => service.stop(),
  };
}

/** A replica's used V8 heap, from its Prometheus metrics (prom-client's default metrics). */
export async function replicaHeapBytes(metricsPort: number): Promise<number> {
  const text = (await httpGet(`http://127.0.0.1:${metricsPort}/metrics`)).body;
  const m = /^deskhub_proxy_nodejs_heap_size_used_bytes\s+(\d+(?:\.\d+)?(?:e\+?\d+)?)/m.exec(text);
  if (!m) throw new Error('the replica\'s /metrics has no deskhub_proxy_nodejs_heap_size_used_bytes');
  return Number(m[1]);
}

/**
 * The same proxy process as `deskhub`, with ACCESS_TOKEN_PUBLIC_KEYS (a key pair made here, the
 * harness being the control plane) and PUBLIC_URL its own origin. Before any figure it proves
 * the cookie is what lets requests through, so a figure can never be a measurement of 401s.
 */
async function startDeskhubAuth(ctx: TargetContext): Promise<Target> {
  const stream = await ctx.deskhub();
  const port = await freePort();
  const metricsPort = await freePort();
  const publicUrl = `http://127.0.0.1:${port}`;
  const pair = generateKeyPair();
  // The verifier refuses lifetimes over an hour; a full run takes about 20 minutes.
  const signer = createSigner({ privateKey: pair.privateKeyPem, lifetimeMs: 55 * 60_000 });
  const { token } = signer.sign({ userId: BENCH_OWNER, username: 'bench', sessionId: `bench-${process.pid}` });
  await stream.put('bench', ctx.upstreamPort);
  const service = stream.startReplica({
    name: 'deskhub-auth',
    port,
    metricsPort,
    upstreamPort: ctx.upstreamPort,
    env: { ACCESS_TOKEN_PUBLIC_KEYS: pair.publicKeyPem, PUBLIC_URL: publicUrl },
  });
  const b = bases(port, '/desktop/bench/');
  const headers = { cookie: `${ACCESS_COOKIE_NAME}=${token}` };
  await waitUntil(service, 'deskhub+auth proxy ready and serving the bench route to the owner', async () => (await httpGet(`${b.httpBase}small`, headers)).status === 200, 60_000);
  const without = await httpGet(`${b.httpBase}small`);
  if (without.status !== 401 && without.status !== 302) {
    await service.stop();
    throw new Error(`deskhub+auth: a request without the access cookie got ${without.status}, not 401/302: access control is not on, the figures would not measure it`);
  }
  // One character well inside the signature changed: always other signature bytes. (Replacing the
  // last two characters, as this did, left the same bytes one time in 256: base64url's last
  // character carries padding bits that decoders ignore.)
  const at = token.length - 10;
  const forgedToken = token.slice(0, at) + (token[at] === 'A' ? 'B' : 'A') + token.slice(at + 1);
  const forged = await httpGet(`${b.httpBase}small`, { cookie: `${ACCESS_COOKIE_NAME}=${forgedToken}` });
  if (forged.status !== 401) {
    await service.stop();
    throw new Error(`deskhub+auth: a request with a forged token got ${forged.status}, not 401`);
  }
  (await openSocket(`${b.wsBase}check`, 30_000, headers)).terminate();
  const refused = await openSocket(`${b.wsBase}check`).then((ws) => (ws.terminate(), null), (err: Error) => err);
  if (!refused) {
    await service.stop();
    throw new Error('deskhub+auth: a WebSocket upgrade without the access cookie was accepted');
  }
  return {
    name: 'deskhub+auth',
    ...b,
    headers,
    pid: service.pid,
    async changeRoute(n) {
      await stream.put(`other-${n}`, ctx.upstreamPort);
      await waitServed(service, `http://127.0.0.1:${port}/desktop/other-${n}/small`, headers);
    },
    stop: () => service.stop(),
  };
}

export async function startTarget(name: TargetName, ctx: TargetContext): Promise<Target> {
  switch (name) {
    case 'direct':
      return startDirect(ctx);
    case 'nginx':
      return startNginx(ctx);
    case 'haproxy':
      return startHaproxy(ctx);
    case 'chp':
      return startChp(ctx);
    case 'deskhub':
      return startDeskhub(ctx);
    case 'deskhub+auth':
      return startDeskhubAuth(ctx);
  }
}
