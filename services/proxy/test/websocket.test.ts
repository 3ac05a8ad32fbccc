/**
 * WebSockets through the proxy: the raw pipe after the handshake, what the upstream sees in the
 * handshake, large frames, idle connections outliving every timeout, and route withdrawal
 * closing exactly that route's connections.
 */
import { createHash, randomBytes } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import WebSocket, { WebSocketServer } from 'ws';
import { startDemoDesktop } from '@deskhub/demo-desktop';
import { closedPort, KASM_AUTH, KASM_PASSWORD, makeRoute, startStack, startUpstream, type TestUpstream } from './helpers.ts';

/** A plain WebSocket echo upstream that remembers each handshake it accepted. */
async function startWsUpstream(): Promise<TestUpstream & { handshakes: Array<{ url: string; headers: IncomingHttpHeaders }>; wss: WebSocketServer }> {
  const upstream = await startUpstream((_req, res) => res.end('plain http'));
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, handleProtocols: (p) => (p.has('binary') ? 'binary' : false) });
  const handshakes: Array<{ url: string; headers: IncomingHttpHeaders }> = [];
  upstream.server.on('upgrade', (req, socket, head) => {
    handshakes.push({ url: req.url ?? '', headers: req.headers });
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  });
  const close = upstream.close.bind(upstream);
  return Object.assign(upstream, {
    handshakes,
    wss,
    async close() {
      for (const ws of wss.clients) ws.terminate();
      await close();
    },
  });
}

function open(url: string, options: WebSocket.ClientOptions & { protocols?: string[] } = {}): Promise<WebSocket> {
  const { protocols, ...rest } = options;
  const ws = new WebSocket(url, protocols ?? [], { rejectUnauthorized: false, perMessageDeflate: false, ...rest });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`unexpected ${res.statusCode}`), { status: res.statusCode })));
  });
}

function roundTrip(ws: WebSocket, data: string | Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    ws.once('message', (m: Buffer) => resolve(m));
    ws.once('error', reject);
    ws.send(data);
  });
}

function closed(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve) => ws.once('close', () => resolve()));
}

/** Writes a raw request and resolves with everything the server sent until it closed. */
function rawExchange(port: number, request: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('close', () => resolve(text));
    socket.on('error', reject);
    socket.write(request);
    socket.setTimeout(10_000, () => {
      socket.destroy();
      reject(new Error(`no close after: ${text.slice(0, 200)}`));
    });
  });
}

t.test('a Kasm-like desktop over wss: credentials injected, Origin and subprotocol kept, echo works', async (t) => {
  const desktop = await startDemoDesktop({ name: 'ann-kasm', tls: true, password: KASM_PASSWORD });
  t.teardown(() => desktop.close());
  const { proxy } = await startStack(t, [makeRoute('ann-kasm', desktop.url, { authorization: KASM_AUTH })]);
  const wsUrl = proxy.url.replace('http', 'ws') + '/desktop/ann-kasm/websockify';
  const ws = await open(wsUrl, { protocols: ['base64', 'binary'], origin: 'https://desk.example.test' });
  t.teardown(() => ws.terminate());
  t.equal(ws.protocol, 'binary', 'the desktop chose from the offered subprotocols itself');
  t.equal((await roundTrip(ws, 'hello')).toString(), 'hello');
  ws.close();
  await closed(ws);

  const refusal = await open(wsUrl, { protocols: ['binary'] }).then(
    () => null,
    (err: { status?: number }) => err.status,
  );
  t.equal(refusal, 404, 'without Origin the desktop refuses (as KasmVNC does): the proxy does not invent one');
});

