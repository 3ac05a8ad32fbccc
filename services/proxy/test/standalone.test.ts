/**
 * The proxy as its own process (`src/main.ts`, routes from a real Redis), which is also the
 * only honest way to watch its memory: 1 MiB and 100 MiB bodies both ways and a WebSocket
 * flood towards a reader that stopped reading must not grow the process by anything near their
 * size. Plus start-up errors that name the variable, the public port closed until the first
 * route snapshot (Redis down at start), and the drain on SIGTERM: a new connection refused, an
 * idle keep-alive connection answered with `Connection: close`, WebSockets closed with 1001 after
 * DRAIN_TIMEOUT_S (or at once on a second signal), exit 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import WebSocket, { WebSocketServer } from 'ws';
import { startDemoDesktop } from '@deskhub/demo-desktop';
import { startRedis } from '@deskhub/testkit/redis';
import { createRouteStream } from '@deskhub/route-stream';
import { parseEnvFile } from '@deskhub/config';
import { RESTART_CLOSE_REASON } from '../src/index.ts';
import { closedPort, KASM_AUTH, KASM_PASSWORD, makeRoute, RawClient, redisDownWithDesktop, send, silentLogger, startUpstream, tryConnect } from './helpers.ts';
import { closeOf, open, startRecordingDesktop } from './ws-helpers.ts';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const MiB = 1024 * 1024;

interface ChildProxy {
  child: ChildProcess;
  url: string;
  port: number;
  metricsUrl: string;
  stderr(): string;
  /** Every JSON log line it printed so far (collected until it exits). */
  logs: Array<Record<string, unknown>>;
}

function runMain(env: Record<string, string>): ChildProcess {
  const clean: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ['PORT', 'HOST', 'METRICS_PORT', 'METRICS_HOST', 'CONTROL_PLANE_URL', 'PUBLIC_URL', 'REDIS_URL', 'ROUTE_STREAM_PREFIX', 'BODY_LIMIT', 'UPSTREAM_TIMEOUT_MS', 'AUTH_MODE', 'ACCESS_TOKEN_PUBLIC_KEYS', 'DESKTOP_ORIGIN', 'DRAIN_TIMEOUT_S', 'LOG_LEVEL']) {
    delete clean[name];
  }
  return spawn(process.execPath, ['--import', 'tsx', 'services/proxy/src/main.ts'], {
    cwd: repoRoot,
    env: { ...clean, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Resolves with the first log line (JSON, on stdout) `match` accepts; rejects after `timeoutMs`. */
function logLine(child: ChildProcess, logs: Array<Record<string, unknown>>, match: (l: Record<string, unknown>) => boolean, timeoutMs = 15_000): Promise<Record<string, unknown>> {
  const seen = logs.find(match);
  if (seen) return Promise.resolve(seen);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.stdout?.off('data', check);
      reject(new Error(`no such log line within ${timeoutMs} ms`));
    }, timeoutMs);
    const check = (): void => {
      // The line is parsed by the collector below first (it was attached first).
      setImmediate(() => {
        const line = logs.find(match);
        if (!line) return;
        clearTimeout(timer);
        child.stdout?.off('data', check);
        resolve(line);
      });
    };
    child.stdout?.on('data', check);
  });
}

/** Collects main.ts's JSON log lines from its start (startChild waits for "proxy listening" instead). */
function collectLogs(child: ChildProcess): Array<Record<string, unknown>> {
  const logs: Array<Record<string, unknown>> = [];
  let buffered = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line of ours
      }
    }
  });
  return logs;
}

