/**
 * What the Docker tests share: building the images once (build.sh skips an image whose content
 * hash is present; a lock keeps parallel test files from building the same image twice), a
 * runtime scoped to one test file (its own instance label and network, removed at the end),
 * catalog entries for the local images, and a TCP reachability probe run inside a container.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
import { DockerRuntime, type DockerRuntimeOptions } from '../src/runtime/docker/docker-runtime.ts';
import { removeHostGuard } from '../src/runtime/docker/host-guard.ts';
import { NO_CLOCKS } from '../src/lifecycle/clocks.ts';
import { KASM_SHARING, type CatalogEntry } from '../src/catalog.ts';
import type { DesktopRuntime, DesktopSpec, RuntimeInstance } from '../src/runtime/types.ts';
import type { Test } from 'tap';
import { createTestDatabase } from '@deskhub/testkit/postgres';
import { startEmbedded, type RunningDeskhub } from '../src/embedded-start.ts';
import { waitFor } from './helpers.ts';

const run = promisify(execFile);
export const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));

/**
 * Builds (or finds up to date) one image from deploy/images (`stack`: docker-compose.yml's three;
 * `deskhub`: the one of them the Swarm runtime's node guard runs);
 * serialised across test files. The stack has a lock of its own: its images share nothing with
 * the desktop images but the debootstrap tarball, which build.sh makes once under a lock of its own.
 */
export async function buildImage(target: 'kasm-test' | 'desktop' | 'stack' | 'deskhub'): Promise<void> {
  const lock = target === 'stack' || target === 'deskhub' ? '/tmp/deskhub-image-build-stack.lock' : '/tmp/deskhub-image-build.lock';
  await run('flock', [lock, 'bash', 'deploy/images/build.sh', target], {
    cwd: repoRoot,
    timeout: 15 * 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
}

export function randomId(): string {
  return randomBytes(6).toString('hex');
}

export function kasmTestType(overrides: Partial<CatalogEntry> = {}): CatalogEntry {
  return {
    id: 'kasm-test',
    name: 'Kasm contract test desktop',
    runtime: 'docker',
    image: 'deskhub/kasm-test:local',
    pullPolicy: 'never',
    port: 6901,
    scheme: 'https',
    verifyTls: false,
    stripPrefix: true,
    credentials: { kind: 'kasm' },
    activity: { on: 'input', rfb: 'kasmvnc' },
    clocks: NO_CLOCKS,
    settingsHash: 'test',
    sharing: KASM_SHARING,
    env: {},
    shmSize: '64m',
    memory: '256m',
    cpus: 0.5,
    pids: 200,
    readiness: { path: '/', timeoutSeconds: 30 },
    entryQuery: 'path={path}/websockify',
    ...overrides,
  };
}

export function specFor(type: CatalogEntry, env: Record<string, string> = {}, proxyPath = `t-${randomId()}`): DesktopSpec {
  const desktopId = `d${randomId()}`;
  return {
    desktopId,
    ownerId: 'u-test',
    ownerName: 'test',
    proxyPath,
    type,
    env: { VNC_PW: `pw${randomId()}${randomId()}`, DESKTOP_NAME: proxyPath, ...env },
  };
}

/** A runtime with its own instance label and network, and a cleanup that removes both. */
export function testRuntime(options: Partial<DockerRuntimeOptions> = {}): { runtime: DockerRuntime; cleanup: () => Promise<void> } {
  const id = randomId();
  const runtime = new DockerRuntime({ instance: `t-${id}`, networkName: `deskhub-test-${id}`, ...options });
  const cleanup = async () => {
    await runtime.close();
    await removeInstance(runtime.docker, runtime.instance);
    const network = runtime.docker.getNetwork(runtime.networkName);
    const info = (await network.inspect().catch(() => null)) as { Id: string; Options?: Record<string, string> } | null;
    if (info) {
      await network.remove().catch(() => undefined);
      const bridge = info.Options?.['com.docker.network.bridge.name'] ?? `br-${info.Id.slice(0, 12)}`;
      await removeHostGuard(bridge).catch(() => undefined);
    }
  };
  return { runtime, cleanup };
}

export async function removeInstance(docker: Docker, instance: string): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: { label: [`deskhub.instance=${instance}`] } });
  await Promise.all(containers.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined)));
  // Homes are kept on purpose by deskhub; a test's own are removed with its instance.
  const volumes = (await docker.listVolumes({ filters: { label: [`deskhub.instance=${instance}`] } })).Volumes ?? [];
  await Promise.all(volumes.map((v) => docker.getVolume(v.Name).remove().catch(() => undefined)));
}

