/**
 * View-only connections through `pipeUpgrade` on real TCP sockets: a client writing masked
 * frames as a browser does, the proxy's upgrade pipe, and a desktop that is a real WebSocket
 * server (`ws`) recording what it receives. The desktop must receive only what a viewer may send
 * (both dialects), its frames must reach the viewer unchanged, a desktop that stops reading must
 * hold the viewer back, and what the filter cannot follow must close the viewer with 1008 and the
 * desktop's connection with it. `OpenConnections.closeWhere` must close exactly the connections
 * whose tag it is asked for, with its code, and never an untagged (owner's) one.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import t from 'tap';
import WebSocket, { WebSocketServer } from 'ws';
import { createRouteStream } from '@deskhub/route-stream';
import { ProxyMetrics } from '../src/metrics.ts';
import type { RfbDialect } from '../src/rfb-grammar.ts';
import { Targets } from '../src/targets.ts';
import { OpenConnections, pipeUpgrade, type PipeOptions, type UpgradeSettings } from '../src/websocket.ts';
import { makeRoute, silentLogger } from './helpers.ts';
import { browserFrame, cat, framings, handshake, session, setEncodings, u16, updateRequest } from './rfb-messages.ts';
import { readFrames, type ReadFrame } from './ws-helpers.ts';

interface Teardown {
  teardown(fn: () => unknown): void;
}

/** A WebSocket connection as the desktop sees it. */
interface DesktopSide {
  ws: WebSocket;
  socket: Duplex;
  received: Buffer[];
  closed: Promise<void>;
}

/** A desktop: every WebSocket connection it accepted, in order. */
async function startDesktop(t: Teardown): Promise<{ url: string; sides: DesktopSide[] }> {
  const server = http.createServer();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const sides: DesktopSide[] = [];
  server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      const received: Buffer[] = [];
      ws.on('message', (data: Buffer) => received.push(Buffer.from(data)));
      sides.push({ ws, socket, received, closed: new Promise((resolve) => ws.once('close', () => resolve())) });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    for (const c of wss.clients) c.terminate();
    server.close(() => resolve());
  }));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, sides };
}

