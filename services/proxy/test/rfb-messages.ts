/**
 * A browser's RFB client messages as noVNC and Kasm's client write them (kasm-contract.md, "RFB
 * messages from the browser"), for the tests of what reads them: the input watch
 * (rfb-input.test.ts) and the view filter (rfb-view-filter.test.ts, view-only.test.ts).
 */
import { randomBytes } from 'node:crypto';
import type { RfbDialect } from '../src/rfb-grammar.ts';
import { wsFrame, type FrameOptions } from './ws-helpers.ts';

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}
export const cat = (...parts: Array<Buffer | number[]>): Buffer => Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));

/** ProtocolVersion 3.8, the security type (2: VNC authentication, with its 16-byte response), ClientInit. */
export const handshake = (security = 1, shared = 1): Buffer =>
  cat(Buffer.from('RFB 003.008\n', 'latin1'), [security], security === 2 ? randomBytes(16) : [], [shared]);
export const setEncodings = (n: number): Buffer => cat([2, 0], u16(n), ...Array.from({ length: n }, (_, i) => u32(i - 100)));
export const updateRequest = (): Buffer => cat([3, 1], u16(0), u16(0), u16(1024), u16(768));
export const key = (down: boolean, keysym: number): Buffer => cat([4, down ? 1 : 0, 0, 0], u32(keysym));
export const pointer = (dialect: RfbDialect, mask: number, x: number, y: number, scroll = 0): Buffer =>
  dialect === 'kasmvnc' ? cat([5], u16(mask), u16(x), u16(y), u16(scroll & 0xffff), u16(0)) : cat([5, mask], u16(x), u16(y));
export const cutText = (text: string): Buffer => cat([6, 0, 0, 0], u32(Buffer.byteLength(text)), Buffer.from(text));
/** An extended clipboard message: its length is given negated. */
export const extendedCut = (bytes: number): Buffer => cat([6, 0, 0, 0], u32(-bytes), randomBytes(bytes));
export const qemuKey = (down: boolean): Buffer => cat([255, 0], u16(down ? 1 : 0), u32(0x61), u32(30));
export const fence = (n: number): Buffer => cat([248, 0, 0, 0], u32(0), [n], randomBytes(n));
export const pixelFormat = (): Buffer => cat([0, 0, 0, 0], randomBytes(16));

export interface Message {
  bytes: Buffer;
  /** The input watch counts it. */
  input: boolean;
  /** A view-only connection passes it on. */
  view: boolean;
}

/** A session: everything a browser sends, input or not, each message type of the dialect at least once. */
export function session(dialect: RfbDialect): Message[] {
  const kasm = dialect === 'kasmvnc';
  // [bytes, input, view]
  const m: Array<[Buffer, boolean, boolean]> = [
    [pixelFormat(), false, true],
    [setEncodings(12), false, true],
    [updateRequest(), false, true],
    [pointer(dialect, 0, 10, 20), false, false], // the first only says where the pointer is (a browser sends one when the layout changes)
    [pointer(dialect, 0, 10, 20), false, false], // the same again: no movement
    [pointer(dialect, 0, 12, 20), true, false], // moved
    [pointer(dialect, 1, 12, 20), true, false], // button down
    [pointer(dialect, 0, 12, 20), true, false], // button up
    [key(false, 1), false, false], // Kasm's keep-alive: key-up of keysym 1
    [updateRequest(), false, true],
    [key(true, 0x61), true, false],
    [key(false, 0x61), false, false],
    [qemuKey(true), true, false],
    [qemuKey(false), false, false],
    [cutText('pasted text'), true, false],
    [extendedCut(40), true, false],
    [fence(5), false, true],
    [cat([150, 1], u16(0), u16(0), u16(640), u16(480)), false, true], // EnableContinuousUpdates
    [cat([251, 0], u16(800), u16(600), [1, 0], u32(1), u16(0), u16(0), u16(800), u16(600), u32(0)), false, false], // SetDesktopSize, one screen
    [cat([250, 0, 1, 2]), false, false], // xvp: reboot
    [updateRequest(), false, true],
  ];
  if (kasm) {
    m.push(
      [pointer(dialect, 0, 10, 20, 3), true, false], // scroll
      [cat([178, 0, 0, 0]), false, true], // RequestStats
      [cat([179], randomBytes(11)), false, true], // FrameStats
      [cat([185]), false, true], // KeepAlive (1.5)
      [cat([184, 2], u32(1), u32(2)), false, true], // VideoEncoders
      [cat([180, 2], [10], Buffer.from('text/plain'), u32(5), Buffer.from('hello'), [9], Buffer.from('image/png'), u32(3), randomBytes(3)), true, false], // BinaryClipboard, 2 items
      [cat([182, 4], Buffer.from('audi')), false, false], // SubscribeUnixRelay
      [cat([183, 4], Buffer.from('audi'), u32(6), randomBytes(6)), true, false], // UnixRelay
      [cat([188], randomBytes(9)), true, false], // DirectMouseEvent
      [cat([252], u16(1920), u16(1080)), false, false], // SetMaxVideoResolution
      [cat([181], u16(3), randomBytes(3)), false, false], // UpgradeToUdp
      [cat([185]), false, true],
    );
  }
  return m.map(([bytes, input, view]) => ({ bytes, input, view }));
}

