/**
 * The proxy's part in a rolling restart, on real sockets (the standalone process and its signals:
 * standalone.test.ts):
 * - the public port refuses connections until the first route snapshot is loaded (Redis down at
 *   start), and says so in the log; /healthz and /readyz answer on the metrics port all along; a
 *   stop before that leaves nothing listening;
 * - `drain(timeoutMs)`: a new connection is refused at once; a request in flight (slow upstream)
 *   completes; an idle keep-alive connection's next request, a POST, reaches the desktop and is
 *   answered with `Connection: close`, then the connection closes; an upgrade on an open
 *   connection is refused 503 (nginx retries it elsewhere); WebSockets stay up until the timeout,
 *   then get 1001 after the desktop's frame in progress arrives whole; `close()` during the drain
 *   (a second signal) closes them at once; with nothing open the drain ends at once.
 */
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import t, { type Test } from 'tap';
import WebSocket from 'ws';
import { startRedis } from '@deskhub/testkit/redis';
import { createRouteStream } from '@deskhub/route-stream';
import { RESTART_CLOSE_REASON, startProxy } from '../src/index.ts';
import { closedPort, makeRoute, RawClient, redisDownWithDesktop, send, startStack, startUpstream, tryConnect, type Stack } from './helpers.ts';
import { closeOf, open, startHalfFrameDesktop, startRecordingDesktop } from './ws-helpers.ts';

type Log = Record<string, unknown>;

function capture(): { logger: pino.Logger; logs: Log[] } {
  const logs: Log[] = [];
  return { logs, logger: pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as Log) }) };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await sleep(20);
  }
  return check();
}

const get = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: deskhub.test\r\n\r\n`;

t.test('the public port refuses connections until the first route snapshot; health and readiness on the metrics port from the start', async (t) => {
  const { redis, keyPrefix, up } = await redisDownWithDesktop(t, 'ada-desk', 'desk');

  const [port, metricsPort] = [await closedPort(), await closedPort()];
  const stream = createRouteStream({ redisUrl: redis.url, keyPrefix, logger: pino({ level: 'silent' }) });
  t.teardown(() => stream.close());
  const { logger, logs } = capture();
  const starting = startProxy({ subscriber: stream.subscriber(), port, metricsPort, authMode: 'dev', logger });
  let started = false;
  void starting.then(() => (started = true), () => undefined);
  const metricsUrl = `http://127.0.0.1:${metricsPort}`;

  t.ok(await eventually(async () => (await send(`${metricsUrl}/healthz`).catch(() => null))?.status === 200), 'the metrics port answers /healthz while Redis is down');
  t.equal((await send(`${metricsUrl}/readyz`)).status, 503, '/readyz: 503, no route table yet');
  t.equal(await tryConnect(port), 'ECONNREFUSED', 'the public port refuses connections (nginx takes another replica)');
  await sleep(300);
  t.equal(await tryConnect(port), 'ECONNREFUSED', 'still refused a moment later');
  t.notOk(started, 'startProxy has not resolved');
  t.ok(logs.some((l) => /waiting for the first route snapshot: the public port opens once it is loaded/.test(String(l.msg))), 'the log says the public port waits for the route snapshot');
  t.notOk(logs.some((l) => l.msg === 'proxy listening'), 'and not that it listens');

  await up();
  const proxy = await starting;
  t.teardown(() => proxy.close());
  t.equal(proxy.port, port, 'it listens on the port asked for');
  t.equal(proxy.url, `http://127.0.0.1:${port}`);
  t.equal(proxy.metricsUrl, metricsUrl);
  t.equal((await send(`${proxy.url}/desktop/ada-desk/`)).text, 'desk', 'serving from the snapshot as soon as it listens');
  t.equal((await send(`${metricsUrl}/readyz`)).status, 200, 'ready');
  const listening = logs.find((l) => l.msg === 'proxy listening');
  t.match(listening, { url: proxy.url, routeVersion: 1, routes: 1 }, 'the log says where it listens, and from which route version');
});