/** Starts main.ts and resolves once it logged where it listens. */
function startChild(env: Record<string, string>): Promise<ChildProxy> {
  // A short drain, so a SIGTERM with a WebSocket still open does not keep a test waiting 30 s.
  const child = runMain({ PORT: '0', METRICS_PORT: '0', LOG_LEVEL: 'info', AUTH_MODE: 'dev', DRAIN_TIMEOUT_S: '1', ...env });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  // Lines keep being collected after "proxy listening" (the drain's phases).
  const logs = collectLogs(child);
  return new Promise((resolve, reject) => {
    const exited = (code: number | null): void => reject(new Error(`proxy exited with ${code}: ${stderr}`));
    child.once('exit', exited);
    logLine(child, logs, (l) => l.msg === 'proxy listening' && typeof l.url === 'string' && typeof l.metricsUrl === 'string', 30_000).then(
      (entry) => {
        child.off('exit', exited);
        const url = entry.url as string;
        resolve({ child, url, port: Number(new URL(url).port), metricsUrl: entry.metricsUrl as string, stderr: () => stderr, logs });
      },
      (err: Error) => {
        child.kill('SIGKILL');
        reject(new Error(`proxy did not start: ${err.message}: ${stderr}`));
      },
    );
  });
}

function exitOf(child: ChildProcess, timeoutMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('process did not exit')), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

/** Resident set size of a process in bytes, from /proc. */
function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Samples a process's RSS while `work` runs; resolves with the work's result and the peak. */
async function peakRssDuring<T>(pid: number, work: () => Promise<T>): Promise<{ result: T; peak: number }> {
  let peak = rss(pid);
  const timer = setInterval(() => (peak = Math.max(peak, rss(pid))), 25);
  try {
    const result = await work();
    peak = Math.max(peak, rss(pid));
    return { result, peak };
  } finally {
    clearInterval(timer);
  }
}

/** `size` bytes of a repeatable pattern, in 64 KiB chunks, as a stream (never held whole). */
function patternStream(size: number): Readable {
  let sent = 0;
  const chunk = Buffer.alloc(64 * 1024);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31) & 0xff;
  return new Readable({
    read() {
      if (sent >= size) {
        this.push(null);
        return;
      }
      const n = Math.min(chunk.length, size - sent);
      sent += n;
      this.push(n === chunk.length ? Buffer.from(chunk) : chunk.subarray(0, n));
    },
  });
}

function patternHash(size: number): Promise<string> {
  const hash = createHash('sha256');
  return new Promise((resolve, reject) => {
    patternStream(size)
      .on('data', (c: Buffer) => hash.update(c))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject);
  });
}

