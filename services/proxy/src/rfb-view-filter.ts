/**
 * A viewer's connection to a VNC desktop (view-only sharing) carries to the desktop only what does
 * not act on it: the handshake, pixel formats, encodings, update requests, continuous updates,
 * fences, and KasmVNC's stats, video encoders and keep-alives. Keys, pointer, clipboard, QEMU
 * keys, power actions (xvp), resizes, relays into the container and the move to UDP are dropped,
 * whole messages at a time; the ClientInit's shared flag is forced on, as a viewer asking for
 * exclusive access would make the server disconnect the owner (kasm-contract.md, "RFB messages
 * from the browser").
 *
 * The browser's bytes are followed by the proxy's frame walker (ws-frames.ts) and the RFB client
 * grammar the input watch uses too (rfb-grammar.ts). Kept bytes are written again as new frames
 * (RFC 6455 §5.3): binary, FIN, masked with a fresh key from a CSPRNG, one frame per chunk fed
 * (RFB is a byte stream: message boundaries need not survive, and nothing is held back, so
 * latency is unchanged). Control frames (ping, pong, close) pass as they came, in order with the
 * data around them.
 *
 * Whatever it cannot follow fails the connection (fail closed): an unmasked or text frame, RSV
 * bits, a reserved opcode, a length past 2^53, a control frame fragmented or over 125 bytes, a
 * fragmentation out of order, and what the grammar cannot follow (an unknown message type, RFB
 * 3.3, another security type). It says why once and outputs nothing more; the caller closes the
 * viewer's connection.
 *
 * Only viewers pay for this: an owner's bytes pass through the relay unchanged.
 */
import { randomFillSync } from 'node:crypto';
import { RfbClientGrammar, type RfbDialect, type RfbReader } from './rfb-grammar.ts';
import { FrameCursor, headerLength, type PayloadListener } from './ws-frames.ts';

/** Room kept before a data frame's payload for its header: 2 + 8 length bytes + 4 key bytes. */
const HEADER_ROOM = 14;
const EMPTY: Buffer = Buffer.alloc(0);

/** Masking keys, taken four bytes at a time from a buffer refilled by the CSPRNG when used up. */
const keys = Buffer.allocUnsafe(1024);
let keysAt = keys.length;

function nextKey(into: Buffer): void {
  if (keysAt === keys.length) {
    randomFillSync(keys);
    keysAt = 0;
  }
  keys.copy(into, 0, keysAt, keysAt + 4);
  keysAt += 4;
}

export class RfbViewFilter implements PayloadListener, RfbReader {
  private why: string | null = null;
  private readonly frames = new FrameCursor(this);
  private readonly grammar: RfbClientGrammar;

  // WebSocket layer.
  private fragmented = false; // a data message has begun and its FIN frame not yet come
  private control: Buffer | null = null; // a control frame being collected, as it came
  private controlGot = 0;

  // RFB layer: the data frame payload being read, `chunk[start ..]` masked from `mask[maskAt]`;
  // `chunk[keptFrom ..]` are bytes of a message a viewer may send (`keeping`), not yet copied out.
  private chunk = EMPTY;
  private start = 0;
  private mask = EMPTY;
  private maskAt = 0;
  private keeping = true; // the handshake passes
  private keptFrom = 0;

  // Output: the data frame being written (payload from HEADER_ROOM on, masked with `key`), and
  // the frames done.
  private out: Buffer | null = null;
  private outAt = 0;
  private readonly key = Buffer.alloc(4);
  private readonly done: Buffer[] = [];

  constructor(dialect: RfbDialect) {
    this.grammar = new RfbClientGrammar(dialect, this);
  }

  /** Why the filter stopped (the connection must be closed), or null while it follows the stream. */
  get failed(): string | null {
    return this.why;
  }

  /**
   * The next bytes read from the viewer's socket (raw WebSocket frames, split anywhere): returns
   * the bytes to write to the desktop, or null when there are none (or the filter failed, in this
   * chunk or before: then nothing of it is to be written).
   */
  feed(chunk: Buffer): Buffer | null {
    if (this.why !== null) return null;
    this.frames.feed(chunk, 0, chunk.length);
    this.chunk = EMPTY;
    if (this.why !== null) return null;
    this.flush();
    const done = this.done;
    if (done.length === 0) return null;
    const out = done.length === 1 ? done[0]! : Buffer.concat(done);
    done.length = 0;
    return out;
  }

  // ---- WebSocket frames (for the frame cursor) ----------------------------------------------

