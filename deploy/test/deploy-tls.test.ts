/**
 * TLS in front of two replicas, tested for real (issue #29, section 2): Debian's nginx runs the
 * shipped deploy/nginx/deskhub.conf (only the certificate paths, the listen ports and the
 * upstream's server line replaced, each checked to occur once) with a self-signed certificate
 * made here, in front of two proxy replicas, the control plane, Postgres, Redis and the process
 * runtime's demo desktop (tls-topology.ts).
 * - HTTP/2 towards browsers: node:http2 negotiates h2 (ALPN) and gets answers; headless Chromium
 *   opens the desktop over https, its page over h2 (nextHopProtocol, and nginx's access log), its
 *   WebSocket on an HTTP/1.1 connection of its own (nginx has no RFC 8441) and connected; the
 *   port-80 server sends plain http to https.
 * - An idle desktop WebSocket stays up 120 s through nginx (its 60 s default read timeout would
 *   cut it) and still echoes.
 * - `nginx -s reload` with a renewed certificate while 201 WebSockets are open: new connections
 *   get the new certificate, the old workers keep serving every WebSocket, and exit once the
 *   rolling restart below has moved them.
 * - A rolling restart as the README says it (SIGTERM a replica, start it again, wait for its
 *   /readyz, then the next), under steady load (GETs of the desktop page and of /api/me, POSTs
 *   with a body into the desktop, each answer checked) and with 200 desktop WebSockets open:
 *   every request answered as expected (counted), every WebSocket either up throughout or closed
 *   with 1001 and reconnected through nginx at once, landing on the replica that is up.
 * The idle WebSocket's 120 s run beside the other checks and the first replica's restart (the
 * other replica holds it); the second restart follows its check, right after the first replica is
 * ready (the moment nginx's default max_fails would have had no replica left). About 2.7 minutes.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import WebSocket from 'ws';
import { chromiumMissing, launchChromium } from '../../packages/web-ui/test/embedded-deskhub.ts';
import { echo, waitFor } from '../../services/control-plane/test/helpers.ts';
import { findNginx, shippedUpstreamKeepaliveTimeoutS, startTlsTopology, type Replica, type TlsTopology } from './tls-topology.ts';

/** WebSockets held open through the rolling restart. */
const SOCKETS = 200;
/** How long the idle WebSocket must stay up (nginx's default proxy_read_timeout is 60 s). */
const IDLE_MS = 120_000;
/**
 * The replicas' drain: longer than the shipped upstream keepalive_timeout, as the file requires,
 * so that nginx, not the draining replica, closes its idle connections to it (a replica closing
 * one could cross a POST nginx has just written there, which nginx does not retry).
 */
const DRAIN_TIMEOUT_S = shippedUpstreamKeepaliveTimeoutS() + 2;
/** About how long a replica takes to start (node and tsx, on a busy 2-core machine): for timing the first restart. */
const REPLICA_START_MS = 5_000;
/** The load starts this long before the first SIGTERM. */
const LOAD_LEAD_MS = 3_000;
/** The load: this many sequential workers, each pausing this long between requests. */
const WORKERS = 4;
const PAUSE_MS = 20;

