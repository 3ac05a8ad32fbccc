/**
 * Input, seen in the browser-to-desktop half of a VNC WebSocket as it passes, without changing a
 * byte: the idle clock of a desktop runs on key presses, pointer movement and pastes, not on a
 * background tab's keep-alives and update requests (kasm-contract.md, "RFB messages from the
 * browser").
 *
 * Two layers follow the stream. WebSocket frames (RFC 6455 §5.2) are followed by the proxy's one
 * frame walker, `FrameCursor` (ws-frames.ts), which shows this watch the payloads of binary and
 * continuation frames; they are unmasked only where a byte is needed, and control frames and
 * text frames are passed over. RFB client
 * messages (RFC 6143 §7.5 plus KasmVNC's): after the handshake (12-byte ProtocolVersion, the
 * security type, 16 bytes of VNC authentication if chosen, the 1-byte ClientInit) each message's
 * type and the few bytes that tell its length or whether it is input are read, and the rest is
 * skipped by count. The RFB stream is followed across frames, so a message may be split at any
 * byte or several may share one frame.
 *
 * Input: KeyEvent and QEMU extended key events with the down flag (a key-up is not: Kasm's client
 * sends a key-up of keysym 1 every 5 s as a keep-alive), a PointerEvent that moves (after the
 * connection's first, which only says where the pointer is), presses or scrolls, ClientCutText, KasmVNC's BinaryClipboard, UnixRelay and DirectMouseEvent. Not input:
 * pixel formats, encodings, update requests, continuous updates, fences, stats, KeepAlive.
 *
 * Anything it cannot follow (an unknown message type, RFB 3.3, another security type, a
 * compressed frame, a ServerDisconnect whose length is not documented) makes it stop reading:
 * from then on every chunk counts as input (a person is never taken for idle by mistake), and
 * `onUntrusted` is told why, once.
 */
import { FrameCursor, type PayloadListener } from './ws-frames.ts';

/** Standard RFB (x11vnc, TigerVNC, noVNC against them) or KasmVNC's (11-byte pointer events, messages 178-188, 252). */
export type RfbDialect = 'standard' | 'kasmvnc';

export interface InputWatchEvents {
  /** A message that is input passed (or, once untrusted, any chunk). */
  onInput(): void;
  /** The watch stopped following the stream; `why` says what it met. Called once. */
  onUntrusted(why: string): void;
}

// RFB layer states: what the collected bytes are.
const VERSION = 0;
const SECURITY = 1;
const CLIENT_INIT = 2;
const TYPE = 3;
const ENCODINGS = 4;
const KEY = 5;
const POINTER = 6;
const CUT_TEXT = 7;
const FENCE = 8;
const DESKTOP_SIZE = 9;
const QEMU = 10;
const CLIPBOARD_COUNT = 11;
const CLIPBOARD_MIME = 12;
const CLIPBOARD_DATA = 13;
const UDP_UPGRADE = 14;
const RELAY_SUBSCRIBE = 15;
const RELAY_NAME = 16;
const RELAY_DATA = 17;
const VIDEO_ENCODERS = 18;
const DIRECT_MOUSE = 19;

const OPCODE_CONTINUATION = 0;
const OPCODE_BINARY = 2;

export class RfbInputWatch implements PayloadListener {
  /** Stopped following the stream: every chunk is input. */
  untrusted = false;

  // WebSocket frame layer: shows this watch the payloads of data frames (`wants`, `payload`).
  private readonly frames = new FrameCursor(this);

  // RFB layer: `need` bytes are collected (unmasked) into `buf`, then `state` reads them; `skip`
  // bytes are passed over first.
  private readonly buf = Buffer.alloc(16);
  private got = 0;
  private need = 12;
  private skip = 0;
  private state = VERSION;
  private clipboardItems = 0;
  private lastMask = 0;
  private lastX = -1;
  private lastY = -1;

  constructor(
    private readonly dialect: RfbDialect,
    private readonly events: InputWatchEvents,
  ) {}