  wants(opcode: number, head: Buffer, payloadLength: number): boolean {
    if (this.why !== null) return false;
    if ((head[1]! & 0x80) === 0) return this.fail('an unmasked frame (a browser masks every frame)');
    const fin = (head[0]! & 0x80) !== 0;
    if (opcode >= 8) {
      if (opcode > 10) return this.fail(`a frame with reserved opcode ${opcode}`);
      if (!fin) return this.fail('a fragmented control frame');
      if (payloadLength > 125) return this.fail('a control frame longer than 125 bytes');
      // What was kept before it goes first; it goes as it came, once whole.
      this.flush();
      const n = headerLength(head);
      const frame = Buffer.allocUnsafe(n + payloadLength);
      head.copy(frame, 0, 0, n);
      if (payloadLength === 0) {
        this.done.push(frame);
        return false;
      }
      this.control = frame;
      this.controlGot = n;
      return true;
    }
    if (opcode === 1) return this.fail('a text frame (RFB is carried in binary frames)');
    if (opcode === 2 && this.fragmented) return this.fail('a new message before the end of a fragmented one');
    if (opcode === 0 && !this.fragmented) return this.fail('a continuation frame with no message to continue');
    this.fragmented = !fin;
    return true;
  }

  payload(chunk: Buffer, start: number, length: number, mask: Buffer, maskAt: number): boolean {
    if (this.why !== null) return false;
    const control = this.control;
    if (control !== null) {
      chunk.copy(control, this.controlGot, start, start + length);
      this.controlGot += length;
      if (this.controlGot === control.length) {
        this.done.push(control);
        this.control = null;
      }
      return true;
    }
    this.chunk = chunk;
    this.start = start;
    this.mask = mask;
    this.maskAt = maskAt;
    this.keptFrom = start;
    if (!this.grammar.payload(chunk, start, length, mask, maskAt)) return false;
    if (this.keeping) this.keep(start + length);
    return true;
  }

  unreadable(why: string): void {
    this.fail(why);
  }

  // ---- RFB messages (for the grammar) -------------------------------------------------------

  clientInit(at: number): void {
    this.keep(at + 1);
    // Shared: a viewer never asks for the desktop to itself.
    const o = this.outAt - 1;
    this.out![o] = 1 ^ this.key[(o - HEADER_ROOM) & 3]!;
  }

  message(_type: number, at: number, view: boolean): void {
    if (this.keeping) this.keep(at);
    this.keeping = view;
    this.keptFrom = at;
  }

  input(): void {}

  lost(why: string): void {
    this.fail(why);
  }

  // ---- output --------------------------------------------------------------------------------

  /** Copies `chunk[keptFrom .. to)` into the data frame being written: unmasked, masked again with its key. */
  private keep(to: number): void {
    const from = this.keptFrom;
    this.keptFrom = to;
    if (to <= from) return;
    let out = this.out;
    if (out === null) {
      // Whatever is kept of this chunk from here on fits: at most its bytes from here.
      out = this.out = Buffer.allocUnsafe(HEADER_ROOM + this.chunk.length - from);
      this.outAt = HEADER_ROOM;
      nextKey(this.key);
    }
    const chunk = this.chunk;
    const mask = this.mask;
    const key = this.key;
    let mp = (this.maskAt + from - this.start) & 3;
    let o = this.outAt;
    for (let i = from; i < to; i++, o++) {
      out[o] = chunk[i]! ^ mask[mp]! ^ key[(o - HEADER_ROOM) & 3]!;
      mp = (mp + 1) & 3;
    }
    this.outAt = o;
  }

  /** The data frame being written, if any, is done: its header goes in the room before its payload. */
  private flush(): void {
    const out = this.out;
    if (out === null) return;
    this.out = null;
    const n = this.outAt - HEADER_ROOM;
    const at = HEADER_ROOM - (n < 126 ? 6 : n < 65536 ? 8 : 14);
    out[at] = 0x82; // FIN, binary
    if (n < 126) out[at + 1] = 0x80 | n;
    else if (n < 65536) {
      out[at + 1] = 0x80 | 126;
      out.writeUInt16BE(n, at + 2);
    } else {
      out[at + 1] = 0x80 | 127;
      out.writeUInt32BE(Math.floor(n / 2 ** 32), at + 2);
      out.writeUInt32BE(n >>> 0, at + 6);
    }
    this.key.copy(out, HEADER_ROOM - 4);
    this.done.push(out.subarray(at, this.outAt));
  }

  private fail(why: string): false {
    if (this.why === null) {
      this.why = why;
      this.out = null;
      this.control = null;
      this.done.length = 0;
    }
    return false;
  }
}