/** Streams `upload` bytes to url (POST) and hashes what comes back, without holding either whole. */
function transfer(url: string, upload: number | null): Promise<{ status: number; bytes: number; hash: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.request(
      u,
      { method: upload === null ? 'GET' : 'POST', agent: false, headers: upload === null ? {} : { 'content-length': String(upload) } },
      (res) => {
        const hash = createHash('sha256');
        let bytes = 0;
        res.on('data', (c: Buffer) => {
          bytes += c.length;
          hash.update(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, hash: hash.digest('hex') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (upload === null) req.end();
    else patternStream(upload).pipe(req);
  });
}

t.test('start-up errors name the variable', async (t) => {
  const noRedis = runMain({ LOG_LEVEL: 'silent' });
  let err = '';
  noRedis.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  t.equal((await exitOf(noRedis, 30_000)).code, 2);
  t.match(err, /REDIS_URL: is required for a standalone proxy: a separate process cannot share the in-process route bus/);
  t.notMatch(err, /\n\s+at /, 'no stack trace');

  const badLimit = runMain({ REDIS_URL: 'redis://127.0.0.1:1', BODY_LIMIT: 'ten megabytes' });
  let err2 = '';
  badLimit.stderr?.on('data', (c: Buffer) => (err2 += c.toString()));
  t.equal((await exitOf(badLimit, 30_000)).code, 2);
  t.match(err2, /BODY_LIMIT: expected a whole number/);

  const badOrigin = runMain({ REDIS_URL: 'redis://127.0.0.1:1', DESKTOP_ORIGIN: 'http://*.desktops.example.net' });
  let err4 = '';
  badOrigin.stderr?.on('data', (c: Buffer) => (err4 += c.toString()));
  t.equal((await exitOf(badOrigin, 30_000)).code, 2);
  t.match(err4, /DESKTOP_ORIGIN: plain http is only possible under localhost/);

  const badDrain = runMain({ REDIS_URL: 'redis://127.0.0.1:1', DRAIN_TIMEOUT_S: 'forever' });
  let err5 = '';
  badDrain.stderr?.on('data', (c: Buffer) => (err5 += c.toString()));
  t.equal((await exitOf(badDrain, 30_000)).code, 2);
  t.match(err5, /DRAIN_TIMEOUT_S: expected a whole number/);

  // oidc mode must never start letting everyone through: without the means to check access
  // (an access hook; main.ts builds it from ACCESS_TOKEN_PUBLIC_KEYS) start-up fails and says why.
  const oidc = runMain({ REDIS_URL: 'redis://127.0.0.1:1', AUTH_MODE: 'oidc', PORT: '0', METRICS_PORT: '0' });
  let err3 = '';
  oidc.stderr?.on('data', (c: Buffer) => (err3 += c.toString()));
  t.not((await exitOf(oidc, 30_000)).code, 0, 'oidc mode without a way to check access refuses to start');
  t.match(err3, /access hook|ACCESS_TOKEN_PUBLIC_KEYS/);
});

t.test('as deployed (deploy/allocator.env) the proxy runs on jemalloc, and says which allocator it runs on', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.close());
  const deployed = parseEnvFile(readFileSync(join(repoRoot, 'deploy/allocator.env'), 'utf8'));
  const cases: Array<[string, Record<string, string>, string, string]> = [
    ['deploy/allocator.env', deployed, 'jemalloc', 'info'],
    ['no preload', { LD_PRELOAD: '' }, 'glibc', 'info'],
    // libjemalloc2 not installed: the loader ignores the preload, the proxy runs and warns.
    ['a preload that cannot be found', { ...deployed, LD_PRELOAD: 'libjemalloc-not-installed.so.2' }, 'glibc', 'warn'],
  ];
  for (const [name, env, allocator, level] of cases) {
    const proxy = await startChild({ REDIS_URL: redis.url, ...env });
    const said = proxy.logs.find((l) => typeof l.allocator === 'string');
    t.equal(said?.allocator, allocator, `${name}: logs allocator ${allocator}`);
    t.equal(said?.level, level === 'warn' ? 40 : 30, `${name}: at level ${level}`);
    const maps = readFileSync(`/proc/${proxy.child.pid}/maps`, 'utf8');
    t.equal(/libjemalloc\.so/.test(maps), allocator === 'jemalloc', `${name}: jemalloc ${allocator === 'jemalloc' ? 'is' : 'is not'} mapped into the process`);
    proxy.child.kill('SIGTERM');
    t.equal((await exitOf(proxy.child)).code, 0, `${name}: stops cleanly`);
  }
});

t.test('a standalone proxy: bodies and WebSocket floods stream through without growing its memory', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.close());
  const keyPrefix = `standalone-${randomUUID().slice(0, 8)}:`;
  const stream = createRouteStream({ redisUrl: redis.url, keyPrefix, logger: silentLogger });
  t.teardown(() => stream.close());

  const desktop = await startDemoDesktop({ name: 'mem-kasm', tls: true, password: KASM_PASSWORD });
  t.teardown(() => desktop.close());
  const source = await startUpstream((req, res) => {
    const size = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('size') ?? '0');
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
    patternStream(size).pipe(res);
  });
  t.teardown(() => source.close());

  // A desktop that pushes 64 KiB frames as fast as its socket takes them, like a busy VNC stream.
  const FLOOD_BYTES = 128 * MiB;
  const flood = { flushed: 0, done: false };
  const floodServer = await startUpstream((_req, res) => res.end());
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  floodServer.server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      const frame = Buffer.alloc(64 * 1024, 7);
      const next = (): void => {
        if (flood.flushed >= FLOOD_BYTES) {
          flood.done = true;
          return;
        }
        // The callback fires once the frame is handed to the kernel: the upstream waits for
        // its socket, so it can only run ahead by what the proxy actually reads.
        ws.send(frame, { binary: true }, (err) => {
          if (err) return;
          flood.flushed += frame.length;
          next();
        });
      };
      next();
    });
  });
  t.teardown(async () => {
    for (const ws of wss.clients) ws.terminate();
    await floodServer.close();
  });

  await stream.publisher().republish({
    version: 1,
    routes: [
      makeRoute('mem-kasm', desktop.url, { authorization: KASM_AUTH }),
      makeRoute('mem-source', source.url),
      makeRoute('mem-flood', floodServer.url),
    ],
  });

  const proxy = await startChild({ REDIS_URL: redis.url, ROUTE_STREAM_PREFIX: keyPrefix, BODY_LIMIT: String(256 * MiB) });
  t.teardown(() => {
    if (proxy.child.exitCode === null) proxy.child.kill('SIGKILL');
  });
  const pid = proxy.child.pid as number;
  for (let i = 0; i < 200 && (await send(`${proxy.url}/readyz`)).status !== 200; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal((await send(`${proxy.url}/readyz`)).status, 200, 'ready with the routes from Redis');

  // 1 MiB both ways (upload echoed back by the desktop), and down; also warms the process up.
  const oneHash = await patternHash(MiB);
  for (let i = 0; i < 3; i++) {
    const echo = await transfer(`${proxy.url}/desktop/mem-kasm/__echo`, MiB);
    t.same([echo.status, echo.bytes, echo.hash], [200, MiB, oneHash], '1 MiB up and back, byte for byte');
    const down = await transfer(`${proxy.url}/desktop/mem-source/blob?size=${MiB}`, null);
    t.same([down.status, down.bytes, down.hash], [200, MiB, oneHash], '1 MiB down');
  }

  const baseline = rss(pid);
  const bigHash = await patternHash(100 * MiB);
  const both = await peakRssDuring(pid, () => transfer(`${proxy.url}/desktop/mem-kasm/__echo`, 100 * MiB));
  t.same([both.result.status, both.result.bytes, both.result.hash], [200, 100 * MiB, bigHash], '100 MiB up and 100 MiB back, byte for byte');
  const down = await peakRssDuring(pid, () => transfer(`${proxy.url}/desktop/mem-source/blob?size=${100 * MiB}`, null));
  t.same([down.result.status, down.result.bytes, down.result.hash], [200, 100 * MiB, bigHash], '100 MiB down');
  const bodyGrowth = Math.max(both.peak, down.peak) - baseline;
  t.ok(bodyGrowth < 40 * MiB, `proxy RSS grew by ${(bodyGrowth / MiB).toFixed(1)} MiB while moving 300 MiB (baseline ${(baseline / MiB).toFixed(0)} MiB)`);

  // A reader that stops reading: the proxy must stop reading from the desktop too.
  const floodBaseline = rss(pid);
  const client = net.connect(proxy.port, '127.0.0.1');
  t.teardown(() => client.destroy());
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  let received = 0;
  const handshakeDone = new Promise<void>((resolve, reject) => {
    client.once('error', reject);
    client.on('data', (c: Buffer) => {
      received += c.length;
      if (received > 0) resolve();
    });
  });
  client.write(
    'GET /desktop/mem-flood/websockify HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nOrigin: http://x\r\n' +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  );
  await handshakeDone;
  client.pause();
  // Wait until the desktop cannot hand the kernel anything more (bounded: 30 s).
  let last = -1;
  const stallDeadline = Date.now() + 30_000;
  const { peak: floodPeak } = await peakRssDuring(pid, async () => {
    while (Date.now() < stallDeadline && !flood.done) {
      await new Promise((r) => setTimeout(r, 500));
      if (flood.flushed === last) break;
      last = flood.flushed;
    }
  });
  t.notOk(flood.done, 'the desktop could not push its whole stream into a reader that does not read');
  t.ok(flood.flushed < FLOOD_BYTES / 2, `the desktop stalled after ${(flood.flushed / MiB).toFixed(1)} MiB of ${FLOOD_BYTES / MiB} (kernel buffers only)`);
  const floodGrowth = floodPeak - floodBaseline;
  t.ok(floodGrowth < 24 * MiB, `proxy RSS grew by ${(floodGrowth / MiB).toFixed(1)} MiB while the reader was stalled`);

  // Once the reader reads again, everything arrives.
  const all = new Promise<void>((resolve) => {
    const check = (): void => {
      if (received >= FLOOD_BYTES) resolve();
    };
    client.on('data', check);
    check();
  });
  client.resume();
  await all;
  t.ok(flood.done && received >= FLOOD_BYTES, `all ${FLOOD_BYTES / MiB} MiB arrived once the reader resumed`);

  // Graceful stop: SIGTERM closes the open WebSocket and exits 0.
  const clientClosed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  proxy.child.kill('SIGTERM');
  const exit = await exitOf(proxy.child);
  t.same(exit, { code: 0, signal: null }, 'SIGTERM: clean exit');
  await clientClosed;
  t.pass('open WebSocket closed on shutdown');
});