t.test('stopped before the first snapshot: startProxy rejects and leaves nothing listening', async (t) => {
  const redis = await startRedis();
  await redis.stop();
  t.teardown(() => redis.close());
  const [port, metricsPort] = [await closedPort(), await closedPort()];
  const stream = createRouteStream({ redisUrl: redis.url, keyPrefix: 'drain-abort:', logger: pino({ level: 'silent' }) });
  t.teardown(() => stream.close());
  const abort = new AbortController();
  const starting = startProxy({ subscriber: stream.subscriber(), port, metricsPort, authMode: 'dev', logger: pino({ level: 'silent' }), signal: abort.signal });
  t.ok(await eventually(async () => (await send(`http://127.0.0.1:${metricsPort}/healthz`).catch(() => null))?.status === 200), 'the metrics port is up');
  const t0 = Date.now();
  abort.abort();
  await t.rejects(starting, { name: 'AbortError' }, 'startProxy rejects with an AbortError');
  t.ok(Date.now() - t0 < 2000, 'at once');
  t.equal(await tryConnect(metricsPort), 'ECONNREFUSED', 'the metrics port is closed');
  t.equal(await tryConnect(port), 'ECONNREFUSED', 'the public port never opened');
});

t.test('the in-process route stream: startProxy resolves listening, the snapshot being immediate', async (t) => {
  const stack = await startStack(t, [], { publish: false });
  t.equal((await send(`${stack.proxy.url}/readyz`)).status, 200, 'an empty in-process table is a snapshot too: ready and listening');
});

interface DrainScene {
  stack: Stack;
  /** Bodies of the POSTs the web desktop received. */
  posts: string[];
  /** Settles when the slow request reached the upstream. */
  slowArrived: Promise<void>;
}

async function drainScene(t: Test, routes: Parameters<typeof startStack>[1] = [], logger?: pino.Logger): Promise<DrainScene> {
  const posts: string[] = [];
  let arrived: () => void = () => undefined;
  const slowArrived = new Promise<void>((resolve) => (arrived = resolve));
  const web = await startUpstream((req, res) => {
    if (req.url === '/slow') {
      arrived();
      setTimeout(() => res.end('slow answer'), 600);
      return;
    }
    if (req.method === 'POST') {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        posts.push(body);
        res.end(`got ${body}`);
      });
      return;
    }
    res.end('pong');
  });
  t.teardown(() => web.close());
  const stack = await startStack(t, [makeRoute('web', web.url), ...routes], { metricsPort: 0, ...(logger ? { logger } : {}) });
  return { stack, posts, slowArrived };
}

