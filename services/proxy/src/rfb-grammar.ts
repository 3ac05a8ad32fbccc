/**
 * The browser's half of an RFB stream as a grammar: where each client message of a VNC desktop's
 * WebSocket begins and ends (RFC 6143 §7.5 plus KasmVNC's), per dialect, written once for both of
 * its readers: the input watch (rfb-input.ts, "is this message input?") and the view filter
 * (rfb-view-filter.ts, "may a viewer send it?"). The table of messages below is the one in
 * kasm-contract.md, "RFB messages from the browser".
 *
 * After the handshake (the 12-byte ProtocolVersion, the security type, 16 bytes of VNC
 * authentication if chosen, the 1-byte ClientInit) each message's type and the few bytes that
 * tell its length (or that a reader needs to say whether it is input) are read, and the rest is
 * skipped by count, never unmasked. The stream is followed across WebSocket frames, so a message
 * may be split at any byte or several may share one frame.
 *
 * What it cannot follow (no ProtocolVersion, RFB 3.3, another security type, a type the dialect
 * does not have, a QEMU message other than a key event, a ServerDisconnect whose length is not
 * documented) ends the reading: the reader is told why, once, and shown nothing more.
 */
import type { PayloadListener } from './ws-frames.ts';

/** Standard RFB (x11vnc, TigerVNC, noVNC against them) or KasmVNC's (11-byte pointer events, messages 178-188, 252). */
export type RfbDialect = 'standard' | 'kasmvnc';

/** What the grammar tells its reader. Positions are in the chunk given to `RfbClientGrammar.payload`. */
export interface RfbReader {
  /** The handshake ends: its ClientInit byte (the shared flag) is `chunk[at]`. */
  clientInit(at: number): void;
  /** A client message starts: its type byte is `chunk[at]`. `view`: a view-only connection may send it. */
  message(type: number, at: number, view: boolean): void;
  /**
   * A message that may be input has been read as far as it tells: `head` holds, unmasked, the
   * bytes after its type byte: KeyEvent 7 (down flag, padding, keysym), PointerEvent 5 (10 in
   * kasmvnc: u16 mask, x, y, s16 scroll x, y), ClientCutText 7, QEMU key event 11 (subtype 0,
   * u16 down flag, keysym, keycode), BinaryClipboard 1 (item count), UnixRelay 4 (data length,
   * after the name), DirectMouseEvent 9.
   */
  input(type: number, head: Buffer): void;
  /** The grammar cannot follow the stream any more; said once, nothing follows. */
  lost(why: string): void;
}

// States: what the collected bytes are.
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

/** How a message goes on after its type byte: `skip` bytes, then `need` bytes read in `state`. */
interface MessageRule {
  state: number;
  need: number;
  skip: number;
  /** A view-only connection may send it: it is not input and changes nothing for the desktop's owner. */
  view: boolean;
}

/** A message of `length` bytes (type byte included) whose bytes say nothing more. */
const fixed = (length: number, view: boolean): MessageRule => ({ state: TYPE, need: 1, skip: length - 1, view });
/** A message whose next `need` bytes are read in `state`. */
const head = (state: number, need: number, view: boolean): MessageRule => ({ state, need, skip: 0, view });

const STANDARD: Array<[number, MessageRule]> = [
  [0, fixed(20, true)], // SetPixelFormat
  [2, head(ENCODINGS, 3, true)], // SetEncodings: count at offset 2
  [3, fixed(10, true)], // FramebufferUpdateRequest
  [4, head(KEY, 7, false)], // KeyEvent: down flag, padding, keysym
  [5, head(POINTER, 5, false)], // PointerEvent: mask, x, y
  [6, head(CUT_TEXT, 7, false)], // ClientCutText: length at offset 4
  [150, fixed(10, true)], // EnableContinuousUpdates
  [248, head(FENCE, 8, true)], // ClientFence: payload length at offset 8
  [250, fixed(4, false)], // xvp: power actions
  [251, head(DESKTOP_SIZE, 7, false)], // SetDesktopSize (resizes the owner's screen): screens at offset 6
  [255, head(QEMU, 11, false)], // QEMU: subtype, down flag, keysym, keycode
];

const KASMVNC: Array<[number, MessageRule]> = [
  ...STANDARD,
  [5, head(POINTER, 10, false)], // PointerEvent: u16 mask, x, y, s16 scroll x, y
  [178, fixed(4, true)], // RequestStats
  [179, fixed(12, true)], // FrameStats
  [180, head(CLIPBOARD_COUNT, 1, false)], // BinaryClipboard
  [181, head(UDP_UPGRADE, 2, false)], // UpgradeToUdp: a viewer must not move off the WebSocket
  [182, head(RELAY_SUBSCRIBE, 1, false)], // SubscribeUnixRelay
  [183, head(RELAY_NAME, 1, false)], // UnixRelay: data into sockets inside the container
  [184, head(VIDEO_ENCODERS, 1, true)], // VideoEncoders
  [185, fixed(1, true)], // KeepAlive
  [188, head(DIRECT_MOUSE, 9, false)], // DirectMouseEvent
  [252, fixed(5, false)], // SetMaxVideoResolution
];