t.test('Redis down at start: the public port stays closed and the log says why; health answers; a signal then exits 0', async (t) => {
  const { redis, keyPrefix, up } = await redisDownWithDesktop(t, 'early-desk', 'desk');
  for (const stopWhileWaiting of [true, false]) {
    const [port, metricsPort] = [await closedPort(), await closedPort()];
    const child = runMain({ REDIS_URL: redis.url, ROUTE_STREAM_PREFIX: keyPrefix, PORT: String(port), METRICS_PORT: String(metricsPort), LOG_LEVEL: 'info', AUTH_MODE: 'dev' });
    t.teardown(() => child.kill('SIGKILL'));
    const logs = collectLogs(child);
    const waiting = await logLine(child, logs, (l) => /^waiting for the first route snapshot: the public port opens once it is loaded/.test(String(l.msg)));
    t.equal(waiting.level, 30, 'the log says the public port waits for the route snapshot');
    t.equal((await send(`http://127.0.0.1:${metricsPort}/healthz`)).status, 200, 'health on the metrics port');
    t.equal((await send(`http://127.0.0.1:${metricsPort}/readyz`)).status, 503, 'not ready');
    t.equal(await tryConnect(port), 'ECONNREFUSED', 'the public port refuses connections');
    if (stopWhileWaiting) {
      child.kill('SIGTERM');
      t.same(await exitOf(child), { code: 0, signal: null }, 'SIGTERM while waiting: exit 0');
      t.ok(logs.some((l) => l.msg === 'stopped before the public port opened'), 'and the log says it never opened');
      continue;
    }
    await up();
    const listening = await logLine(child, logs, (l) => l.msg === 'proxy listening');
    t.equal(listening.url, `http://127.0.0.1:${port}`, 'once Redis answers it listens, on the port asked for');
    t.equal((await send(`http://127.0.0.1:${port}/desktop/early-desk/`)).text, 'desk', 'serving the snapshot');
    child.kill('SIGTERM');
    t.same(await exitOf(child), { code: 0, signal: null }, 'SIGTERM with nothing open: exit 0');
  }
});