async function main(): Promise<void> {
  t.setTimeout(420_000);
  const started = Date.now();
  const topo = await startTlsTopology(t, 'deploy-tls', { drainTimeoutS: DRAIN_TIMEOUT_S, webSocketsPerWorker: SOCKETS + 50 });
  const cookie = await topo.signIn('alice');
  const desktop = await topo.launch(cookie, 'demo');
  const page = `/desktop/${desktop.proxyPath}/`;
  /** The desktop's entry URL (with the query its type needs; without it the proxy redirects there). */
  const entry = new URL(desktop.url);
  const entryPath = `${entry.pathname}${entry.search}`;
  const socketPath = `/desktop/${desktop.proxyPath}/websockify`;
  t.comment(`nginx on ${topo.base}, replicas on ${topo.replicas.map((r) => r.port).join(' and ')}, DRAIN_TIMEOUT_S=${DRAIN_TIMEOUT_S}; set up in ${Date.now() - started} ms`);

  // ---- the idle WebSocket: opened first, checked after 120 s ---------------------------------
  const idle = await topo.openSocket(socketPath, cookie);
  const idleOpenedAt = Date.now();
  const idleCloses: string[] = [];
  idle.on('close', (code, reason) => idleCloses.push(`${code} ${reason.toString()}`));
  if ((await echo(idle, 'idle hello')) !== 'idle hello') throw new Error('the idle WebSocket did not echo');
  // Which replica holds it: that one is restarted second, after the idle check.
  const holder = await waitFor('the idle WebSocket to show in a replica\'s metrics', async () => {
    const counts = await Promise.all(topo.replicas.map((r) => r.openWebSockets()));
    return counts[0]! + counts[1]! === 1 ? (counts[0] === 1 ? 0 : 1) : undefined;
  }, 10_000);
  const second = topo.replicas[holder]!;
  const first = topo.replicas[1 - holder]!;

  await t.test('the shipped file serves HTTP/2 over TLS, and sends plain http to https', async (t) => {
    const session = http2.connect(topo.base, { ca: topo.certs });
    t.teardown(() => session.close());
    await new Promise<void>((resolve, reject) => {
      session.once('connect', () => resolve());
      session.once('error', reject);
    });
    t.equal(session.alpnProtocol, 'h2', 'ALPN: h2');
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const stream = session.request({ ':path': '/api/me', cookie });
      let body = '';
      let status = 0;
      stream.on('response', (headers) => (status = Number(headers[':status'])));
      stream.setEncoding('utf8');
      stream.on('data', (c: string) => (body += c));
      stream.on('end', () => resolve({ status, body }));
      stream.on('error', reject);
    });
    t.equal(answer.status, 200, '/api/me over h2 through nginx and a replica');
    t.match(JSON.parse(answer.body), { username: 'alice' });

    const redirect = await new Promise<http.IncomingMessage>((resolve, reject) =>
      http.get(`http://127.0.0.1:${topo.httpPort}${page}`, resolve).on('error', reject),
    );
    redirect.resume();
    t.equal(redirect.statusCode, 301, 'plain http: 301');
    t.match(redirect.headers.location, new RegExp(`^https://127\\.0\\.0\\.1${page.replaceAll('/', '\\/')}$`), 'to https, same path');
  });

  await t.test('headless Chromium opens the desktop over https: the page over h2, its WebSocket on HTTP/1.1, connected', async (t) => {
    const allowed = new RegExp(`^${topo.base.replaceAll('.', '\\.')}/`);
    // Chromium accepts exactly this certificate (by its public key), nothing else self-signed.
    const { context, page: tab, errors } = await launchChromium(t, 'deploy-tls', allowed, 60_000, [`--ignore-certificate-errors-spki-list=${topo.spki}`]);
    await tab.goto(`${topo.base}/`);
    const signedIn = await tab.evaluate(async () => (await fetch('/auth/dev-login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice' }) })).status);
    t.equal(signedIn, 200, 'signed in from the page (dev sign-in)');
    await tab.goto(desktop.url);
    await tab.locator('#status').filter({ hasText: 'Connected' }).waitFor({ timeout: 60_000 });
    t.pass('the desktop page says Connected: its WebSocket through nginx echoed');
    // (the page's own code: the DOM types are not in this project's lib)
    const protocol = await tab.evaluate('performance.getEntriesByType("navigation")[0].nextHopProtocol');
    t.equal(protocol, 'h2', 'the page came over HTTP/2');
    await context.close();
    t.same(errors, [], 'no page errors, no request elsewhere');
    // nginx's own view: the page's GET on HTTP/2.0, the desktop's upgrade on HTTP/1.1 (101).
    const log = readFileSync(path.join(topo.dir, 'access.log'), 'utf8');
    t.match(log, new RegExp(`"GET ${page.replaceAll('/', '\\/')}\\?[^"]* HTTP/2\\.0" 200`), 'access log: the page on HTTP/2.0');
    t.match(log, new RegExp(`"GET ${socketPath.replaceAll('/', '\\/')} HTTP/1\\.1" 101`), 'access log: a WebSocket upgrade on HTTP/1.1, 101');
  });

  // ---- 200 WebSockets, held through a reload and the rolling restart (opened inside a test: tap
  // ends the file once no subtest is pending, so nothing asynchronous may run between subtests) --
  let held: HeldSocket[] = [];
  let load: Load | null = null;
  let oldWorkers: number[] = [];
  t.teardown(() => {
    load?.halt();
    for (const s of held) s.stop();
  });

  await t.test('nginx -s reload with a renewed certificate and 201 WebSockets open: old workers keep every one', async (t) => {
    const opened = await Promise.allSettled(Array.from({ length: SOCKETS }, (_, i) => HeldSocket.open(topo, socketPath, cookie, i)));
    const refused = opened.flatMap((o) => (o.status === 'rejected' ? [(o.reason as Error).message] : []));
    t.same(refused, [], `${SOCKETS} WebSockets open through nginx, each echoing`);
    held = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    if (held.length < SOCKETS) return;

    const before = topo.nginx.workers().map((w) => w.pid);
    const [first, renewed] = topo.certs.map((c) => new X509Certificate(c).fingerprint256);
    t.equal(await topo.servedFingerprint(), first, 'before: the first certificate');
    await topo.renewCertificate();
    t.equal(await topo.servedFingerprint(), renewed, 'after the reload new connections get the renewed certificate');
    const old = topo.nginx.workers().filter((w) => before.includes(w.pid));
    t.ok(old.length > 0 && old.every((w) => w.shuttingDown), `the old workers that hold WebSockets live on, "shutting down" (${old.length} of ${before.length})`);
    oldWorkers = old.map((w) => w.pid);
    t.equal(await echoAll(held), SOCKETS, `all ${SOCKETS} WebSockets still open and echoing through the old workers`);
    t.same(idleCloses, [], 'the idle WebSocket too is untouched');
    t.equal(held.filter((s) => s.closes.length > 0).length, 0, 'none closed');
  });

  await t.test('a rolling restart under load with 200 WebSockets open: no request lost, every WebSocket up or reconnected', async (t) => {
    if (held.length < SOCKETS) return;
    // The first replica's restart is timed to end about when the idle WebSocket has had its
    // 120 s, and the second one follows at once: as soon as the first is ready, as the README says.
    const firstAt = idleOpenedAt + IDLE_MS - DRAIN_TIMEOUT_S * 1000 - REPLICA_START_MS;
    await sleep(Math.max(0, firstAt - LOAD_LEAD_MS - Date.now()));
    load = new Load(topo, cookie, entryPath, desktop.proxyPath);
    load.start();
    await sleep(Math.max(0, firstAt - Date.now()));
    await load.settle(20);
    t.comment(`load running: ${load.summary()}`);

    await restart(t, first, 'first');
    t.same(
      await spread([first, second], [0, SOCKETS + 1]),
      [0, SOCKETS + 1],
      `every WebSocket the first replica held reconnected to the second (${SOCKETS} + the idle one there); the restarted one holds none`,
    );

    // The idle WebSocket has been held by the second replica all along.
    const idleFor = Date.now() - idleOpenedAt;
    if (idleFor < IDLE_MS) await sleep(IDLE_MS - idleFor);
    t.same(idleCloses, [], `the idle WebSocket never closed (${Math.round((Date.now() - idleOpenedAt) / 1000)} s)`);
    t.equal(idle.readyState, WebSocket.OPEN, 'and is open');
    t.equal(await echo(idle, 'still here'), 'still here', `it echoes after ${Math.round((Date.now() - idleOpenedAt) / 1000)} s idle through nginx`);
    idle.close(1000);

    await restart(t, second, 'second');
    await load.settle(50);
    await load.stop();
    t.same(await spread([first, second], [SOCKETS, 0]), [SOCKETS, 0], 'after the second restart every WebSocket is on the first replica');

    // HTTP: every request answered, each as expected.
    const counts = load.counts;
    t.comment(`HTTP during the restart: ${load.summary()}`);
    for (const kind of Object.keys(counts) as Kind[]) {
      const c = counts[kind];
      t.ok(c.sent > 0, `${kind}: ${c.sent} sent`);
      t.equal(c.ok, c.sent, `${kind}: ${c.ok} of ${c.sent} answered as expected${c.failed ? `; ${c.failed} failed, the first: ${c.failures.join(' | ')}` : ''}`);
    }

    // WebSockets: each up throughout, or closed with 1001 and reconnected; all working now.
    const problems = held.flatMap((s) => s.problems.map((p) => `#${s.index}: ${p}`));
    t.same(problems.slice(0, 10), [], `no WebSocket closed otherwise or failed to reconnect (${problems.length} problems)`);
    const stayed = held.filter((s) => s.reconnects === 0).length;
    const reconnected = held.filter((s) => s.reconnects > 0).length;
    const twice = held.filter((s) => s.reconnects > 1).length;
    t.comment(`WebSockets: ${stayed} stayed up throughout, ${reconnected} reconnected (${twice} of them twice)`);
    t.equal(stayed + reconnected, SOCKETS);
    t.ok(held.every((s) => s.closes.every((c) => c.startsWith('1001 '))), 'every close was 1001 "deskhub is restarting; reconnect"');
    t.equal(await echoAll(held), SOCKETS, `all ${SOCKETS} WebSockets open and echoing after the restart`);
    for (const s of held) s.stop();

    // The reload's old workers held WebSockets until the drains closed them; then they exited.
    const lingering = await waitFor('the old nginx workers to exit', () => {
      const alive = topo.nginx.workers().filter((w) => oldWorkers.includes(w.pid));
      return alive.length === 0 ? alive : undefined;
    }, 15_000, 200).catch(() => topo.nginx.workers().filter((w) => oldWorkers.includes(w.pid)));
    t.same(lingering, [], 'the old workers exited once their WebSockets had moved');
  });
  t.comment(`whole file: ${Math.round((Date.now() - started) / 1000)} s`);
}