t.test('drain: refused, finished, Connection: close on idle connections, a POST kept, WebSockets until the timeout then 1001 at a frame boundary', async (t) => {
  const payload = randomBytes(1024 * 1024);
  const desktop = await startHalfFrameDesktop(payload);
  t.teardown(() => desktop.close());
  const { logger, logs } = capture();
  const { stack, posts, slowArrived } = await drainScene(t, [makeRoute('vnc', desktop.url)], logger);
  const { proxy } = stack;

  // Before the drain: an idle keep-alive connection (one answer behind it), another never used
  // (nginx opened it and may be about to write), a slow request under way, a WebSocket.
  const idle = new RawClient(proxy.port);
  await idle.connected();
  idle.write(get('/desktop/web/ping'));
  const first = await idle.answer();
  t.same([first.status, first.body, first.headers.connection], [200, 'pong', undefined], 'keep-alive before the drain');
  const unused = new RawClient(proxy.port);
  await unused.connected();
  const slow = new RawClient(proxy.port);
  await slow.connected();
  slow.write(get('/desktop/web/slow'));
  await slowArrived;
  const ws = await open(`${proxy.url.replace(/^http/, 'ws')}/desktop/vnc/websockify`);
  const messages: Buffer[] = [];
  ws.on('message', (m: Buffer) => messages.push(Buffer.from(m)));
  const wsClosed = closeOf(ws);
  let wsClosedAt = 0;
  void wsClosed.then(() => (wsClosedAt = Date.now()));

  const DRAIN_MS = 1500;
  const t0 = Date.now();
  const drained = proxy.drain(DRAIN_MS);
  t.equal(proxy.drain(DRAIN_MS), drained, 'draining again is the same drain');

  t.equal(await tryConnect(proxy.port), 'ECONNREFUSED', 'a new connection is refused at once');
  t.equal((await send(`${proxy.metricsUrl}/readyz`)).status, 503, '/readyz on the metrics port: 503 while draining');

  const slowAnswer = await slow.answer();
  t.same([slowAnswer.status, slowAnswer.body], [200, 'slow answer'], 'the request in flight completed');
  t.equal(slowAnswer.headers.connection, 'close', 'with Connection: close');
  await slow.closed;
  t.pass('then its connection closed');

  t.notOk(idle.isClosed, 'the idle keep-alive connection is still open');
  idle.write('POST /desktop/web/form HTTP/1.1\r\nHost: deskhub.test\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello drain');
  const posted = await idle.answer();
  t.same([posted.status, posted.body, posted.headers.connection], [200, 'got hello drain', 'close'], 'its next request, a POST, is answered with Connection: close');
  t.same(posts, ['hello drain'], 'the POST reached the desktop once');
  await idle.closed;
  t.pass('then that connection closed');

  // A WebSocket asked for on a connection that is still open: 503, which nginx retries on another replica.
  unused.write(
    'GET /desktop/vnc/websockify HTTP/1.1\r\nHost: deskhub.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  );
  const refused = await unused.answer();
  t.equal(refused.status, 503, 'an upgrade during the drain: 503');
  t.equal(refused.headers['retry-after'], '1');
  t.match(JSON.parse(refused.body), { message: 'deskhub is restarting; reconnect.' });
  await unused.closed;

  // The WebSocket stays up: the desktop starts a 1 MiB frame before the timeout and ends it after.
  await sleep(Math.max(0, t0 + DRAIN_MS - 500 - Date.now()));
  t.equal(ws.readyState, WebSocket.OPEN, 'the WebSocket is open 1 s into the drain');
  desktop.sendFirstHalf();
  await sleep(Math.max(0, t0 + DRAIN_MS + 300 - Date.now()));
  t.equal(ws.readyState, WebSocket.OPEN, 'past the timeout, mid-frame: not closed yet');
  desktop.sendRest();
  t.same(await wsClosed, { code: 1001, reason: RESTART_CLOSE_REASON }, `closed with 1001 "${RESTART_CLOSE_REASON}"`);
  t.ok(wsClosedAt - t0 >= DRAIN_MS, `not before the drain timeout (${wsClosedAt - t0} ms)`);
  t.equal(messages.length, 1, 'one message: the frame in progress, nothing after the close');
  t.ok(messages[0]?.equals(payload), 'the 1 MiB frame arrived whole before the close');
  await desktop.closed;

  await drained;
  const took = Date.now() - t0;
  t.ok(took < DRAIN_MS + 3000, `the drain ended soon after its timeout (${took} ms)`);
  const said = logs.map((l) => String(l.msg));
  for (const phase of [/^draining: the public port is closed/, /^draining: every HTTP connection has closed/, /^drain timeout reached/, /^closing: WebSockets get 1001/, /^proxy closed/]) {
    t.ok(said.some((m) => phase.test(m)), `logged: ${phase.source}`);
  }
  t.match(logs.find((l) => /^draining: the public port/.test(String(l.msg))), { timeoutMs: DRAIN_MS, httpConnections: 3, idle: 2, webSockets: 1 });
});

t.test('drain: close() during it (a second signal) closes the WebSockets with 1001 at once', async (t) => {
  const desktop = await startRecordingDesktop();
  t.teardown(() => desktop.close());
  const { stack } = await drainScene(t, [makeRoute('rec', desktop.url)]);
  const ws = await open(`${stack.proxy.url.replace(/^http/, 'ws')}/desktop/rec/websockify`);
  const closed = closeOf(ws);
  const drained = stack.proxy.drain(30_000);
  await sleep(200);
  t.equal(ws.readyState, WebSocket.OPEN, 'open while the drain waits');
  const t0 = Date.now();
  await stack.proxy.close();
  t.same(await closed, { code: 1001, reason: RESTART_CLOSE_REASON });
  t.ok(Date.now() - t0 < 2000, `closed at once (${Date.now() - t0} ms), not after 30 s`);
  await drained;
  t.pass('the drain is over');
});

t.test('drain: with nothing open it ends at once; an idle connection its client closes does not hold it', async (t) => {
  const { stack } = await drainScene(t);
  const t0 = Date.now();
  await stack.proxy.drain(30_000);
  t.ok(Date.now() - t0 < 1000, `nothing open: over in ${Date.now() - t0} ms`);

  const second = await drainScene(t);
  const idle = new RawClient(second.stack.proxy.port);
  await idle.connected();
  idle.write(get('/desktop/web/ping'));
  await idle.answer();
  const t1 = Date.now();
  const drained = second.stack.proxy.drain(30_000);
  await sleep(300);
  idle.socket.end(); // nginx dropping an idle upstream connection (its keepalive_timeout)
  await drained;
  t.ok(Date.now() - t1 < 2000, `over once the client closed its idle connection (${Date.now() - t1} ms)`);
});