t.test('SIGTERM with nothing open exits at once', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.close());
  const proxy = await startChild({ REDIS_URL: redis.url, DRAIN_TIMEOUT_S: '30' });
  t.teardown(() => proxy.child.kill('SIGKILL'));
  t.equal((await send(`${proxy.url}/healthz`)).status, 200);
  const t0 = Date.now();
  proxy.child.kill('SIGTERM');
  const exit = await exitOf(proxy.child);
  const took = Date.now() - t0;
  t.same(exit, { code: 0, signal: null }, 'clean exit');
  t.ok(took < 3000, `exited without waiting out DRAIN_TIMEOUT_S (${took} ms)`);
});

/** A route stream on a private Redis with one WebSocket desktop, and main.ts over it. */
async function drainSetup(t: Test, env: Record<string, string>): Promise<{ proxy: ChildProxy; ws: WebSocket; closed: Promise<{ code: number; reason: string }> }> {
  const redis = await startRedis();
  t.teardown(() => redis.close());
  const keyPrefix = `standalone-${randomUUID().slice(0, 8)}:`;
  const stream = createRouteStream({ redisUrl: redis.url, keyPrefix, logger: silentLogger });
  t.teardown(() => stream.close());
  const desktop = await startRecordingDesktop();
  t.teardown(() => desktop.close());
  await stream.publisher().republish({ version: 1, routes: [makeRoute('drain-vnc', desktop.url)] });
  const proxy = await startChild({ REDIS_URL: redis.url, ROUTE_STREAM_PREFIX: keyPrefix, ...env });
  t.teardown(() => proxy.child.kill('SIGKILL'));
  const ws = await open(`${proxy.url.replace(/^http/, 'ws')}/desktop/drain-vnc/websockify`);
  t.teardown(() => ws.terminate());
  return { proxy, ws, closed: closeOf(ws) };
}

