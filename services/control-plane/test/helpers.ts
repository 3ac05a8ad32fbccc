/**
 * Shared pieces of the control-plane tests: a test catalog of cheap process desktops (busybox
 * httpd, the demo desktop, ones that start late or crash), the environment for a control plane
 * in a temp folder, the two databases the API suite runs on, sign-in, and bounded waiting.
 */
import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { startRedis } from '@deskhub/testkit/redis';
import type { ServiceProcess } from '@deskhub/testkit/service';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, readdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import WebSocket from 'ws';
import { createLogger } from '@deskhub/config';
import { createRouteStream, type RouteStream, type RouteSubscriber } from '@deskhub/route-stream';
import { createTestDatabase } from '@deskhub/testkit/postgres';
import { buildApp } from '../src/app.ts';
import { loadControlPlaneConfig } from '../src/config.ts';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const demoMain = path.join(repoRoot, 'packages/demo-desktop/src/main.ts');

/** A fresh temp folder, removed by `cleanup`. */
export function tempDir(label: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), `deskhub-cp-${label}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Writes a catalog of process desktops into `dir`:
 * - web: busybox httpd (ready at once, no credentials); desktop and ubuntu-desktop alike (path collisions)
 * - limited: like web, at most 1 per user and 2 in total (catalog quota)
 * - demo: the demo desktop (HTTPS, kasm credentials, WebSocket echo)
 * - late: answers only after `lateSeconds` (a create that can be interrupted)
 * - crash: exits at once with a message (with a terminal escape and a NUL in it, as real output has)
 * - kasm-test: a docker type, for "cannot run here"
 */
export function writeTestCatalog(dir: string, options: { lateSeconds?: number; readyTimeoutSeconds?: number } = {}): string {
  // Every desktop process carries the folder's name, so a test can find its processes in /proc.
  const mark = `DESKHUB_TEST_RUN: "${path.basename(dir)}"`;
  const www = path.join(dir, 'www');
  mkdirSync(www, { recursive: true });
  writeFileSync(path.join(www, 'index.html'), '<!doctype html><title>web desktop</title><p>web desktop</p>\n');
  const web = (id: string, extra = '') => `
  - id: ${id}
    name: Web ${id}
    runtime: process
    command: ["busybox", "httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "{catalogDir}/www"]
    port: 80
    scheme: http
    credentials: { kind: basic, username: webuser, passwordEnv: WEB_PASSWORD }
    env: { ${mark} }
    readiness: { path: /, timeoutSeconds: ${options.readyTimeoutSeconds ?? 30} }${extra}
`;
  const yaml = `types:
${web('web')}${web('desktop')}${web('ubuntu-desktop')}${web('limited', '\n    quota: { perUser: 1, total: 2 }')}
  - id: demo
    name: Demo desktop
    runtime: process
    command: ["{node}", "--import", "tsx", "${demoMain}"]
    workingDir: ${repoRoot}
    port: 6901
    scheme: https
    verifyTls: false
    credentials: { kind: kasm }
    env: { HOST: 127.0.0.1, PORT: "{port}", TLS: "true", DESKTOP_NAME: "{path}", ${mark} }
    readiness: { path: /, timeoutSeconds: ${options.readyTimeoutSeconds ?? 60} }
    entryQuery: path=desktop/{path}/websockify

  - id: late
    name: Late web desktop
    runtime: process
    command: ["sh", "-c", "sleep ${options.lateSeconds ?? 4}; exec busybox httpd -f -p 127.0.0.1:{port} -h {catalogDir}/www"]
    env: { ${mark} }
    port: 80
    readiness: { path: /, timeoutSeconds: 60 }

  - id: crash
    name: Crashing desktop
    runtime: process
    command: ["sh", "-c", "printf 'cannot open \\\\033[1mdisplay\\\\033[0m: no such thing\\\\000\\\\n' >&2; exit 3"]
    env: { ${mark} }
    port: 80
    readiness: { path: /, timeoutSeconds: 30 }

  - id: kasm-test
    name: Kasm test desktop
    runtime: docker
    image: deskhub/kasm-test:local
    pullPolicy: never
    port: 6901
    scheme: https
    verifyTls: false
    credentials: { kind: kasm }
    entryQuery: path=desktop/{path}/websockify
`;
  const file = path.join(dir, 'catalog.yaml');
  writeFileSync(file, yaml);
  return file;
}

export function newSecretKey(): string {
  return randomBytes(32).toString('base64');
}

/** Environment for a control plane whose files live in `dir`. */
export function testEnv(dir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    DATA_DIR: path.join(dir, 'data'),
    CATALOG: writeTestCatalog(dir),
    RUNTIME: 'process',
    PUBLIC_URL: 'http://127.0.0.1:8080',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    RECONCILE_INTERVAL_MS: '500',
    ACTIVITY_INTERVAL_MS: '500',
    REPLICA_WAIT_MS: '5000',
    MAX_DESKTOPS_PER_USER: '10',
    MAX_DESKTOPS_TOTAL: '200',
    ADMIN_USERS: 'root',
    PORT: '0',
    METRICS_PORT: '0',
    PROXY_METRICS_PORT: '0',
    ...extra,
  };
}

export interface TestDatabaseChoice {
  name: 'pglite' | 'postgres';
  /** Environment additions, and how to drop it afterwards. */
  setup(): Promise<{ env: Record<string, string>; cleanup(): Promise<void> }>;
}

export const databases: TestDatabaseChoice[] = [
  { name: 'pglite', setup: async () => ({ env: {}, cleanup: async () => {} }) },
  {
    name: 'postgres',
    setup: async () => {
      const db = await createTestDatabase('control_plane');
      return { env: { DATABASE_URL: db.url, SECRET_KEY: newSecretKey() }, cleanup: () => db.drop() };
    },
  },
];

/** Signs in through dev-login; returns the Cookie header value. */
export async function signIn(app: FastifyInstance, username: string): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/auth/dev-login', payload: { username } });
  if (res.statusCode !== 200) throw new Error(`dev-login ${username}: ${res.statusCode} ${res.body}`);
  const cookie = res.cookies.find((c) => c.name === 'deskhub_session');
  if (!cookie) throw new Error('no session cookie');
  return `deskhub_session=${cookie.value}`;
}

/** Polls `check` until it returns a value (not undefined), at most `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (let i = 0; Date.now() < deadline && i < 100_000; i++) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

export interface DesktopJson {
  id: string;
  type: string;
  name: string | null;
  owner: string;
  proxyPath: string;
  url: string;
  state: string;
  reason: string | null;
  activity?: 'input' | 'traffic' | null;
  /** Set when it failed because its home's node is lost. */
  homeLost?: { offerNewHome: boolean } | null;
}

/** Waits until the desktop reaches one of `states` (through the API). */
export async function waitForState(app: FastifyInstance, cookie: string, id: string, states: string[], timeoutMs = 60_000): Promise<DesktopJson> {
  return waitFor(
    `desktop ${id} to be ${states.join(' or ')}`,
    async () => {
      const res = await app.inject({ url: `/api/desktops/${id}`, headers: { cookie } });
      if (res.statusCode !== 200) throw new Error(`GET desktop: ${res.statusCode} ${res.body}`);
      const desktop = res.json<DesktopJson>();
      return states.includes(desktop.state) ? desktop : undefined;
    },
    timeoutMs,
    150,
  );
}

/** The process runtime's records under DATA_DIR. */
export function processRecords(dataDir: string): { runtimeId: string; desktopId: string; pid: number | null; running: boolean }[] {
  const dir = path.join(dataDir, 'processes');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    try {
      return [JSON.parse(readFileSync(path.join(dir, name, 'record.json'), 'utf8'))];
    } catch {
      return [];
    }
  });
}

