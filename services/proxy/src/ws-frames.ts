/**
 * Where WebSocket frames begin and end in a byte stream (RFC 6455 §5.2), followed from headers and
 * lengths alone, never from payloads: so the proxy can end a connection at a frame boundary with
 * a close frame of its own (a code and a reason the browser shows) instead of cutting the socket
 * in the middle of a desktop's frame (which the browser can only report as 1006).
 */

export class FrameCursor {
  private readonly head = Buffer.alloc(14);
  private headGot = 0;
  private headNeed = 2;
  private payloadLeft = 0;

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
        this.payloadLeft -= take;
        i += take;
      } else {
        this.head[this.headGot++] = chunk[i++]!;
        if (this.headGot === 2) this.headNeed = headerLength(this.head);
        if (this.headGot < this.headNeed) continue;
        this.payloadLeft = payloadLength(this.head);
        this.headGot = 0;
      }
      if (stopAtBoundary && this.payloadLeft === 0 && this.headGot === 0) return i - start;
    }
    return stopAtBoundary ? -1 : length;
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