t.test('SIGTERM drains: new connections refused, an idle connection answered with Connection: close, WebSockets 1001 after DRAIN_TIMEOUT_S, exit 0', async (t) => {
  const { proxy, ws, closed } = await drainSetup(t, { DRAIN_TIMEOUT_S: '2' });
  const idle = new RawClient(proxy.port);
  await idle.connected();
  idle.write('GET /desktop/drain-vnc/ HTTP/1.1\r\nHost: x\r\n\r\n');
  t.equal((await idle.answer()).headers.connection, undefined, 'keep-alive before the signal');
  let closedAt = 0;
  void closed.then(() => (closedAt = Date.now()));
  const exited = exitOf(proxy.child, 20_000);

  const t0 = Date.now();
  proxy.child.kill('SIGTERM');
  await logLine(proxy.child, proxy.logs, (l) => /^draining: the public port is closed/.test(String(l.msg)));
  t.equal(await tryConnect(proxy.port), 'ECONNREFUSED', 'a new connection is refused');
  t.notOk(idle.isClosed, 'the idle keep-alive connection stays open');
  idle.write('POST /desktop/drain-vnc/form HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi');
  const answer = await idle.answer();
  t.same([answer.status, answer.body, answer.headers.connection], [200, 'page', 'close'], 'its next request, a POST, is answered by the desktop, with Connection: close');
  await idle.closed;
  t.pass('then it closes');
  await new Promise((r) => setTimeout(r, Math.max(0, t0 + 1500 - Date.now())));
  t.equal(ws.readyState, WebSocket.OPEN, 'the WebSocket is still open 1.5 s into the drain');
  t.same(await closed, { code: 1001, reason: RESTART_CLOSE_REASON }, 'then closed with 1001');
  t.ok(closedAt - t0 >= 2000, `after DRAIN_TIMEOUT_S (${closedAt - t0} ms)`);
  t.same(await exited, { code: 0, signal: null }, 'exit 0');
  const said = proxy.logs.map((l) => String(l.msg));
  for (const phase of ['stopping', 'drain timeout reached', 'proxy closed']) t.ok(said.some((m) => m.startsWith(phase)), `logged: ${phase}`);
});

t.test('a second SIGTERM ends the drain at once: WebSockets 1001, exit 0', async (t) => {
  const { proxy, ws, closed } = await drainSetup(t, { DRAIN_TIMEOUT_S: '30' });
  const exited = exitOf(proxy.child, 20_000);
  proxy.child.kill('SIGTERM');
  await logLine(proxy.child, proxy.logs, (l) => /^draining: the public port is closed/.test(String(l.msg)));
  await new Promise((r) => setTimeout(r, 300));
  t.equal(ws.readyState, WebSocket.OPEN, 'open while the drain waits');
  const t0 = Date.now();
  proxy.child.kill('SIGTERM');
  t.same(await closed, { code: 1001, reason: RESTART_CLOSE_REASON }, 'closed with 1001');
  t.same(await exited, { code: 0, signal: null }, 'exit 0');
  t.ok(Date.now() - t0 < 5000, `at once, not after 30 s (${Date.now() - t0} ms)`);
  t.ok(proxy.logs.some((l) => l.msg === 'drain ended early: stop asked again'), 'the log says why');
});