export interface HttpsAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTPS GET to a desktop container (self-signed, so no verification). */
export function httpsGet(host: string, port: number, path = '/', auth?: string): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host, port, path, method: 'GET', rejectUnauthorized: false, headers: auth ? { authorization: auth } : {}, timeout: 5000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Builds the real desktop image (deploy/images: deskhub/desktop:local), runs one desktop of it
 * in a runtime scoped to this test file (removed with it at the end) and waits until it answers
 * HTTPS. The VNC servers behind may take a moment longer.
 */
export async function startDesktopImage(t: Test): Promise<{ runtime: DockerRuntime; desktop: RuntimeInstance; password: string; host: string; port: number }> {
  await buildImage('desktop');
  const { runtime, cleanup } = testRuntime();
  t.teardown(cleanup);
  const spec = specFor(
    kasmTestType({
      id: 'desktop',
      image: 'deskhub/desktop:local',
      shmSize: '256m',
      memory: '1g',
      cpus: 1,
      pids: 512,
      entryQuery: 'path=desktop/{path}/websockify&autoconnect=true&resize=remote',
    }),
  );
  const desktop = await runtime.create(spec);
  const { host, port } = desktop.upstream;
  await waitForHttps(host, port, 60_000);
  return { runtime, desktop, password: spec.env.VNC_PW!, host, port };
}

/** Basic credentials for a desktop: its owner kasm_user unless another user (kasm_viewer) is named. */
export function basicAuth(password: string, user = 'kasm_user'): string {
  return 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');
}

/** Waits (bounded: 300 tries, at most `timeoutMs`) until the desktop answers HTTPS at all. */
export async function waitForHttps(host: string, port: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (let i = 0; i < 300 && Date.now() < deadline; i++) {
    try {
      await httpsGet(host, port);
      return;
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error(`no HTTPS answer from ${host}:${port}: ${String(last)}`);
}

/**
 * Tries a TCP connection from inside a container (the kasm-test image's node) and says how it
 * went: "connected", "refused", "timeout", or "error:<code>".
 */
/** A TCP probe for `node -e PROBE host port ms`: prints connected, refused, timeout or error:CODE. */
export const TCP_PROBE = `
    const net = require('net');
    const [host, port, ms] = process.argv.slice(1);
    const s = net.connect({ host, port: Number(port) });
    const done = (what) => { console.log(what); s.destroy(); process.exit(0); };
    s.setTimeout(Number(ms), () => done('timeout'));
    s.on('connect', () => done('connected'));
    s.on('error', (e) => done(e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET' ? 'refused' : 'error:' + e.code));
  `;

export async function connectFrom(docker: Docker, containerId: string, host: string, port: number, timeoutMs = 3000): Promise<string> {
  const exec = await docker.getContainer(containerId).exec({
    Cmd: ['/usr/local/bin/node', '-e', TCP_PROBE, host, String(port), String(timeoutMs)],
    AttachStdout: true,
    AttachStderr: true,
  });
  const stream = await exec.start({ hijack: true, stdin: false });
  const out: Buffer[] = [];
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c: Buffer) => out.push(c));
  docker.modem.demuxStream(stream, stdout, stderr);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('docker exec did not finish')), timeoutMs + 15_000);
    stream.on('end', () => {
      clearTimeout(timer);
      resolve();
    });
    stream.on('error', reject);
  });
  return Buffer.concat(out).toString('utf8').trim();
}

export interface LocalRegistry {
  /** host:port, on loopback; Docker allows plain HTTP to registries on 127.0.0.0/8. */
  address: string;
  close(): Promise<void>;
}

/**
 * Runs Debian's docker-registry (the CNCF distribution registry) on 127.0.0.1, so pulls can be
 * tested for real without reaching any outside registry. The binary is unpacked from the
 * Debian package into the image cache (no service is installed or started).
 */
