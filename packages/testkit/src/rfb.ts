/**
 * A minimal RFB (VNC) client over a WebSocket, as noVNC speaks to websockify: the 3.8 handshake
 * with security type None, ClientInit (shared), then key, pointer and update-request messages.
 * Enough for tests to act on a real desktop (type into it, click, watch) and to see which
 * server they reached (its desktop name). Standard RFB only: the 6-byte PointerEvent, not
 * KasmVNC's 11-byte one.
 */
import WebSocket from 'ws';

export interface RfbSession {
  /** The server's 12-byte ProtocolVersion, e.g. "RFB 003.008\n": the first bytes it sent. */
  version: string;
  width: number;
  height: number;
  /** The desktop name from ServerInit. */
  name: string;
  /** Presses and releases each character (printable ASCII; "\n" is Return). */
  type(text: string): void;
  /** Moves the pointer there and clicks the left button. */
  click(x: number, y: number): void;
  /** Asks for a non-incremental update of a region and resolves when a FramebufferUpdate arrives. */
  update(x: number, y: number, width: number, height: number, timeoutMs?: number): Promise<void>;
  close(): void;
}

const RETURN = 0xff0d;

/** Bytes as they arrive, read by exact lengths. */
class ByteReader {
  private buffered = Buffer.alloc(0);
  private waiting: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  push(chunk: Buffer): void {
    this.buffered = Buffer.concat([this.buffered, chunk]);
    this.settle();
  }

  fail(err: Error): void {
    this.failure ??= err;
    this.settle();
  }

  read(n: number): Promise<Buffer> {
    if (this.waiting) throw new Error('one read at a time');
    return new Promise((resolve, reject) => {
      this.waiting = { n, resolve, reject };
      this.settle();
    });
  }

  private settle(): void {
    const w = this.waiting;
    if (!w) return;
    if (this.buffered.length >= w.n) {
      this.waiting = null;
      const out = this.buffered.subarray(0, w.n);
      this.buffered = this.buffered.subarray(w.n);
      w.resolve(out);
    } else if (this.failure) {
      this.waiting = null;
      w.reject(this.failure);
    }
  }
}

function keysym(c: string): number {
  if (c === '\n') return RETURN;
  const code = c.charCodeAt(0);
  if (code < 0x20 || code > 0x7e) throw new Error(`no keysym for ${JSON.stringify(c)} in this client`);
  return code;
}

/**
 * Performs the RFB handshake on an open WebSocket (or one still opening) and returns the session.
 * The socket is closed if the handshake fails.
 */
export async function startRfb(ws: WebSocket, timeoutMs = 10_000): Promise<RfbSession> {
  const reader = new ByteReader();
  ws.on('message', (data: Buffer) => reader.push(data));
  ws.on('close', (code, reason) => reader.fail(new Error(`the WebSocket closed (${code} ${reason.toString()})`)));
  ws.on('error', (err) => reader.fail(err));
  const timer = setTimeout(() => reader.fail(new Error(`no RFB handshake within ${timeoutMs} ms`)), timeoutMs);
  try {
    if (ws.readyState === WebSocket.CONNECTING) {
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
        ws.once('unexpected-response', (_req, res) => reject(new Error(`the WebSocket upgrade was answered ${res.statusCode}`)));
      });
    }
    const version = (await reader.read(12)).toString('latin1');
    if (!/^RFB 003\.00\d\n$/.test(version)) throw new Error(`not an RFB server: ${JSON.stringify(version)}`);
    ws.send(Buffer.from('RFB 003.008\n', 'latin1'));
    const count = (await reader.read(1))[0]!;
    if (count === 0) throw new Error(`the server refused: ${(await reader.read((await reader.read(4)).readUInt32BE(0))).toString()}`);
    const types = [...(await reader.read(count))];
    if (!types.includes(1)) throw new Error(`the server wants a password (security types ${types.join(', ')})`);
    ws.send(Buffer.from([1]));
    const result = (await reader.read(4)).readUInt32BE(0);
    if (result !== 0) throw new Error(`security result ${result}`);
    ws.send(Buffer.from([1])); // ClientInit: shared
    const init = await reader.read(24);
    const name = (await reader.read(init.readUInt32BE(20))).toString('utf8');
    clearTimeout(timer);
    const width = init.readUInt16BE(0);
    const height = init.readUInt16BE(2);
    const bytesPerPixel = init[4]! / 8;
    // The server's messages from here on, read to count FramebufferUpdates. No SetEncodings is
    // sent, so every rectangle is Raw; a message this client does not know stops the reading.
    let updates = 0;
    let stopped: Error | null = null;
    void (async () => {
      for (;;) {
        const type = (await reader.read(1))[0];
        if (type === 0) {
          const rects = (await reader.read(3)).readUInt16BE(1);
          for (let i = 0; i < rects; i++) {
            const r = await reader.read(12);
            if (r.readInt32BE(8) !== 0) throw new Error(`encoding ${r.readInt32BE(8)} was not asked for`);
            await reader.read(r.readUInt16BE(4) * r.readUInt16BE(6) * bytesPerPixel);
          }
          updates++;
        } else if (type === 3) {
          await reader.read((await reader.read(7)).readUInt32BE(3)); // ServerCutText
        } else if (type !== 2) {
          throw new Error(`server message type ${type} is unknown to this client`); // 2 is Bell
        }
      }
    })().catch((err: Error) => (stopped = err));
    const key = (sym: number, down: boolean) => {
      const m = Buffer.alloc(8);
      m[0] = 4;
      m[1] = down ? 1 : 0;
      m.writeUInt32BE(sym, 4);
      ws.send(m);
    };
    const pointer = (x: number, y: number, mask: number) => {
      const m = Buffer.alloc(6);
      m[0] = 5;
      m[1] = mask;
      m.writeUInt16BE(x, 2);
      m.writeUInt16BE(y, 4);
      ws.send(m);
    };
    return {
      version,
      width,
      height,
      name,
      type(text) {
        for (const c of text) {
          key(keysym(c), true);
          key(keysym(c), false);
        }
      },
      click(x, y) {
        pointer(x, y, 0);
        pointer(x, y, 1);
        pointer(x, y, 0);
      },
      async update(x, y, w, h, ms = 10_000) {
        const m = Buffer.alloc(10);
        m[0] = 3;
        m[1] = 0;
        m.writeUInt16BE(x, 2);
        m.writeUInt16BE(y, 4);
        m.writeUInt16BE(w, 6);
        m.writeUInt16BE(h, 8);
        const seen = updates;
        ws.send(m);
        const deadline = Date.now() + ms;
        while (updates === seen) {
          if (stopped) throw stopped;
          if (Date.now() > deadline) throw new Error(`no FramebufferUpdate within ${ms} ms`);
          await new Promise((r) => setTimeout(r, 20));
        }
      },
      close() {
        ws.close();
      },
    };
  } catch (err) {
    clearTimeout(timer);
    ws.terminate();
    throw err;
  }
}