export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Live processes started from a test catalog written into `dir` (their env carries its name). */
export function testProcesses(dir: string): number[] {
  const needle = `DESKHUB_TEST_RUN=${path.basename(dir)}\0`;
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    let environ = '';
    try {
      environ = readFileSync(`/proc/${name}/environ`, 'latin1');
    } catch {
      continue;
    }
    if (environ.includes(needle) && pidAlive(Number(name))) found.push(Number(name));
  }
  return found;
}

export interface RunningApp {
  app: FastifyInstance;
  stream: RouteStream;
  /** A real subscriber on the same stream: what a proxy replica holds. */
  replica: RouteSubscriber;
  close(): Promise<void>;
}

/** The app on `env`, with a route stream (in-process, or Redis) and a replica subscribed to it. */
export async function startApp(env: NodeJS.ProcessEnv, options: { redisUrl?: string; activityFlushMs?: number } = {}): Promise<RunningApp> {
  const stream = createRouteStream({
    logger: createLogger('route-stream', 'silent'),
    ...(options.redisUrl ? { redisUrl: options.redisUrl, keyPrefix: env.ROUTE_STREAM_PREFIX ?? 'deskhub:' } : {}),
  });
  let app: FastifyInstance;
  try {
    app = await buildApp({ config: loadControlPlaneConfig(env), routeStream: stream, env });
  } catch (err) {
    await stream.close();
    throw err;
  }
  const replica = stream.subscriber({ replicaId: `test-replica-${process.pid}`, checkIntervalMs: 500, ...(options.activityFlushMs ? { activityFlushMs: options.activityFlushMs } : {}) });
  await replica.start();
  await waitFor('the replica to load its first snapshot', () => (replica.ready ? true : undefined), 10_000);
  return {
    app,
    stream,
    replica,
    async close() {
      await app.close();
      await stream.close();
    },
  };
}