/** How many of `sockets` are open and echo a message. */
async function echoAll(sockets: HeldSocket[]): Promise<number> {
  const echoed = await Promise.all(
    sockets.map((s) => (s.ws.readyState === WebSocket.OPEN ? echo(s.ws, `ping ${s.index}`).then((m) => m === `ping ${s.index}`, () => false) : false)),
  );
  return echoed.filter(Boolean).length;
}

/**
 * One replica's turn in the rolling restart: SIGTERM (it drains: DRAIN_TIMEOUT_S for its
 * WebSockets), wait for it to exit 0, start it again on its port, wait for /readyz.
 */
async function restart(t: Test, replica: Replica, which: string): Promise<void> {
  const t0 = Date.now();
  const exit = await replica.stop((DRAIN_TIMEOUT_S + 20) * 1000);
  t.same(exit, { code: 0, signal: null }, `the ${which} replica drained and exited 0 (${Date.now() - t0} ms)`);
  await replica.start();
  const ready = await fetch(`${replica.metricsUrl}/readyz`);
  t.equal(ready.status, 200, `the ${which} replica is back and ready (${Date.now() - t0} ms after its SIGTERM)`);
}

/** The replicas' open WebSockets once they are `expected` (reconnects take a moment), or as they are after 20 s. */
async function spread(replicas: Replica[], expected: number[]): Promise<number[]> {
  const now = () => Promise.all(replicas.map((r) => r.openWebSockets()));
  return waitFor('the WebSockets to settle', async () => {
    const counts = await now();
    return counts.every((n, i) => n === expected[i]) ? counts : undefined;
  }, 20_000, 200).catch(now);
}