  /** The next bytes the browser sent, `chunk[start .. start + length)`, in order. */
  feed(chunk: Buffer, start = 0, length = chunk.length - start): void {
    if (this.untrusted) {
      this.events.onInput();
      return;
    }
    this.frames.feed(chunk, start, length);
  }

  /** For the frame cursor: RFB is carried in binary frames and their continuations; text and control frames carry none. */
  wants(opcode: number): boolean {
    return opcode === OPCODE_BINARY || opcode === OPCODE_CONTINUATION;
  }

  /** For the frame cursor: a frame it cannot follow. */
  unreadable(why: string): void {
    this.stop(why);
  }

  /** For the frame cursor: RFB bytes `chunk[start .. start + length)`, masked from `mask[maskAt]` on. False once untrusted. */
  payload(chunk: Buffer, start: number, length: number, mask: Buffer, maskAt: number): boolean {
    let j = start;
    const end = start + length;
    let mp = maskAt;
    while (j < end) {
      if (this.skip > 0) {
        const s = Math.min(this.skip, end - j);
        this.skip -= s;
        j += s;
        mp = (mp + s) & 3;
        continue;
      }
      this.buf[this.got++] = chunk[j++]! ^ mask[mp]!;
      mp = (mp + 1) & 3;
      if (this.got === this.need) {
        this.got = 0;
        this.step();
        if (this.untrusted) return false;
      }
    }
    return true;
  }

  private next(state: number, need: number, skip = 0): void {
    this.state = state;
    this.need = need;
    this.skip = skip;
  }

  /** The next message's type byte follows, after `skip` bytes of this one. */
  private nextMessage(skip = 0): void {
    this.next(TYPE, 1, skip);
  }

  private input(): void {
    this.events.onInput();
  }

  private stop(why: string): false {
    this.untrusted = true;
    this.events.onUntrusted(why);
    this.events.onInput();
    return false;
  }

  /** `need` bytes are in `buf`: read them and say what comes next. */
  private step(): void {
    const b = this.buf;
    switch (this.state) {
      case VERSION: {
        // "RFB 003.008\n"; 3.3 lets the server pick the security type without a client byte.
        const text = b.toString('latin1', 0, 12);
        const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(text);
        if (m === null) return void this.stop('no RFB ProtocolVersion at the start');
        if (Number(m[1]) === 3 && Number(m[2]) < 7) return void this.stop(`RFB ${m[1]}.${m[2]} (the server picks the security type)`);
        return this.next(SECURITY, 1);
      }
      case SECURITY:
        if (b[0] === 1) return this.next(CLIENT_INIT, 1); // None
        if (b[0] === 2) return this.next(CLIENT_INIT, 1, 16); // VNC authentication: a 16-byte response
        return void this.stop(`security type ${b[0]}`);
      case CLIENT_INIT:
        return this.nextMessage();
      case TYPE:
        return this.message(b[0]!);
      case ENCODINGS:
        return this.nextMessage(4 * b.readUInt16BE(1));
      case KEY:
        if (b[0] !== 0) this.input();
        return this.nextMessage();
      case POINTER:
        this.pointer();
        return this.nextMessage();
      case CUT_TEXT: {
        // A negative length is an extended clipboard message of that many bytes (RFC 6143 extension).
        const length = b.readInt32BE(3);
        this.input();
        return this.nextMessage(Math.abs(length));
      }
      case FENCE:
        return this.nextMessage(b[7]!);
      case DESKTOP_SIZE:
        return this.nextMessage(16 * b[5]!);
      case QEMU:
        if (b[0] !== 0) return void this.stop(`QEMU client message subtype ${b[0]}`);
        if (b.readUInt16BE(1) !== 0) this.input();
        return this.nextMessage();
      case CLIPBOARD_COUNT:
        this.input();
        this.clipboardItems = b[0]!;
        return this.clipboardItems === 0 ? this.nextMessage() : this.next(CLIPBOARD_MIME, 1);
      case CLIPBOARD_MIME:
        return this.next(CLIPBOARD_DATA, 4, b[0]!);
      case CLIPBOARD_DATA:
        this.clipboardItems--;
        if (this.clipboardItems === 0) return this.nextMessage(b.readUInt32BE(0));
        return this.next(CLIPBOARD_MIME, 1, b.readUInt32BE(0));
      case UDP_UPGRADE:
        return this.nextMessage(b.readUInt16BE(0));
      case RELAY_SUBSCRIBE:
        return this.nextMessage(b[0]!);
      case RELAY_NAME:
        return this.next(RELAY_DATA, 4, b[0]!);
      case RELAY_DATA:
        this.input();
        return this.nextMessage(b.readUInt32BE(0));
      case VIDEO_ENCODERS:
        return this.nextMessage(4 * b[0]!);
      case DIRECT_MOUSE:
        this.input();
        return this.nextMessage();
    }
  }