t.test('the handshake the upstream sees', async (t) => {
  const upstream = await startWsUpstream();
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [
    makeRoute('bea-strip', upstream.url, { authorization: 'Basic YTpi' }),
    makeRoute('bea-keep', upstream.url, { stripPrefix: false }),
  ]);
  const base = proxy.url.replace('http', 'ws');
  const ws = await open(`${base}/desktop/bea-strip/vnc/websockify?token=1`, {
    protocols: ['binary'],
    origin: 'https://desk.example.test',
    headers: { cookie: 'deskhub_session=secret; other=1', authorization: 'Basic bGVhazpsZWFr', 'x-forwarded-for': '198.51.100.1' },
  });
  t.teardown(() => ws.terminate());
  const seen = upstream.handshakes[0]!;
  t.equal(seen.url, '/vnc/websockify?token=1', 'prefix stripped');
  t.equal(seen.headers.authorization, 'Basic YTpi', 'route credentials injected');
  t.equal(seen.headers.cookie, 'other=1', 'our cookie removed');
  t.equal(seen.headers.origin, 'https://desk.example.test', 'Origin kept');
  t.equal(seen.headers['sec-websocket-protocol'], 'binary', 'subprotocol kept');
  t.equal(seen.headers.upgrade, 'websocket');
  t.match(seen.headers.connection, /upgrade/i);
  t.equal(seen.headers.host, `127.0.0.1:${upstream.port}`);
  t.equal(seen.headers['x-forwarded-for'], '198.51.100.1, 127.0.0.1');
  t.notOk(seen.headers['sec-websocket-extensions'], 'no compression offered when the client offered none');

  const keep = await open(`${base}/desktop/bea-keep/websockify`, { origin: 'https://desk.example.test', headers: { cookie: 'deskhub_a=1' } });
  t.teardown(() => keep.terminate());
  const seenKeep = upstream.handshakes[1]!;
  t.equal(seenKeep.url, '/desktop/bea-keep/websockify', 'prefix kept');
  t.notOk('authorization' in seenKeep.headers, 'no credentials for a route without them');
  t.notOk('cookie' in seenKeep.headers, 'an emptied Cookie header is dropped');
});

t.test('64 KiB frames both ways arrive intact and in order', async (t) => {
  const desktop = await startDemoDesktop({ name: 'cy-kasm', tls: true, password: KASM_PASSWORD });
  t.teardown(() => desktop.close());
  const { proxy } = await startStack(t, [makeRoute('cy-kasm', desktop.url, { authorization: KASM_AUTH })]);
  const ws = await open(proxy.url.replace('http', 'ws') + '/desktop/cy-kasm/websockify', { protocols: ['binary'], origin: 'http://x' });
  t.teardown(() => ws.terminate());
  const frames = 200;
  const sent = createHash('sha256');
  const received = createHash('sha256');
  let count = 0;
  const done = new Promise<void>((resolve, reject) => {
    ws.on('message', (m: Buffer) => {
      if (m.length !== 65536) reject(new Error(`frame of ${m.length} bytes`));
      received.update(m);
      if (++count === frames) resolve();
    });
    ws.once('close', () => reject(new Error(`closed after ${count} frames`)));
  });
  for (let i = 0; i < frames; i++) {
    const frame = Buffer.alloc(65536, i % 251);
    frame.writeUInt32BE(i, 0);
    sent.update(frame);
    ws.send(frame);
  }
  await done;
  t.equal(received.digest('hex'), sent.digest('hex'), `${frames} frames of 64 KiB echoed byte for byte`);
});

t.test('a busy stream over plain TCP (reads into reused buffers) stays byte-exact, also while the browser does not read', async (t) => {
  // Past OWN_BUFFER_AFTER both directions read into buffers they reuse (relay.ts). A browser that
  // stops reading leaves writes pending, small ones below the socket's high-water mark while the
  // proxy keeps reading: their buffers must not be read over.
  const upstream = await startWsUpstream();
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('busy', upstream.url)]);
  const ws = await open(proxy.url.replace('http', 'ws') + '/desktop/busy/stream', { origin: 'http://x' });
  t.teardown(() => ws.terminate());
  const sent = createHash('sha256');
  const received = createHash('sha256');
  let count = 0;
  let expected = 0;
  let arrived = (): void => undefined;
  ws.on('message', (m: Buffer) => {
    received.update(m);
    if (++count === expected) arrived();
  });
  const echoed = (n: number) =>
    new Promise<void>((resolve, reject) => {
      expected = n;
      arrived = resolve;
      ws.once('close', () => reject(new Error(`closed after ${count} messages`)));
    });
  const sendFrame = (size: number): void => {
    const frame = randomBytes(size);
    sent.update(frame);
    ws.send(frame);
  };
  // 4 MiB each way in 64 KiB frames: both directions switch to their own buffers.
  const big = 64;
  let done = echoed(big);
  for (let i = 0; i < big; i++) sendFrame(65536);
  await done;
  // Then many small messages while the browser reads nothing: the echo backs up into the proxy.
  const small = 6000;
  done = echoed(big + small);
  ws.pause();
  for (let i = 0; i < small; i++) sendFrame(700 + ((i * 37) % 2000));
  await new Promise((r) => setTimeout(r, 700));
  t.equal(count, big, 'nothing more was read while paused');
  ws.resume();
  await done;
  t.equal(received.digest('hex'), sent.digest('hex'), `${big} frames of 64 KiB and ${small} small ones echoed byte for byte`);
});

