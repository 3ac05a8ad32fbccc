/**
 * Where WebSocket frames begin and end in a byte stream (RFC 6455 §5.2), followed from headers and
 * lengths alone: so the proxy can end a connection at a frame boundary with a close frame of its
 * own (a code and a reason the browser shows) instead of cutting the socket in the middle of a
 * desktop's frame (which the browser can only report as 1006).
 *
 * The one walk of frame headers in the proxy: a cursor given a `PayloadListener` also shows it the
 * payload bytes of the frames it wants, as they pass (the browser's RFB messages are read that
 * way: by the input watch of a VNC desktop, rfb-input.ts, and by the view filter of a viewer's
 * connection, rfb-view-filter.ts). Without one, payloads are never read.
 */

/**
 * Shown the payloads of a stream's frames by a `FrameCursor`. Bytes are shown as they arrived,
 * masked, with the mask: unmasking a copy of each payload would cost every byte of a large frame,
 * when a reader needs a few of them and skips the rest by count.
 */
export interface PayloadListener {
  /**
   * A frame with this opcode starts: whether its payload is to be shown (data frames, say, not
   * control frames). `head` holds its header (`headerLength(head)` bytes: FIN, RSV and opcode,
   * the mask bit and length, the masking key), `payloadLength` what it announces; the buffer is
   * the cursor's own, reused for the next header.
   */
  wants(opcode: number, head: Buffer, payloadLength: number): boolean;
  /**
   * Payload of a wanted frame, `chunk[start .. start + length)`, in order, split wherever the
   * chunks were: byte `chunk[start + k]` unmasked is `chunk[start + k] ^ mask[(maskAt + k) & 3]`
   * (the mask is four zeros for an unmasked frame). Returns false to be shown nothing more.
   */
  payload(chunk: Buffer, start: number, length: number, mask: Buffer, maskAt: number): boolean;
  /**
   * A frame whose payload cannot be read as it is: RSV bits set (a compressed extension), a
   * reserved opcode, a length past 2^53. Said once; nothing is shown after it.
   */
  unreadable(why: string): void;
}

export class FrameCursor {
  private readonly head = Buffer.alloc(14);
  private headGot = 0;
  private headNeed = 2;
  private payloadLeft = 0;
  // With a listener: the current frame's payload goes to it (`wanted`), unmasked by `mask` from `maskAt`.
  private listener: PayloadListener | null;
  private readonly mask: Buffer | null;
  private maskAt = 0;
  private wanted = false;

  constructor(listener?: PayloadListener) {
    this.listener = listener ?? null;
    // Only a listener needs it: the relay's cursors (one per WebSocket) stay as small as before.
    this.mask = listener === undefined ? null : Buffer.alloc(4);
  }

  /** Between two frames: nothing of a frame has been seen that has not ended. */
  atBoundary(): boolean {
    return this.headGot === 0 && this.payloadLeft === 0;
  }

  /** Follows `chunk[start .. start + length)`. */
  feed(chunk: Buffer, start: number, length: number): void {
    this.advance(chunk, start, length, false);
  }

  /**
   * Follows the chunk up to the first frame boundary in it and returns how many of its bytes come
   * before that boundary, or -1 when the chunk ends inside a frame (all of it followed).
   */
  untilBoundary(chunk: Buffer, start: number, length: number): number {
    if (this.atBoundary()) return 0;
    return this.advance(chunk, start, length, true);
  }

  private advance(chunk: Buffer, start: number, length: number, stopAtBoundary: boolean): number {
    let i = start;
    const end = start + length;
    while (i < end) {
      if (this.payloadLeft > 0) {
        const take = Math.min(this.payloadLeft, end - i);
        if (this.wanted) this.show(chunk, i, take);
        this.payloadLeft -= take;
        i += take;
      } else {
        this.head[this.headGot++] = chunk[i++]!;
        if (this.headGot === 2) this.headNeed = headerLength(this.head);
        if (this.headGot < this.headNeed) continue;
        this.payloadLeft = payloadLength(this.head);
        this.headGot = 0;
        if (this.listener !== null) this.frameStarts();
      }
      if (stopAtBoundary && this.payloadLeft === 0 && this.headGot === 0) return i - start;
    }
    return stopAtBoundary ? -1 : length;
  }

  /** A complete header is in `head` and there is a listener: is the frame's payload for it? */
  private frameStarts(): void {
    const b0 = this.head[0]!;
    const listener = this.listener!;
    this.wanted = false;
    const opcode = b0 & 0x0f;
    const why =
      b0 & 0x70 ? 'a frame with RSV bits set (a compressed WebSocket extension)'
      : opcode >= 3 && opcode <= 7 ? `a frame with reserved opcode ${opcode}`
      : (this.head[1]! & 0x7f) === 127 && this.head.readUInt32BE(2) > 0x1fffff ? 'a frame longer than 2^53 bytes'
      : null;
    if (why !== null) {
      this.listener = null;
      listener.unreadable(why);
      return;
    }
    if (!listener.wants(opcode, this.head, this.payloadLeft)) return;
    this.wanted = true;
    this.maskAt = 0;
    // The masking key is a header's last four bytes. Set byte by byte: a small frame's header
    // costs less that way than through Buffer's copy and fill.
    const mask = this.mask!;
    const masked = (this.head[1]! & 0x80) !== 0;
    const at = this.headNeed - 4;
    mask[0] = masked ? this.head[at]! : 0;
    mask[1] = masked ? this.head[at + 1]! : 0;
    mask[2] = masked ? this.head[at + 2]! : 0;
    mask[3] = masked ? this.head[at + 3]! : 0;
  }

  /** Payload bytes of a wanted frame, to the listener. */
  private show(chunk: Buffer, start: number, length: number): void {
    if (this.listener!.payload(chunk, start, length, this.mask!, this.maskAt)) this.maskAt = (this.maskAt + length) & 3;
    else {
      this.listener = null;
      this.wanted = false;
    }
  }
}

/** A frame header's length in bytes, from its first two (RFC 6455 §5.2). */
export function headerLength(head: Buffer): number {
  const len7 = head[1]! & 0x7f;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (head[1]! & 0x80 ? 4 : 0);
}

/** The payload length a complete frame header announces. */
export function payloadLength(head: Buffer): number {
  const len7 = head[1]! & 0x7f;
  if (len7 < 126) return len7;
  if (len7 === 126) return head.readUInt16BE(2);
  return head.readUInt32BE(2) * 2 ** 32 + head.readUInt32BE(6);
}

/**
 * A close frame as a server sends it (unmasked, RFC 6455 §5.5.1): the code, then the reason in
 * UTF-8, cut to fit the 125 bytes a control frame may carry.
 */
export function closeFrame(code: number, reason: string): Buffer {
  let text = Buffer.from(reason, 'utf8');
  if (text.length > 123) {
    // Cut at a character boundary: drop continuation bytes (10xxxxxx) left at the end.
    let cut = 123;
    while (cut > 0 && (text[cut]! & 0xc0) === 0x80) cut--;
    text = text.subarray(0, cut);
  }
  const frame = Buffer.alloc(4 + text.length);
  frame[0] = 0x88; // FIN, close
  frame[1] = 2 + text.length;
  frame.writeUInt16BE(code, 2);
  text.copy(frame, 4);
  return frame;
}
