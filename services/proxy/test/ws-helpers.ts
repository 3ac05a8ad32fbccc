/**
 * WebSocket pieces the proxy tests (and bench/rfb-input.ts) share: the one frame builder and its
 * reader, desktops that speak WebSocket (one that records what it is sent, one that writes a large
 * frame in two halves on cue), and a client that opens, or reports how its upgrade was refused.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';

export interface FrameOptions {
  /** 2 (binary) unless given: 0 continuation, 1 text, 8 close, 9 ping, 10 pong. */
  opcode?: number;
  /** Last fragment of its message (default true). */
  fin?: boolean;
  /** Masked with a random key, as a browser sends (default false: as a server sends). */
  masked?: boolean;
}

/** One WebSocket frame (RFC 6455 §5.2) with the length encoding its size calls for. */
export function wsFrame(payload: Buffer, options: FrameOptions = {}): Buffer {
  const { opcode = 2, fin = true, masked = false } = options;
  const n = payload.length;
  const extra = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + extra);
  head[0] = (fin ? 0x80 : 0) | opcode;
  head[1] = (masked ? 0x80 : 0) | (n < 126 ? n : n < 65536 ? 126 : 127);
  if (extra === 2) head.writeUInt16BE(n, 2);
  else if (extra === 8) head.writeBigUInt64BE(BigInt(n), 2);
  if (!masked) return Buffer.concat([head, payload]);
  const key = randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i]! ^= key[i & 3]!;
  return Buffer.concat([head, key, body]);
}

/** A frame read back (`readFrames`): its header's flags, its masking key if any, its payload unmasked, and its bytes as they came. */
export interface ReadFrame {
  fin: boolean;
  rsv: number;
  opcode: number;
  key: Buffer | null;
  payload: Buffer;
  raw: Buffer;
}

/** The whole frames at the start of `bytes` (RFC 6455 §5.2), and how many bytes they take. */
export function readFrames(bytes: Buffer): { frames: ReadFrame[]; used: number } {
  const frames: ReadFrame[] = [];
  let at = 0;
  for (;;) {
    if (bytes.length - at < 2) break;
    const len7 = bytes[at + 1]! & 0x7f;
    const masked = (bytes[at + 1]! & 0x80) !== 0;
    const extra = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
    const headLength = 2 + extra + (masked ? 4 : 0);
    if (bytes.length - at < headLength) break;
    const n = len7 === 126 ? bytes.readUInt16BE(at + 2) : len7 === 127 ? Number(bytes.readBigUInt64BE(at + 2)) : len7;
    if (bytes.length - at < headLength + n) break;
    const key = masked ? Buffer.from(bytes.subarray(at + headLength - 4, at + headLength)) : null;
    const payload = Buffer.from(bytes.subarray(at + headLength, at + headLength + n));
    if (key !== null) for (let i = 0; i < n; i++) payload[i]! ^= key[i & 3]!;
    const b0 = bytes[at]!;
    frames.push({ fin: (b0 & 0x80) !== 0, rsv: b0 & 0x70, opcode: b0 & 0x0f, key, payload, raw: Buffer.from(bytes.subarray(at, at + headLength + n)) });
    at += headLength + n;
  }
  return { frames, used: at };
}

export interface RecordingDesktop {
  url: string;
  /** Every message the desktop's WebSockets received, in order. */
  received: Buffer[];
  /** WebSocket connections accepted so far. */
  connections: number;
  close(): Promise<void>;
}

/** A desktop: a page on GET, and a WebSocket that keeps every byte it is sent. */
export async function startRecordingDesktop(): Promise<RecordingDesktop> {
  const server = http.createServer((_req, res) => res.end('page'));
  const wss = new WebSocketServer({ server });
  const desktop: RecordingDesktop = {
    url: '',
    received: [],
    connections: 0,
    close: () => new Promise((resolve) => {
      for (const c of wss.clients) c.terminate();
      server.close(() => resolve());
    }),
  };
  wss.on('connection', (ws) => {
    desktop.connections++;
    ws.on('message', (data: Buffer) => desktop.received.push(Buffer.from(data)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  desktop.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return desktop;
}

export interface HalfFrameDesktop {
  url: string;
  /** Writes the first half of the large frame once a WebSocket is upgraded. */
  sendFirstHalf(): void;
  /** Writes the rest of it, then one more small frame ("after the close"). */
  sendRest(): void;
  /** Settles when the desktop's side of the connection closed. */
  closed: Promise<void>;
  close(): Promise<void>;
}

/** A desktop that upgrades by hand and writes a frame of `payload` in two halves, on cue. */
export async function startHalfFrameDesktop(payload: Buffer): Promise<HalfFrameDesktop> {
  const whole = wsFrame(payload);
  const half = Math.floor(whole.length / 2);
  let socket: Socket | null = null;
  let connected: () => void = () => undefined;
  const upgraded = new Promise<void>((resolve) => (connected = resolve));
  let closedResolve: () => void = () => undefined;
  const closed = new Promise<void>((resolve) => (closedResolve = resolve));
  const server = http.createServer();
  server.on('upgrade', (req, s: Socket) => {
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    s.on('error', () => undefined);
    s.on('close', () => closedResolve());
    s.on('end', () => s.destroy()); // the proxy closed its side: so does the desktop
    s.resume(); // read, so the proxy's close is seen
    socket = s;
    connected();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sendFirstHalf: () => void upgraded.then(() => socket!.write(whole.subarray(0, half))),
    sendRest: () => void socket!.write(Buffer.concat([whole.subarray(half), wsFrame(Buffer.from('after the close'))])),
    closed,
    close: () => new Promise((resolve) => {
      socket?.destroy();
      server.close(() => resolve());
    }),
  };
}

/** An open client WebSocket, or how its upgrade was refused (status and body). */
export type Upgrade = { ws: WebSocket; status?: undefined; body?: undefined } | { ws?: undefined; status: number; body: string };

/** Opens a WebSocket; resolves with it, or with the refusal's status and body. */
export function upgrade(url: string, options: WebSocket.ClientOptions = {}): Promise<Upgrade> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: 10_000, ...options });
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
        ws.terminate();
      });
    });
    ws.once('error', reject);
  });
}

/** Opens a WebSocket; rejects when the upgrade is refused. */
export async function open(url: string, options: WebSocket.ClientOptions = {}): Promise<WebSocket> {
  const u = await upgrade(url, options);
  if (u.ws === undefined) throw new Error(`upgrade refused: ${u.status} ${u.body}`);
  return u.ws;
}

/** Resolves with the close code and reason the client got. */
export function closeOf(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}