t.test('idle WebSockets outlive the upstream timeout and the server socket timeouts', async (t) => {
  const upstream = await startWsUpstream();
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('dee-idle', upstream.url)], { upstreamTimeoutMs: 300 });
  // Short server timeouts: an upgraded socket must not be subject to any of them.
  proxy.server.timeout = 300;
  proxy.server.keepAliveTimeout = 300;
  const ws = await open(proxy.url.replace('http', 'ws') + '/desktop/dee-idle/', { origin: 'http://x' });
  t.teardown(() => ws.terminate());
  await new Promise((resolve) => setTimeout(resolve, 1500)); // idle on purpose: longer than every timeout above
  t.equal(ws.readyState, WebSocket.OPEN, 'still open after idling');
  t.equal((await roundTrip(ws, 'still here')).toString(), 'still here');
});

t.test('withdrawing or moving a route closes its WebSockets within a second, and nobody else’s', async (t) => {
  const first = await startWsUpstream();
  t.teardown(() => first.close());
  const second = await startWsUpstream();
  t.teardown(() => second.close());
  const controlPlane = await startWsUpstream();
  t.teardown(() => controlPlane.close());
  const stack = await startStack(t, [makeRoute('eve-a', first.url), makeRoute('eve-b', first.url), makeRoute('eve-c', first.url)], {
    controlPlaneUrl: controlPlane.url,
  });
  const base = stack.proxy.url.replace('http', 'ws');
  const opts = { origin: 'http://x' };
  const a1 = await open(`${base}/desktop/eve-a/websockify`, opts);
  const a2 = await open(`${base}/desktop/eve-a/other`, opts);
  const b1 = await open(`${base}/desktop/eve-b/websockify`, opts);
  const c1 = await open(`${base}/desktop/eve-c/websockify`, opts);
  const cp = await open(`${base}/api/events`, opts);
  t.teardown(() => [a1, a2, b1, c1, cp].forEach((ws) => ws.terminate()));
  t.equal(controlPlane.handshakes[0]?.url, '/api/events', 'control-plane WebSockets are forwarded too, path untouched');

  const started = Date.now();
  await stack.remove('eve-a');
  await Promise.all([closed(a1), closed(a2)]);
  const elapsed = Date.now() - started;
  t.ok(elapsed < 1000, `both of the withdrawn route's sockets closed in ${elapsed} ms`);
  for (const [name, ws] of [['eve-b', b1], ['eve-c', c1], ['control plane', cp]] as const) {
    t.equal(ws.readyState, WebSocket.OPEN, `${name} untouched`);
    t.equal((await roundTrip(ws, name)).toString(), name, `${name} still echoes`);
  }

  // A change that keeps the upstream (here: the entry query) leaves connections alone...
  await stack.put(makeRoute('eve-b', first.url, { entryQuery: 'path=desktop/eve-b/websockify' }));
  t.equal((await roundTrip(b1, 'same upstream')).toString(), 'same upstream', 'same upstream: kept');
  // ...a move to another upstream closes them, and new connections go to the new place.
  const moved = Date.now();
  await stack.put(makeRoute('eve-b', second.url));
  await closed(b1);
  t.ok(Date.now() - moved < 1000, 'moved route: old connection closed within a second');
  t.equal(c1.readyState, WebSocket.OPEN, 'eve-c still untouched');
  const b2 = await open(`${base}/desktop/eve-b/websockify`, opts);
  t.teardown(() => b2.terminate());
  t.equal(second.handshakes.length, 1, 'the new connection reached the new upstream');
  t.equal((await roundTrip(b2, 'new place')).toString(), 'new place');
});

