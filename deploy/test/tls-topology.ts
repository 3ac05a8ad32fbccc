/**
 * deskhub as deployed behind TLS, every part a real process on this machine: Debian's nginx
 * running the shipped deploy/nginx/deskhub.conf with a self-signed certificate made here, two
 * proxy replicas (`pnpm start:proxy`, on the allocator of deploy/allocator.env) behind it, the
 * control plane (`pnpm start:control-plane`) on Postgres and a private Redis, and the process
 * runtime's demo desktop. Shared by deploy-tls.test.ts and the nginx reload measurement
 * (nginx-reload.ts).
 *
 * Of the shipped file only what a test must change is replaced, each piece checked to occur
 * exactly once: the two certificate paths, the two listen ports (free ports on 127.0.0.1, not
 * 443 and 80) and the upstream's server line (one line per replica). Everything else, the
 * timeouts, retries and headers, is the file as operators install it.
 */
import { createHash, X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import WebSocket from 'ws';
import { deployedAllocatorEnv } from '../../bench/lib/deskhub.ts';
import { makeSelfSignedCertificate } from '../../packages/demo-desktop/src/index.ts';
import { freePort } from '../../packages/testkit/src/net.ts';
import { findNginx, replaceEachOnce, shippedNginxConf, startNginx, type NginxMainOptions, type RunningNginx } from '../../packages/testkit/src/nginx.ts';
import { repoRoot, startService, type ServiceProcess } from '../../packages/testkit/src/service.ts';
import { startTopologyBase, testEnv, waitFor, type DesktopJson } from '../../services/control-plane/test/helpers.ts';

export { findNginx };

/** Requests through nginx get this long; a request held by a drain still answers well within it. */
const REQUEST_TIMEOUT_MS = 30_000;

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface Replica {
  readonly name: string;
  /** Its public port, the same across restarts (nginx's server line names it). */
  readonly port: number;
  readonly metricsUrl: string;
  readonly running: boolean;
  /** Starts it; resolves once it listens (it opens its port only with its route table loaded). */
  start(): Promise<void>;
  /** SIGTERM (a drain), SIGKILL after `graceMs`; resolves when it has exited, with its exit code. */
  stop(graceMs: number): Promise<{ code: number | null; signal: string | null }>;
  /** deskhub_proxy_open_websockets from its metrics listener. */
  openWebSockets(): Promise<number>;
}

export interface TlsTopology {
  dir: string;
  /** https://127.0.0.1:<port>: PUBLIC_URL, what users open. */
  base: string;
  httpsPort: number;
  /** The shipped file's port-80 server (redirect to https). */
  httpPort: number;
  /**
   * The certificates (PEM) nginx serves: the first from the start, the second after
   * renewCertificate() (then the first again, and so on). Clients here trust exactly these two.
   */
  certs: [string, string];
  /** base64 SHA-256 of the first one's public key, for Chromium's --ignore-certificate-errors-spki-list. */
  spki: string;
  /** A certificate renewed as certbot does it: the other certificate written over the files, then `nginx -s reload`. */
  renewCertificate(): Promise<void>;
  /** SHA-256 fingerprint of the certificate a new TLS connection to nginx gets now. */
  servedFingerprint(): Promise<string>;
  /** The site file nginx runs: the shipped text with the replaced pieces. */
  siteFile: string;
  nginx: RunningNginx;
  replicas: [Replica, Replica];
  /** Settings of the replicas (DRAIN_TIMEOUT_S etc.). */
  drainTimeoutS: number;
  /** A keep-alive agent trusting the certificate. */
  agent(maxSockets?: number): https.Agent;
  /** One HTTPS request through nginx. */
  request(method: string, urlPath: string, options?: { cookie?: string; body?: string | Buffer; headers?: Record<string, string>; agent?: https.Agent }): Promise<Answer>;
  /** Signs in through nginx (dev sign-in); resolves with the Cookie header carrying session and access cookies. */
  signIn(username: string): Promise<string>;
  /** Creates a desktop of `type` through nginx and waits until it runs. */
  launch(cookie: string, type: string): Promise<DesktopJson>;
  /** Opens a WebSocket through nginx (wss, Origin PUBLIC_URL, subprotocol binary as noVNC asks). */
  openSocket(urlPath: string, cookie: string, timeoutMs?: number): Promise<WebSocket>;
}

export interface TlsTopologyOptions {
  /** The replicas' DRAIN_TIMEOUT_S. */
  drainTimeoutS: number;
  /** More main-context nginx lines (worker_shutdown_timeout ...). */
  nginxMain?: string[];
  /** Room for this many proxied WebSockets per nginx worker (two connections each), besides the rest. */
  webSocketsPerWorker?: number;
}

/** The shipped site file with the test's certificate, ports and replicas; throws if a piece to replace is not there exactly once. */
export function shippedSite(o: { cert: string; key: string; httpPort: number; httpsPort: number; replicaPorts: number[] }): string {
  return replaceEachOnce(readFileSync(shippedNginxConf, 'utf8'), [
    ['/etc/ssl/deskhub/fullchain.pem', o.cert],
    ['/etc/ssl/deskhub/privkey.pem', o.key],
    ['listen 80;', `listen 127.0.0.1:${o.httpPort};`],
    ['listen 443 ssl http2;', `listen 127.0.0.1:${o.httpsPort} ssl http2;`],
    ['server 127.0.0.1:8080 max_fails=0;', o.replicaPorts.map((p) => `server 127.0.0.1:${p} max_fails=0;`).join('\n    ')],
  ]);
}

/** Seconds of the upstream keepalive_timeout in the shipped file (nginx drops idle replica connections after it). */
export function shippedUpstreamKeepaliveTimeoutS(): number {
  const found = /^\s*keepalive_timeout (\d+)s;/m.exec(readFileSync(shippedNginxConf, 'utf8'));
  if (found === null) throw new Error(`no "keepalive_timeout <n>s;" in ${shippedNginxConf}`);
  return Number(found[1]);
}

function cookiesOf(setCookies: string[]): string {
  return setCookies.map((c) => c.split(';', 1)[0]!).join('; ');
}

export async function startTlsTopology(t: { teardown(fn: () => unknown): void }, label: string, options: TlsTopologyOptions): Promise<TlsTopology> {
  const nginxBinary = findNginx();
  if (nginxBinary === null) throw new Error('no nginx binary ($NGINX, PATH, /usr/sbin, /usr/local; scripts/ensure-services.sh installs nginx-light)');
  const { dir, redis, db, privatePem, publicPem, services } = await startTopologyBase(t, label);

  const [httpsPort, httpPort] = [await freePort(), await freePort()];
  const base = `https://127.0.0.1:${httpsPort}`;
  // CN localhost with subjectAltName DNS:localhost and IP:127.0.0.1: Node clients verify it for 127.0.0.1.
  const pairs = [await makeSelfSignedCertificate('localhost', 'deskhub test: first'), await makeSelfSignedCertificate('localhost', 'deskhub test: renewed')];
  const certs: [string, string] = [pairs[0]!.cert, pairs[1]!.cert];
  const certFile = path.join(dir, 'fullchain.pem');
  const keyFile = path.join(dir, 'privkey.pem');
  const install = async (pair: { key: string; cert: string }) => {
    await writeFile(certFile, pair.cert);
    await writeFile(keyFile, pair.key, { mode: 0o600 });
  };
  let serving = 0;
  await install(pairs[serving]!);
  const spki = createHash('sha256').update(new X509Certificate(certs[0]).publicKey.export({ type: 'spki', format: 'der' })).digest('base64');

  const cpEnv = testEnv(dir, {
    ...db.env,
    REDIS_URL: redis.url,
    PUBLIC_URL: base,
    ACCESS_TOKEN_KEY: privatePem,
    // Longer than any run here: renewal is the web UI's business, not what these tests watch.
    ACCESS_TOKEN_LIFETIME_S: '3600',
  });
  const controlPlane = await startService({ entry: 'services/control-plane/src/main.ts', readyMessage: 'control plane listening', env: cpEnv });
  services.push(controlPlane);

  const allocator = deployedAllocatorEnv(repoRoot);
  const makeReplica = async (name: string): Promise<Replica> => {
    const port = await freePort();
    const metricsPort = await freePort();
    let service: ServiceProcess | null = null;
    const env = {
      ...allocator,
      PORT: String(port),
      METRICS_PORT: String(metricsPort),
      REDIS_URL: redis.url,
      CONTROL_PLANE_URL: String(controlPlane.ready.url),
      PUBLIC_URL: base,
      AUTH_MODE: 'dev',
      ACCESS_TOKEN_PUBLIC_KEYS: publicPem,
      DRAIN_TIMEOUT_S: String(options.drainTimeoutS),
      LOG_LEVEL: 'info',
    };
    const replica: Replica = {
      name,
      port,
      metricsUrl: `http://127.0.0.1:${metricsPort}`,
      get running() {
        return service !== null && service.child.exitCode === null && service.child.signalCode === null;
      },
      async start() {
        service = await startService({ entry: 'services/proxy/src/main.ts', readyMessage: 'proxy listening', env, logFile: path.join(dir, `proxy-${name}.log`) });
        services.push(service);
      },
      async stop(graceMs) {
        const s = service;
        if (s === null) throw new Error(`replica ${name} is not running`);
        await s.stop(graceMs);
        return { code: s.child.exitCode, signal: s.child.signalCode };
      },
      async openWebSockets() {
        const text = await (await fetch(`${replica.metricsUrl}/metrics`)).text();
        const found = /^deskhub_proxy_open_websockets (\d+)/m.exec(text);
        if (found === null) throw new Error(`replica ${name}: no deskhub_proxy_open_websockets in its metrics`);
        return Number(found[1]);
      },
    };
    await replica.start();
    return replica;
  };
  const replicas: [Replica, Replica] = [await makeReplica('1'), await makeReplica('2')];

  const siteFile = path.join(dir, 'deskhub.conf');
  await writeFile(siteFile, shippedSite({ cert: certFile, key: keyFile, httpPort, httpsPort, replicaPorts: replicas.map((r) => r.port) }));
  const main: NginxMainOptions = {
    dir,
    site: siteFile,
    // Debian's nginx.conf: one worker per core, 768 connections each; more when many WebSockets are held.
    workerProcesses: 'auto',
    workerConnections: Math.max(768, 2 * (options.webSocketsPerWorker ?? 0) + 256),
    main: options.nginxMain ?? [],
    accessLog: true,
  };
  const nginx = await startNginx(nginxBinary, { ...main, ports: [httpsPort, httpPort] });
  t.teardown(() => nginx.stop());

  const defaultAgent = new https.Agent({ keepAlive: true, ca: certs, maxSockets: 8 });
  t.teardown(() => defaultAgent.destroy());
  const request: TlsTopology['request'] = (method, urlPath, o = {}) =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = { ...o.headers };
      if (o.cookie) headers.cookie = o.cookie;
      if (o.body !== undefined) headers['content-length'] = String(Buffer.byteLength(o.body));
      const req = https.request(`${base}${urlPath}`, { method, headers, agent: o.agent ?? defaultAgent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
      req.on('error', reject);
      req.end(o.body);
    });

  const topology: TlsTopology = {
    dir,
    base,
    httpsPort,
    httpPort,
    certs,
    spki,
    async renewCertificate() {
      serving = 1 - serving;
      await install(pairs[serving]!);
      await nginx.reload();
    },
    servedFingerprint() {
      return new Promise((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port: httpsPort, ca: certs, servername: 'localhost' }, () => {
          resolve(socket.getPeerX509Certificate()!.fingerprint256);
          socket.end();
        });
        socket.once('error', reject);
      });
    },
    siteFile,
    nginx,
    replicas,
    drainTimeoutS: options.drainTimeoutS,
    agent: (maxSockets = 8) => {
      const agent = new https.Agent({ keepAlive: true, ca: certs, maxSockets });
      t.teardown(() => agent.destroy());
      return agent;
    },
    request,
    async signIn(username) {
      const res = await request('POST', '/auth/dev-login', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username }) });
      if (res.status !== 200) throw new Error(`dev-login ${username}: ${res.status} ${res.body}`);
      const set = res.headers['set-cookie'];
      return cookiesOf(Array.isArray(set) ? set : []);
    },
    async launch(cookie, type) {
      const created = await request('POST', '/api/desktops', { cookie, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ type }) });
      if (created.status !== 201) throw new Error(`create ${type}: ${created.status} ${created.body}`);
      const id = (JSON.parse(created.body) as DesktopJson).id;
      return waitFor(
        `the ${type} desktop to run`,
        async () => {
          const d = JSON.parse((await request('GET', `/api/desktops/${id}`, { cookie })).body) as DesktopJson;
          if (d.state === 'failed') throw new Error(`failed: ${d.reason}`);
          return d.state === 'running' ? d : undefined;
        },
        120_000,
        250,
      );
    },
    openSocket(urlPath, cookie, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const ws = new WebSocket(`wss://127.0.0.1:${httpsPort}${urlPath}`, ['binary'], {
          ca: certs,
          origin: base,
          headers: { cookie },
          perMessageDeflate: false,
          handshakeTimeout: timeoutMs,
        });
        ws.once('open', () => {
          ws.removeAllListeners('error');
          ws.on('error', () => {}); // closes are what callers watch
          resolve(ws);
        });
        ws.once('unexpected-response', (_req, res) => {
          res.resume();
          ws.removeAllListeners('error');
          ws.on('error', () => {});
          ws.terminate();
          reject(new Error(`upgrade refused: HTTP ${res.statusCode}`));
        });
        ws.once('error', reject);
      });
    },
  };
  return topology;
}
