/**
 * WebSocket load from the harness process (the `ws` client): one-connection ping-pong round
 * trips, a 64 KiB frame stream through the echo, and many idle open sockets for the memory and
 * route-change figures. Compression is off, as between a VNC client and a desktop.
 */
import WebSocket from 'ws';

function origin(url: string): string {
  return new URL(url.replace(/^ws/, 'http')).origin;
}

/** Extra handshake headers, e.g. the access cookie (the Origin is always the URL's own origin). */
export type HandshakeHeaders = Record<string, string>;

export function openSocket(url: string, timeoutMs = 30_000, headers: HandshakeHeaders = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, origin: origin(url), handshakeTimeout: timeoutMs, headers });
    const fail = (err: Error) => {
      ws.removeAllListeners();
      ws.on('error', () => {});
      ws.terminate();
      reject(err);
    };
    ws.once('open', () => {
      ws.removeListener('error', fail);
      ws.on('error', () => {}); // closes are counted by callers; errors must not crash the harness
      resolve(ws);
    });
    ws.once('error', fail);
    ws.once('unexpected-response', (_req, res) => fail(new Error(`upgrade refused: HTTP ${res.statusCode} for ${url}`)));
  });
}

function closed(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve) => ws.once('close', () => resolve()));
}

/** Round trips of `size`-byte binary messages on one connection, in microseconds (after a warm-up). */
export async function roundTrips(url: string, count: number, warmup: number, size = 100, headers: HandshakeHeaders = {}): Promise<number[]> {
  const ws = await openSocket(url, 30_000, headers);
  const payload = Buffer.alloc(size, 'r');
  const samples: number[] = [];
  try {
    for (let i = 0; i < warmup + count; i++) {
      const start = process.hrtime.bigint();
      await new Promise<void>((resolve, reject) => {
        const onClose = () => reject(new Error('socket closed during round trips'));
        ws.once('close', onClose);
        ws.once('message', () => {
          ws.removeListener('close', onClose);
          resolve();
        });
        ws.send(payload);
      });
      if (i >= warmup) samples.push(Number(process.hrtime.bigint() - start) / 1000);
    }
  } finally {
    ws.close();
    await closed(ws);
  }
  return samples;
}

export interface FrameStreamResult {
  frames: number;
  seconds: number;
  framesPerSecond: number;
  megabytesPerSecond: number;
  /** CPU the harness process (the load generator) used meanwhile, seconds. */
  clientCpuSeconds: number;
}

/** Streams 64 KiB binary frames to the echo with `window` frames in flight; counts frames that came back. */
export async function frameStream(url: string, seconds: number, window = 8, size = 64 * 1024): Promise<FrameStreamResult> {
  const ws = await openSocket(url);
  const payload = Buffer.alloc(size, 'f');
  let echoed = 0;
  let stop = false;
  const cpu0 = process.cpuUsage();
  const start = process.hrtime.bigint();
  const done = new Promise<void>((resolve, reject) => {
    ws.on('close', () => (stop ? resolve() : reject(new Error('socket closed during the frame stream'))));
    ws.on('message', () => {
      echoed++;
      if (!stop) ws.send(payload);
    });
  });
  for (let i = 0; i < window; i++) ws.send(payload);
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  stop = true;
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  const frames = echoed;
  const cpu = process.cpuUsage(cpu0);
  ws.close();
  await done;
  return {
    frames,
    seconds: elapsed,
    framesPerSecond: frames / elapsed,
    megabytesPerSecond: (frames * size) / elapsed / 1e6,
    clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

export interface IdleSockets {
  readonly sockets: WebSocket[];
  /** Sockets that closed since they were opened, other than by closeAll (should stay 0). */
  readonly closes: number;
  /** Those closes by code and reason ("1006 ", "1001 going away"), and when each happened (ms since the first open). */
  readonly closeCodes: Record<string, number>;
  readonly closedAtMs: number[];
  /** Opens `n` more sockets, `concurrency` handshakes at a time, and keeps them idle. */
  open(url: string, n: number, concurrency?: number): Promise<void>;
  /** Sends one small message on every socket and resolves with how many echoed it back. */
  echoAll(timeoutMs?: number): Promise<number>;
  closeAll(): Promise<void>;
}

export function idleSockets(): IdleSockets {
  const sockets: WebSocket[] = [];
  let closes = 0;
  let closing = false;
  const closeCodes: Record<string, number> = {};
  const closedAtMs: number[] = [];
  const since = Date.now();
  return {
    sockets,
    get closes() {
      return closes;
    },
    closeCodes,
    closedAtMs,
    async open(url, n, concurrency = 200) {
      let started = 0;
      const worker = async () => {
        while (started < n) {
          started++;
          const ws = await openSocket(url);
          ws.once('close', (code: number, reason: Buffer) => {
            if (closing) return;
            closes++;
            const key = `${code} ${reason.toString()}`.trim();
            closeCodes[key] = (closeCodes[key] ?? 0) + 1;
            closedAtMs.push(Date.now() - since);
          });
          sockets.push(ws);
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
    },
    async echoAll(timeoutMs = 30_000) {
      const ping = Buffer.from('still there?');
      let answered = 0;
      await Promise.all(
        sockets.map(
          (ws) =>
            new Promise<void>((resolve) => {
              if (ws.readyState !== WebSocket.OPEN) return resolve();
              const timer = setTimeout(resolve, timeoutMs);
              ws.once('message', () => {
                clearTimeout(timer);
                answered++;
                resolve();
              });
              ws.send(ping);
            }),
        ),
      );
      return answered;
    },
    async closeAll() {
      closing = true;
      const all = sockets.map(closed);
      for (const ws of sockets) ws.terminate();
      await Promise.all(all);
      sockets.length = 0;
      closing = false;
    },
  };
}