t.test('refused upgrades get an HTTP answer on the raw socket', async (t) => {
  const upstream = await startWsUpstream();
  t.teardown(() => upstream.close());
  // Accepts and reads, never answers (reading lets it see the proxy hang up).
  const silent = net.createServer((socket) => socket.resume());
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', () => resolve()));
  t.teardown(() => new Promise<void>((resolve) => silent.close(() => resolve())));
  const silentPort = (silent.address() as AddressInfo).port;
  const kinds: string[] = [];
  const { proxy } = await startStack(
    t,
    [
      makeRoute('fin-ok', upstream.url),
      makeRoute('fin-denied', upstream.url),
      makeRoute('fin-refused', `http://127.0.0.1:${await closedPort()}`),
      makeRoute('fin-silent', `http://127.0.0.1:${silentPort}`),
    ],
    {
      upstreamTimeoutMs: 400,
      authMode: 'oidc',
      authorize: (_req, route, kind) => {
        kinds.push(`${kind} ${route.path}`);
        return route.path === 'fin-denied' ? { allow: false, status: 403, message: 'Not your desktop.' } : { allow: true };
      },
    },
  );
  const handshake = (path: string): string =>
    `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nOrigin: http://x\r\n` +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;
  const cases: Array<[string, RegExp, RegExp]> = [
    ['/desktop/nobody/websockify', /^HTTP\/1\.1 404 /, /no desktop at \/desktop\/nobody\//],
    ['/desktop/fin-denied/websockify', /^HTTP\/1\.1 403 /, /Not your desktop/],
    ['/desktop/fin-refused/websockify', /^HTTP\/1\.1 502 /, /connection refused/],
    ['/desktop/fin-silent/websockify', /^HTTP\/1\.1 504 /, /did not answer in time/],
    ['/api/no-control-plane', /^HTTP\/1\.1 404 /, /only \/desktop\/ paths/],
  ];
  for (const [path, statusLine, message] of cases) {
    const answer = await rawExchange(proxy.port, handshake(path));
    t.match(answer, statusLine, `${path}: status`);
    t.match(answer, /content-type: application\/json/i);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { message: string };
    t.match(body.message, message, `${path}: readable message`);
  }
  const h2c = await rawExchange(proxy.port, 'GET /desktop/fin-ok/ HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n');
  t.match(h2c, /^HTTP\/1\.1 200 /, 'an upgrade to anything but WebSocket is ignored (RFC 9110 7.8): served as HTTP/1.1');
  t.notMatch(h2c, /^upgrade:/im, 'and no Upgrade comes back');
  t.ok(kinds.includes('upgrade fin-denied'), 'the access hook is asked for upgrades, with kind "upgrade"');
  const ok = await open(proxy.url.replace('http', 'ws') + '/desktop/fin-ok/', { origin: 'http://x' });
  t.teardown(() => ok.terminate());
  t.equal((await roundTrip(ok, 'after the refusals')).toString(), 'after the refusals', 'and the proxy keeps serving');
});

t.test('metrics count open WebSockets', async (t) => {
  const upstream = await startWsUpstream();
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('gil-ws', upstream.url)], { metricsPort: 0 });
  const ws = await open(proxy.url.replace('http', 'ws') + '/desktop/gil-ws/', { origin: 'http://x' });
  const scrape = (): Promise<string> =>
    new Promise((resolve, reject) => {
      http.get(`${proxy.metricsUrl}/metrics`, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve(text));
      }).on('error', reject);
    });
  t.match(await scrape(), /deskhub_proxy_open_websockets 1\b/);
  ws.close();
  await closed(ws);
  // The proxy sees the close right after the client does; wait for its bookkeeping, bounded.
  let text = '';
  for (let i = 0; i < 50; i++) {
    text = await scrape();
    if (/deskhub_proxy_open_websockets 0\b/.test(text)) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  t.match(text, /deskhub_proxy_open_websockets 0\b/);
  t.match(text, /deskhub_proxy_websockets_total 1\b/);
});