export async function startLocalRegistry(): Promise<LocalRegistry> {
  const cache = join(process.env.DESKHUB_IMAGE_CACHE ?? '/var/cache/deskhub-images', 'docker-registry');
  const binary = join(cache, 'usr/bin/docker-registry');
  if (!existsSync(binary)) {
    await run('mkdir', ['-p', cache]);
    await run('flock', ['/tmp/deskhub-registry-download.lock', 'sh', '-c', 'ls docker-registry_*.deb >/dev/null 2>&1 || apt-get download docker-registry'], {
      cwd: cache,
      timeout: 120_000,
    });
    const deb = readdirSync(cache).find((f) => f.startsWith('docker-registry_') && f.endsWith('.deb'));
    if (!deb) throw new Error('apt-get download docker-registry produced no package');
    await run('dpkg-deb', ['-x', join(cache, deb), cache]);
  }
  // The registry cannot report a port 0 it was given.
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'deskhub-registry-'));
  const config = join(dir, 'config.yml');
  writeFileSync(config, `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\nhttp:\n  addr: 127.0.0.1:${port}\n`);
  const child = spawn(binary, ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const address = `127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (let i = 0; i < 200; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const req = httpGet({ host: '127.0.0.1', port, path: '/v2/', timeout: 1000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('error', () => resolve(false));
    });
    if (up) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`docker-registry did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    address,
    async close() {
      child.kill('SIGTERM');
      if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs a command in a container and returns its output (for diagnostics in failure messages). */
export async function execIn(docker: Docker, containerId: string, cmd: string[]): Promise<string> {
  const exec = await docker.getContainer(containerId).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({ hijack: true, stdin: false });
  const out: Buffer[] = [];
  const sink = new PassThrough();
  sink.on('data', (c: Buffer) => out.push(c));
  docker.modem.demuxStream(stream, sink, sink);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 15_000);
    stream.on('end', () => {
      clearTimeout(timer);
      resolve();
    });
    stream.on('error', () => resolve());
  });
  return Buffer.concat(out).toString('utf8');
}

/** What a desktop-image container is doing: its processes and the logs its entrypoint keeps. */
export async function desktopDiagnostics(docker: Docker, containerId: string): Promise<string> {
  return execIn(docker, containerId, ['sh', '-c', 'ps -eo pid,stat,etime,args; for f in $HOME/.deskhub/*.log; do echo "== $f"; tail -5 "$f"; done']).catch(
    (err: Error) => `(no diagnostics: ${err.message})`,
  );
}

import { freePort } from '@deskhub/testkit/net';
export { freePort };