/** A desktop WebSocket as the desktop's client keeps it: on 1001 it reconnects at once (noVNC/KasmVNC with reconnect=true). */
class HeldSocket {
  readonly closes: string[] = [];
  readonly problems: string[] = [];
  reconnects = 0;
  private stopped = false;

  private constructor(
    private readonly topo: TlsTopology,
    private readonly path: string,
    private readonly cookie: string,
    readonly index: number,
    public ws: WebSocket,
  ) {
    this.watch();
  }

  static async open(topo: TlsTopology, path: string, cookie: string, index: number): Promise<HeldSocket> {
    const ws = await topo.openSocket(path, cookie);
    if ((await echo(ws, `hello ${index}`)) !== `hello ${index}`) throw new Error(`WebSocket ${index} did not echo`);
    return new HeldSocket(topo, path, cookie, index, ws);
  }

  private watch(): void {
    this.ws.once('close', (code, reason) => {
      if (this.stopped) return;
      this.closes.push(`${code} ${reason.toString()}`);
      if (code !== 1001) {
        this.problems.push(`closed with ${code} "${reason.toString()}"`);
        return;
      }
      this.topo.openSocket(this.path, this.cookie).then(
        (ws) => {
          this.reconnects++;
          this.ws = ws;
          if (this.stopped) ws.terminate();
          else this.watch();
        },
        (err: Error) => this.problems.push(`reconnect failed: ${err.message}`),
      );
    });
  }