/** A browser on a raw socket: masked frames out, the 101's head and the frames it is sent in. */
class RawClient {
  private bytes = Buffer.alloc(0);
  private headDone = false;
  readonly frames: ReadFrame[] = [];
  readonly closed: Promise<void>;
  private waiters: Array<() => void> = [];

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.bytes = Buffer.concat([this.bytes, chunk]);
      if (!this.headDone) {
        const end = this.bytes.indexOf('\r\n\r\n');
        if (end === -1) return;
        if (!this.bytes.subarray(0, 12).toString('latin1').startsWith('HTTP/1.1 101')) throw new Error(`not a 101: ${this.bytes.toString('latin1')}`);
        this.headDone = true;
        this.bytes = this.bytes.subarray(end + 4);
      }
      const { frames, used } = readFrames(this.bytes);
      this.bytes = this.bytes.subarray(used);
      this.frames.push(...frames);
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /** Resolves once `ready` holds (checked as frames arrive). */
  async until(ready: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ready()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  get upgraded(): boolean {
    return this.headDone;
  }

  /** The close frame it got, if any. */
  closeFrame(): { code: number; reason: string } | undefined {
    const f = this.frames.find((x) => x.opcode === 8);
    return f && { code: f.payload.readUInt16BE(0), reason: f.payload.subarray(2).toString('utf8') };
  }
}

async function until(ready: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Piped {
  client: RawClient;
  /** The proxy's socket to the client (paused while the desktop does not keep up). */
  proxySide: net.Socket;
  desktop: DesktopSide;
}

/** The proxy's upgrade pipe to a desktop, as `startPipe` uses it: `open(options)` connects a client through it. */
async function startPipes(t: Teardown) {
  const desktop = await startDesktop(t);
  const stream = createRouteStream({ logger: silentLogger });
  t.teardown(() => stream.close());
  const connections = new OpenConnections();
  const settings: UpgradeSettings = { metrics: new ProxyMetrics(stream.subscriber()), logger: silentLogger, upstreamTimeoutMs: 5_000, connections };
  const target = new Targets(undefined).forRoute(makeRoute('shared-desk', desktop.url));
  const pending: PipeOptions[] = [];
  const accepted: net.Socket[] = [];
  const server = net.createServer((socket) => {
    accepted.push(socket);
    const handshake =
      `GET /websockify HTTP/1.1\r\nHost: ${target.authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
    pipeUpgrade(settings, socket, Buffer.alloc(0), target, handshake, false, () => true, pending.shift());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of accepted) s.destroy();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  return {
    connections,
    key: target.key,
    async open(options: PipeOptions): Promise<Piped> {
      pending.push(options);
      const before = accepted.length;
      const client = new RawClient(net.connect(port, '127.0.0.1'));
      t.teardown(() => client.socket.destroy());
      await client.until(() => client.upgraded, 'the 101');
      const proxySide = accepted[before]!;
      return { client, proxySide, desktop: desktop.sides[desktop.sides.length - 1]! };
    },
  };
}

const dialects: RfbDialect[] = ['standard', 'kasmvnc'];
const received = (side: DesktopSide): Buffer => Buffer.concat(side.received);

for (const dialect of dialects) {
  t.test(`${dialect}: the desktop receives only what a viewer may send; its frames reach the viewer unchanged`, async (t) => {
    const pipes = await startPipes(t);
    const seen: Buffer[] = [];
    const { client, desktop } = await pipes.open({ viewOnly: dialect, observe: (chunk, start, length) => seen.push(Buffer.from(chunk.subarray(start, start + length))), tag: 'share-1' });
    const messages = session(dialect);
    const framed = framings['fragmented frames with pings between the fragments']!([handshake(2, 0), ...messages.map((m) => m.bytes)]);
    const rfb = framed.bytes;
    // Written in pieces, as a browser's writes may arrive.
    for (let at = 0, size = 7; at < rfb.length; at += size, size = (size * 5) % 61 + 1) {
      client.socket.write(rfb.subarray(at, at + size));
      await new Promise((r) => setImmediate(r));
    }
    const hs = handshake(2, 0);
    const keptLength = hs.length + messages.filter((m) => m.view).reduce((n, m) => n + m.bytes.length, 0);
    await until(() => received(desktop).length >= keptLength, 'the kept bytes at the desktop');
    const got = received(desktop);
    t.equal(got.length, keptLength, 'as many bytes as were kept');
    t.equal(got.subarray(0, 12).toString('latin1'), 'RFB 003.008\n', 'the handshake');
    t.equal(got[hs.length - 1], 1, 'ClientInit: shared');
    t.ok(got.subarray(hs.length).equals(cat(...messages.filter((m) => m.view).map((m) => m.bytes))), 'then exactly the messages a viewer may send, in order');
    await client.until(() => client.frames.some((f) => f.opcode === 10 && f.payload.toString() === 'ping'), "the desktop's pong");
    t.pass('the ping reached the desktop, which answered it');

    const framebuffer = randomBytes(200_000);
    desktop.ws.send(framebuffer);
    desktop.ws.send(Buffer.from([0, 0, 0, 1]));
    await client.until(() => client.frames.filter((f) => f.opcode === 2).length === 2, "the desktop's two frames");
    const data = client.frames.filter((f) => f.opcode === 2);
    t.ok(data[0]!.payload.equals(framebuffer) && data[0]!.key === null, 'a 200 KB framebuffer update, unchanged');
    t.same([...data[1]!.payload], [0, 0, 0, 1], 'and a small one');
    t.ok(Buffer.concat(seen).equals(rfb), "the observer saw the viewer's bytes as sent");
  });
}

t.test('a desktop that stops reading holds the viewer back; everything arrives once it reads again', async (t) => {
  const pipes = await startPipes(t);
  const { client, proxySide, desktop } = await pipes.open({ viewOnly: 'kasmvnc' });
  client.socket.write(browserFrame(handshake()));
  await until(() => received(desktop).length === handshake().length, 'the handshake');
  desktop.socket.pause();
  const chunk = browserFrame(cat(setEncodings(50_000), updateRequest())); // ~200 KB a viewer may send
  const want = 40 * (chunk.length - 14); // payload bytes (64-bit length, masked: 14-byte header)
  for (let i = 0; i < 40; i++) client.socket.write(chunk);
  await until(() => proxySide.isPaused(), 'the viewer socket paused');
  t.pass('the proxy stopped reading the viewer');
  desktop.socket.resume();
  await until(() => received(desktop).length === handshake().length + want, 'everything at the desktop', 30_000);
  t.ok(received(desktop).subarray(handshake().length).equals(Buffer.concat(Array.from({ length: 40 }, () => cat(setEncodings(50_000), updateRequest())))), 'byte for byte');
});

t.test('what the filter cannot follow closes the viewer with 1008 and the reason, and the desktop connection with it', async (t) => {
  const pipes = await startPipes(t);
  for (const [name, dialect, bad] of [
    ['an unknown message type', 'standard', browserFrame(Buffer.from([99, 0, 0, 0]))],
    ['ServerDisconnect in kasmvnc', 'kasmvnc', browserFrame(Buffer.from([186]))],
    ['a text frame', 'standard', browserFrame(Buffer.from('hi'), { opcode: 1 })],
  ] as const) {
    const { client, desktop } = await pipes.open({ viewOnly: dialect, tag: 'share-1' });
    client.socket.write(cat(browserFrame(handshake()), browserFrame(updateRequest())));
    await until(() => received(desktop).length === handshake().length + 10, `${name}: the handshake and update request`);
    client.socket.write(cat(bad, browserFrame(updateRequest())));
    await client.closed;
    const close = client.closeFrame();
    t.equal(close?.code, 1008, `${name}: closed with 1008`);
    t.match(close?.reason, /^View-only/, `${name}: with the reason (${close?.reason})`);
    await desktop.closed;
    t.equal(received(desktop).length, handshake().length + 10, `${name}: nothing after it reached the desktop, whose connection is closed`);
    t.equal(pipes.connections.count(pipes.key), 0, `${name}: no longer registered`);
  }
});

t.test('closeWhere closes exactly the tagged connections it is asked for, with its code; never an owner', async (t) => {
  const pipes = await startPipes(t);
  const a = await pipes.open({ viewOnly: 'standard', tag: 'share-a' });
  const b = await pipes.open({ viewOnly: 'standard', tag: 'share-b' });
  const owner = await pipes.open({});
  for (const p of [a, b, owner]) {
    p.client.socket.write(browserFrame(handshake()));
    await until(() => received(p.desktop).length === handshake().length, 'the handshake at the desktop');
  }
  t.equal(pipes.connections.count(pipes.key), 3, 'three open');
  t.equal(pipes.connections.closeWhere('another-desk', () => true, 4003, 'no'), 0, 'another key: none');

  t.equal(pipes.connections.closeWhere(pipes.key, (tag) => tag === 'share-a', 4003, 'The share was revoked.'), 1, 'one closed');
  await a.client.closed;
  t.same(a.client.closeFrame(), { code: 4003, reason: 'The share was revoked.' }, 'the one with that tag, with the code and reason');
  await a.desktop.closed;
  t.equal(pipes.connections.count(pipes.key), 2, 'two left');

  // The others still carry both ways.
  for (const [name, p] of [['share-b', b], ['the owner', owner]] as const) {
    const before = received(p.desktop).length;
    p.client.socket.write(browserFrame(updateRequest()));
    await until(() => received(p.desktop).length === before + 10, `${name}: an update request at the desktop`);
    p.desktop.ws.send(Buffer.from('frame'));
    await p.client.until(() => p.client.frames.some((f) => f.opcode === 2 && f.payload.toString() === 'frame'), `${name}: a frame back`);
    t.pass(`${name} still open both ways`);
  }

  t.equal(pipes.connections.closeWhere(pipes.key, () => true, 4003, 'Sharing stopped.'), 1, 'every tag: only the other viewer');
  await b.client.closed;
  t.same(b.client.closeFrame(), { code: 4003, reason: 'Sharing stopped.' });
  t.equal(pipes.connections.count(pipes.key), 1, 'the owner stays');
  t.notOk(owner.client.closeFrame(), 'and got no close');
  // An owner's key pressed: passed unchanged (no filter on its connection).
  const key = cat([4, 1, 0, 0], u16(0), u16(0x61));
  owner.client.socket.write(browserFrame(key));
  await until(() => received(owner.desktop).subarray(-8).equals(key), "the owner's key at the desktop");
  t.pass("the owner's input reaches the desktop");
});