/** By type byte; a later entry replaces an earlier one (KasmVNC's pointer event). */
function byType(rules: Array<[number, MessageRule]>): Array<MessageRule | undefined> {
  const table = new Array<MessageRule | undefined>(256).fill(undefined);
  for (const [type, rule] of rules) table[type] = rule;
  return table;
}

const MESSAGES: Record<RfbDialect, Array<MessageRule | undefined>> = { standard: byType(STANDARD), kasmvnc: byType(KASMVNC) };

/**
 * Follows one browser-to-desktop RFB stream. As a `PayloadListener` it reads the binary and
 * continuation frames a `FrameCursor` shows it (the input watch); a reader that follows the frames
 * itself (the view filter) calls `payload` with the data frames' payloads.
 */
export class RfbClientGrammar implements PayloadListener {
  /** Stopped following the stream (the reader was told why). */
  stopped = false;

  private readonly rules: Array<MessageRule | undefined>;
  // `need` bytes are collected (unmasked) into `buf`, then `state` reads them; `skip` bytes are
  // passed over first.
  private readonly buf = Buffer.alloc(16);
  private got = 0;
  private need = 12;
  private skip = 0;
  private state = VERSION;
  private clipboardItems = 0;

  constructor(
    private readonly dialect: RfbDialect,
    private readonly reader: RfbReader,
  ) {
    this.rules = MESSAGES[dialect];
  }

  /** For a frame cursor: RFB is carried in binary frames and their continuations; text and control frames carry none. */
  wants(opcode: number): boolean {
    return opcode === 2 || opcode === 0;
  }

  /** For a frame cursor: a frame it cannot follow. */
  unreadable(why: string): void {
    this.stop(why);
  }

  /** RFB bytes `chunk[start .. start + length)`, masked from `mask[maskAt]` on (see `PayloadListener`). False once stopped. */
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
        this.step(j - 1);
        if (this.stopped) return false;
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

  private stop(why: string): void {
    if (this.stopped) return;
    this.stopped = true;
    this.reader.lost(why);
  }

  /** `need` bytes are in `buf`, the last of them at `chunk[at]`: read them and say what comes next. */
  private step(at: number): void {
    const b = this.buf;
    switch (this.state) {
      case VERSION: {
        // "RFB 003.008\n"; 3.3 lets the server pick the security type without a client byte.
        const text = b.toString('latin1', 0, 12);
        const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(text);
        if (m === null) return this.stop('no RFB ProtocolVersion at the start');
        // RFC 6143 §7.1.1: only 3.7 and 3.8 have the client choose the security type; 3.3 does not,
        // and any other number a server reads as 3.3. So nothing else is followed.
        if (m[1] !== '003' || (m[2] !== '007' && m[2] !== '008')) return this.stop(`RFB ${m[1]}.${m[2]} (only 3.7 and 3.8 are followed; a server reads other versions as 3.3, where it picks the security type)`);
        return this.next(SECURITY, 1);
      }
      case SECURITY:
        if (b[0] === 1) return this.next(CLIENT_INIT, 1); // None
        if (b[0] === 2) return this.next(CLIENT_INIT, 1, 16); // VNC authentication: a 16-byte response
        return this.stop(`security type ${b[0]}`);
      case CLIENT_INIT:
        this.reader.clientInit(at);
        return this.nextMessage();
      case TYPE:
        return this.message(b[0]!, at);
      case ENCODINGS:
        return this.nextMessage(4 * b.readUInt16BE(1));
      case KEY:
        this.reader.input(4, b);
        return this.nextMessage();
      case POINTER:
        this.reader.input(5, b);
        return this.nextMessage();
      case CUT_TEXT:
        this.reader.input(6, b);
        // A negative length is an extended clipboard message of that many bytes (RFC 6143 extension).
        return this.nextMessage(Math.abs(b.readInt32BE(3)));
      case FENCE:
        return this.nextMessage(b[7]!);
      case DESKTOP_SIZE:
        return this.nextMessage(16 * b[5]!);
      case QEMU:
        if (b[0] !== 0) return this.stop(`QEMU client message subtype ${b[0]}`);
        this.reader.input(255, b);
        return this.nextMessage();
      case CLIPBOARD_COUNT:
        this.reader.input(180, b);
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
        this.reader.input(183, b);
        return this.nextMessage(b.readUInt32BE(0));
      case VIDEO_ENCODERS:
        return this.nextMessage(4 * b[0]!);
      case DIRECT_MOUSE:
        this.reader.input(188, b);
        return this.nextMessage();
    }
  }

  /** A message of `type` starts at `chunk[at]`: what of it must be read. */
  private message(type: number, at: number): void {
    const rule = this.rules[type];
    if (rule === undefined) return this.stop(`RFB message type ${type} (${this.dialect} dialect)`);
    this.reader.message(type, at, rule.view);
    this.next(rule.state, rule.need, rule.skip);
  }
}