  stop(): void {
    this.stopped = true;
    this.ws.terminate();
  }
}

type Kind = 'page GET' | 'api GET' | 'desktop POST';

interface Counts {
  sent: number;
  ok: number;
  failed: number;
  /** The first few failures, with when they happened. */
  failures: string[];
}

/**
 * Steady HTTP load through nginx, each answer checked: the desktop's page (GET), /api/me (GET,
 * the control plane through a replica) and a POST whose body the desktop echoes (`/__echo`).
 */
class Load {
  readonly counts: Record<Kind, Counts> = { 'page GET': fresh(), 'api GET': fresh(), 'desktop POST': fresh() };
  private running = false;
  private workers: Promise<void>[] = [];
  private readonly agent;
  private readonly t0 = Date.now();

  constructor(
    private readonly topo: TlsTopology,
    private readonly cookie: string,
    private readonly entryPath: string,
    private readonly proxyPath: string,
  ) {
    this.agent = topo.agent(WORKERS);
  }

  start(): void {
    this.running = true;
    for (let i = 0; i < WORKERS; i++) this.workers.push(this.worker(i));
  }

  /** Waits until `n` more requests have been answered (the load is flowing). */
  async settle(n: number): Promise<void> {
    const answered = () => Object.values(this.counts).reduce((sum, c) => sum + c.ok + c.failed, 0);
    const target = answered() + n;
    await waitFor(`${n} more answers under load`, () => (answered() >= target ? true : undefined), 60_000, 50);
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
  }

  halt(): void {
    this.running = false;
  }

  summary(): string {
    return (Object.entries(this.counts) as Array<[Kind, Counts]>).map(([k, c]) => `${k} ${c.ok}/${c.sent}`).join(', ');
  }

  private async worker(id: number): Promise<void> {
    const kinds: Kind[] = ['page GET', 'desktop POST', 'api GET'];
    for (let n = id; this.running; n++) {
      const kind = kinds[n % kinds.length]!;
      const c = this.counts[kind];
      c.sent++;
      const at = `${((Date.now() - this.t0) / 1000).toFixed(1)} s`;
      try {
        const problem = await this.one(kind, `${id}-${n}-${randomBytes(6).toString('hex')}`);
        if (problem === null) c.ok++;
        else fail(c, `${at}: ${problem}`);
      } catch (err) {
        fail(c, `${at}: ${(err as Error).message}`);
      }
      await sleep(PAUSE_MS);
    }
  }

  /** null when the answer is as expected, else what was wrong. */
  private async one(kind: Kind, tag: string): Promise<string | null> {
    const { topo, cookie, agent } = this;
    if (kind === 'page GET') {
      const res = await topo.request('GET', this.entryPath, { cookie, agent });
      return res.status === 200 && res.body.includes('Demo desktop') ? null : `GET page: ${res.status} ${res.body.slice(0, 200)}`;
    }
    if (kind === 'api GET') {
      const res = await topo.request('GET', '/api/me', { cookie, agent });
      return res.status === 200 && res.body.includes('"alice"') ? null : `GET /api/me: ${res.status} ${res.body.slice(0, 200)}`;
    }
    const body = `a form posted into the desktop: ${tag}`;
    const res = await topo.request('POST', `/desktop/${this.proxyPath}/__echo`, { cookie, agent, body, headers: { 'content-type': 'text/plain' } });
    return res.status === 200 && res.body === body && res.headers['x-echo-method'] === 'POST' ? null : `POST: ${res.status} ${res.body.slice(0, 200)}`;
  }
}

function fresh(): Counts {
  return { sent: 0, ok: 0, failed: 0, failures: [] };
}

function fail(c: Counts, what: string): void {
  c.failed++;
  if (c.failures.length < 10) c.failures.push(what);
}

// Last: the classes above are initialized by now.
const missing = findNginx() === null ? 'no nginx binary (scripts/ensure-services.sh installs nginx-light)' : chromiumMissing();
if (missing) {
  t.skip(`TLS in front of two replicas: ${missing}`, () => {});
} else {
  await main();
}
