/**
 * Input, seen in the browser-to-desktop half of a VNC WebSocket as it passes, without changing a
 * byte: the idle clock of a desktop runs on key presses, pointer movement and pastes, not on a
 * background tab's keep-alives and update requests (kasm-contract.md, "RFB messages from the
 * browser").
 *
 * Two layers follow the stream. WebSocket frames (RFC 6455 §5.2) are followed by the proxy's one
 * frame walker, `FrameCursor` (ws-frames.ts), which shows the payloads of binary and continuation
 * frames, masked, to the RFB client grammar (rfb-grammar.ts, the one the view filter uses too);
 * that reads each message's type and the few bytes that tell its length or whether it is input,
 * and skips the rest by count. This watch is its reader: it is shown the heads of the messages
 * that may be input and says which are.
 *
 * Input: KeyEvent and QEMU extended key events with the down flag (a key-up is not: Kasm's client
 * sends a key-up of keysym 1 every 5 s as a keep-alive), a PointerEvent that moves (after the
 * connection's first, which only says where the pointer is), presses or scrolls, ClientCutText,
 * KasmVNC's BinaryClipboard, UnixRelay and DirectMouseEvent. Not input: pixel formats, encodings,
 * update requests, continuous updates, fences, stats, KeepAlive.
 *
 * Anything the grammar cannot follow (an unknown message type, RFB 3.3, another security type, a
 * compressed frame, a ServerDisconnect whose length is not documented) makes it stop reading:
 * from then on every chunk counts as input (a person is never taken for idle by mistake), and
 * `onUntrusted` is told why, once.
 */
import { RfbClientGrammar, type RfbDialect, type RfbReader } from './rfb-grammar.ts';
import { FrameCursor } from './ws-frames.ts';

export type { RfbDialect } from './rfb-grammar.ts';

export interface InputWatchEvents {
  /** A message that is input passed (or, once untrusted, any chunk). */
  onInput(): void;
  /** The watch stopped following the stream; `why` says what it met. Called once. */
  onUntrusted(why: string): void;
}

export class RfbInputWatch implements RfbReader {
  /** Stopped following the stream: every chunk is input. */
  untrusted = false;

  // WebSocket frame layer, showing the payloads of data frames to the RFB layer.
  private readonly frames: FrameCursor;
  private readonly kasm: boolean;
  private lastMask = 0;
  private lastX = -1;
  private lastY = -1;

  constructor(
    dialect: RfbDialect,
    private readonly events: InputWatchEvents,
  ) {
    this.kasm = dialect === 'kasmvnc';
    this.frames = new FrameCursor(new RfbClientGrammar(dialect, this));
  }

  /** The next bytes the browser sent, `chunk[start .. start + length)`, in order. */
  feed(chunk: Buffer, start = 0, length = chunk.length - start): void {
    if (this.untrusted) {
      this.events.onInput();
      return;
    }
    this.frames.feed(chunk, start, length);
  }

  /** For the grammar: where the handshake ends and messages start does not matter here. */
  clientInit(): void {}

  message(): void {}

  /** For the grammar: a message that may be input, read as far as it tells. */
  input(type: number, head: Buffer): void {
    switch (type) {
      case 4: // KeyEvent: a key-up is not input
        if (head[0] !== 0) this.events.onInput();
        return;
      case 5:
        return this.pointer(head);
      case 255: // QEMU extended key event: the down flag
        if (head.readUInt16BE(1) !== 0) this.events.onInput();
        return;
      default: // pastes, relayed data, relative mouse
        this.events.onInput();
    }
  }

  /** For the grammar: from now on every chunk is input. */
  lost(why: string): void {
    this.untrusted = true;
    this.events.onUntrusted(why);
    this.events.onInput();
  }

  /**
   * A pointer event is input when it moves, changes a button or scrolls. The connection's first
   * one only sets where the pointer is: browsers send a move without a person whenever the page's
   * layout changes under a still mouse (Chromium's synthetic mousemove), and a person moving the
   * mouse sends many.
   */
  private pointer(b: Buffer): void {
    const kasm = this.kasm;
    const mask = kasm ? b.readUInt16BE(0) : b[0]!;
    const x = kasm ? b.readUInt16BE(2) : b.readUInt16BE(1);
    const y = kasm ? b.readUInt16BE(4) : b.readUInt16BE(3);
    const scrolled = kasm && (b.readInt16BE(6) !== 0 || b.readInt16BE(8) !== 0);
    const moved = this.lastX !== -1 && (x !== this.lastX || y !== this.lastY);
    if (mask !== this.lastMask || moved || scrolled) this.events.onInput();
    this.lastMask = mask;
    this.lastX = x;
    this.lastY = y;
  }
}