/** The whole of deskhub in this process on one runtime, with HTTP helpers through its public port. */
export interface DockerDeskhub<R extends DesktopRuntime = DockerRuntime> {
  deskhub: RunningDeskhub;
  runtime: R;
  /** The proxy's origin, which is PUBLIC_URL. */
  base: string;
  /** Signs in through dev-login; the Cookie header value. */
  signIn(username: string): Promise<string>;
  /** An API call with the cookie and the Origin a browser would send; the parsed JSON answer. */
  api<T>(cookie: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
}

type DeskhubEnv = Record<string, string> | ((port: number) => Record<string, string>);

/**
 * Starts deskhub (control plane + proxy + route stream) on a new test database, a temporary
 * DATA_DIR and its own Docker runtime, at a known port so PUBLIC_URL is where the proxy really
 * is; everything is removed at the test's end. `env` adds or overrides settings.
 */
export async function startDockerDeskhub(t: Test, label: string, env: DeskhubEnv = {}): Promise<DockerDeskhub> {
  return startDeskhubOn(t, label, () => {
    const { runtime, cleanup } = testRuntime();
    t.teardown(cleanup);
    return runtime;
  }, { RUNTIME: 'docker', ...(typeof env === 'function' ? {} : env) }, typeof env === 'function' ? env : undefined);
}

/** The same on a runtime the test made (the Swarm runtime on its test swarm); `makeRuntime` registers its own cleanup. */
export async function startDeskhubOn<R extends DesktopRuntime>(t: Test, label: string, makeRuntime: () => R, env: Record<string, string>, envForPort?: (port: number) => Record<string, string>): Promise<DockerDeskhub<R>> {
  const db = await createTestDatabase(label.replace(/-/g, '_'));
  t.teardown(() => db.drop());
  const dataDir = mkdtempSync(join(tmpdir(), `deskhub-${label}-`));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const runtime = makeRuntime();
  const port = await freePort();
  const deskhub = await startEmbedded({
    env: {
      PORT: String(port),
      PROXY_METRICS_PORT: '0',
      METRICS_PORT: '0',
      DATA_DIR: dataDir,
      DATABASE_URL: db.url,
      AUTH_MODE: 'dev',
      LOG_LEVEL: 'warn',
      RECONCILE_INTERVAL_MS: '1000',
      SECRET_KEY: randomBytes(32).toString('base64'),
      ...env,
      ...(envForPort ? envForPort(port) : {}),
    },
    runtimes: [runtime],
  });
  t.teardown(() => deskhub.close());
  const base = deskhub.proxyUrl;
  return {
    deskhub,
    runtime,
    base,
    signIn: (username) => devSignIn(base, username),
    api: (cookie, method, path, body) => apiCall(base, cookie, method, path, body),
  };
}

/** Signs in through dev-login at `base` (deskhub's public origin); the Cookie header value. */
export async function devSignIn(base: string, username: string): Promise<string> {
  const res = await fetch(`${base}/auth/dev-login`, { method: 'POST', headers: { 'content-type': 'application/json', origin: base }, body: JSON.stringify({ username }) });
  if (res.status >= 300) throw new Error(`dev-login answered ${res.status}: ${await res.text()}`);
  const cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  if (!cookie) throw new Error('dev-login set no cookie');
  return cookie;
}

/** An API call at `base` with the cookie and the Origin a browser would send; the parsed JSON answer. */
export async function apiCall<T>(base: string, cookie: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { cookie, origin: base, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
}

/** Dev sign-in the way scripts do (the CSRF header, no Origin): for a deskhub listening on another port than its PUBLIC_URL. */
export async function csrfSignIn(base: string, username: string): Promise<string> {
  const res = await fetch(`${base}/auth/dev-login`, {
    method: 'POST',
    // The second deskhub listens on another port than PUBLIC_URL names, so say "not cross-site"
    // the way scripts do (the CSRF header) rather than with an Origin it would refuse.
    headers: { 'content-type': 'application/json', 'x-deskhub-csrf': '1' },
    body: JSON.stringify({ username }),
  });
  if (res.status >= 300) throw new Error(`dev-login answered ${res.status}`);
  return res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
}

export async function csrfApi<T>(base: string, cookie: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { cookie, 'x-deskhub-csrf': '1', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
}

/**
 * After deskhub was killed mid-create, its next life settles the desktop: failed with no instance
 * left, or running with exactly one (`instances`: how many the runtime has of it). Resolves with
 * the desktop then, or as it stayed when it never settles, for the caller's assertions to say so.
 */
export async function settledAfterCrash<T extends { state: string }>(current: () => Promise<T>, instances: () => Promise<number>, timeoutMs: number, intervalMs: number): Promise<T> {
  return waitFor('the crashed desktop to settle', async () => {
    const v = await current();
    const n = await instances();
    return (v.state === 'failed' ? n === 0 : v.state === 'running' && n === 1) ? v : undefined;
  }, timeoutMs, intervalMs).catch(current);
}

/** Starts deskhub (`pnpm start`'s entry) as a child process with these settings; resolves once it says it is running. */
export async function startDeskhubProcess(env: Record<string, string>): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'services/control-plane/src/embedded.ts'], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`deskhub did not start: ${output}`)), 60_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('deskhub is running.')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`deskhub exited with ${code}: ${output}`));
    });
  });
  return child;
}

/**
 * A catalog file of kasm-test types that run on the swarm, removed when the test ends: each type
 * as the swarm tests use it, with `extra` fields (YAML lines such as `cpus: 0.5`) added or
 * replacing the defaults of the same name.
 */
export function swarmCatalog(t: Test, types: Array<{ id: string; name: string; extra?: string[] }>): string {
  const dir = mkdtempSync(join(tmpdir(), 'deskhub-swarm-catalog-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'catalog.yaml');
  const entry = ({ id, name, extra = [] }: { id: string; name: string; extra?: string[] }) => {
    const fields = new Map(
      [
        `id: ${id}`, `name: ${name}`, 'runtime: swarm', 'image: deskhub/kasm-test:local', 'port: 6901', 'scheme: https', 'verifyTls: false',
        'credentials: { kind: kasm }', 'activity: traffic', 'memory: 256m', 'readiness: { path: /, timeoutSeconds: 60 }', 'entryQuery: path=desktop/{path}/websockify',
        ...extra,
      ].map((line) => [line.split(':')[0]!, line] as const),
    );
    return [...fields.values()].map((line, i) => `${i === 0 ? '  - ' : '    '}${line}`).join('\n');
  };
  writeFileSync(file, `types:\n${types.map(entry).join('\n')}\n`);
  return file;
}