export interface HostAnswer {
  status: number;
  location: string | undefined;
  setCookie: string[];
  text: string;
}

/**
 * One request to 127.0.0.1:`port` with the Host a browser would send (a desktop's origin,
 * `<path>.localhost:<port>`, or the UI's): what a browser does that fetch cannot.
 */
export function hostRequest(port: number, host: string, path: string, options: { cookie?: string; method?: string; json?: unknown; origin?: string } = {}): Promise<HostAnswer> {
  return new Promise((resolve, reject) => {
    const body = options.json === undefined ? undefined : JSON.stringify(options.json);
    const headers: Record<string, string> = { host };
    if (options.cookie) headers.cookie = options.cookie;
    if (options.origin) headers.origin = options.origin;
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(body));
    }
    const req = http.request({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        const set = res.headers['set-cookie'];
        resolve({ status: res.statusCode ?? 0, location: res.headers.location, setCookie: Array.isArray(set) ? set : [], text });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** `name=value` of a Set-Cookie the answer carries. */
export function cookieOf(answer: HostAnswer, name: string): string | undefined {
  const line = answer.setCookie.find((c) => c.startsWith(`${name}=`));
  return line === undefined ? undefined : line.slice(0, line.indexOf(';'));
}

/**
 * A WebSocket upgrade to a desktop (subprotocol `binary`, as noVNC asks): 'open' with the socket,
 * or the HTTP status the upgrade was refused with.
 */
export function upgradeDesktop(url: string, headers: Record<string, string>): Promise<{ status: number | 'open'; ws?: WebSocket }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['binary'], { headers, handshakeTimeout: 10_000 });
    ws.once('open', () => resolve({ status: 'open', ws }));
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
      ws.terminate();
    });
    ws.once('error', reject);
  });
}

/** Sends `text` and resolves with the next message (the demo desktop echoes), within 10 s. */
export function echo(ws: WebSocket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no echo within 10 s')), 10_000);
    ws.once('message', (data) => {
      clearTimeout(timer);
      resolve(data.toString());
    });
    ws.send(text);
  });
}

/** What the deployed-topology tests start from: a folder, Redis, a Postgres database and the access-token key pair. */
export interface TopologyBase {
  dir: string;
  redis: { url: string };
  db: { env: Record<string, string> };
  privatePem: string;
  publicPem: string;
  /** Processes started for the test; stopped (and the desktops' processes killed) at teardown. */
  services: ServiceProcess[];
}

export async function startTopologyBase(t: { teardown(fn: () => unknown): void }, label: string): Promise<TopologyBase> {
  const { dir, cleanup } = tempDir(label);
  const redis = await startRedis();
  const db = await databases.find((d) => d.name === 'postgres')!.setup();
  const keys = generateKeyPairSync('ed25519');
  const services: ServiceProcess[] = [];
  t.teardown(async () => {
    await Promise.all(services.map((s) => s.stop()));
    for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
    await redis.close();
    await db.cleanup();
    cleanup();
  });
  return {
    dir,
    redis,
    db,
    privatePem: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicPem: keys.publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    services,
  };
}