/** A frame as a browser sends it: masked. */
export const browserFrame = (payload: Buffer, options: FrameOptions = {}): Buffer => wsFrame(payload, { masked: true, ...options });

/** An RFB stream in WebSocket frames: their bytes, and the control frames among them with the RFB offset each comes before. */
export interface Framed {
  bytes: Buffer;
  controls: Array<{ at: number; frame: Buffer }>;
}

/** Shapes a browser's RFB stream may take in WebSocket frames. */
export const framings: Record<string, (rfb: Buffer[]) => Framed> = {
  'one message per frame': (msgs) => ({ bytes: cat(...msgs.map((m) => browserFrame(m))), controls: [] }),
  'everything in one frame': (msgs) => ({ bytes: browserFrame(cat(...msgs)), controls: [] }),
  'three messages per frame': (msgs) => {
    const frames: Buffer[] = [];
    for (let i = 0; i < msgs.length; i += 3) frames.push(browserFrame(cat(...msgs.slice(i, i + 3))));
    return { bytes: cat(...frames), controls: [] };
  },
  'fragmented frames with pings between the fragments': (msgs) => {
    const all = cat(...msgs);
    const third = Math.floor(all.length / 3);
    const ping = browserFrame(Buffer.from('ping'), { opcode: 9 });
    const pong = browserFrame(Buffer.alloc(0), { opcode: 10 });
    return {
      bytes: cat(
        browserFrame(all.subarray(0, third), { fin: false }),
        ping,
        browserFrame(all.subarray(third, 2 * third), { opcode: 0, fin: false }),
        pong,
        browserFrame(all.subarray(2 * third), { opcode: 0 }),
      ),
      controls: [{ at: third, frame: ping }, { at: 2 * third, frame: pong }],
    };
  },
  'messages cut across frames at odd places, a ping inside one, a close at the end': (msgs) => {
    const all = cat(...msgs);
    const frames: Buffer[] = [];
    const controls: Framed['controls'] = [];
    for (let at = 0, size = 1; at < all.length; at += size, size = (size * 7) % 23 + 1) {
      frames.push(browserFrame(all.subarray(at, at + size)));
      if (frames.length === 20) {
        const ping = browserFrame(Buffer.from([1, 2, 3]), { opcode: 9 });
        frames.push(ping);
        controls.push({ at: at + size, frame: ping });
      }
    }
    const close = browserFrame(cat(u16(1000), Buffer.from('bye')), { opcode: 8 });
    frames.push(close);
    controls.push({ at: all.length, frame: close });
    return { bytes: cat(...frames), controls };
  },
};