  /** A message of `type` starts: what of it must be read. */
  private message(type: number): void {
    const kasm = this.dialect === 'kasmvnc';
    switch (type) {
      case 0: return this.nextMessage(19); // SetPixelFormat
      case 2: return this.next(ENCODINGS, 3); // SetEncodings: count at offset 2
      case 3: return this.nextMessage(9); // FramebufferUpdateRequest
      case 4: return this.next(KEY, 7, 0); // KeyEvent: down flag, padding, keysym
      case 5: return this.next(POINTER, kasm ? 10 : 5); // PointerEvent
      case 6: return this.next(CUT_TEXT, 7); // ClientCutText: length at offset 4
      case 150: return this.nextMessage(9); // EnableContinuousUpdates
      case 248: return this.next(FENCE, 8); // ClientFence: payload length at offset 8
      case 250: return this.nextMessage(3); // xvp
      case 251: return this.next(DESKTOP_SIZE, 7); // SetDesktopSize: screens at offset 6
      case 255: return this.next(QEMU, 11); // QEMU: subtype, down flag, keysym, keycode
    }
    if (kasm) {
      switch (type) {
        case 178: return this.nextMessage(3); // RequestStats
        case 179: return this.nextMessage(11); // FrameStats
        case 180: return this.next(CLIPBOARD_COUNT, 1); // BinaryClipboard
        case 181: return this.next(UDP_UPGRADE, 2); // UpgradeToUdp
        case 182: return this.next(RELAY_SUBSCRIBE, 1); // SubscribeUnixRelay
        case 183: return this.next(RELAY_NAME, 1); // UnixRelay
        case 184: return this.next(VIDEO_ENCODERS, 1); // VideoEncoders
        case 185: return this.nextMessage(); // KeepAlive
        case 188: return this.next(DIRECT_MOUSE, 9); // DirectMouseEvent
        case 252: return this.nextMessage(4); // SetMaxVideoResolution
      }
    }
    this.stop(`RFB message type ${type} (${this.dialect} dialect)`);
  }

  /**
   * A pointer event is input when it moves, changes a button or scrolls. The connection's first
   * one only sets where the pointer is: browsers send a move without a person whenever the page's
   * layout changes under a still mouse (Chromium's synthetic mousemove), and a person moving the
   * mouse sends many.
   */
  private pointer(): void {
    const b = this.buf;
    const kasm = this.dialect === 'kasmvnc';
    const mask = kasm ? b.readUInt16BE(0) : b[0]!;
    const x = kasm ? b.readUInt16BE(2) : b.readUInt16BE(1);
    const y = kasm ? b.readUInt16BE(4) : b.readUInt16BE(3);
    const scrolled = kasm && (b.readInt16BE(6) !== 0 || b.readInt16BE(8) !== 0);
    const moved = this.lastX !== -1 && (x !== this.lastX || y !== this.lastY);
    if (mask !== this.lastMask || moved || scrolled) this.input();
    this.lastMask = mask;
    this.lastX = x;
    this.lastY = y;
  }
}
