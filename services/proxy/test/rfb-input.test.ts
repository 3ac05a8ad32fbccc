/**
 * The input watch at the byte level, in both dialects: a browser's RFB stream as noVNC and
 * Kasm's client write it, wrapped in masked WebSocket frames in several shapes (one message per
 * frame, everything in one frame, fragmented frames with pings between the fragments), fed in two
 * pieces split at every offset. The count of input messages must come out the same every time;
 * keep-alives (Kasm's key-up of keysym 1, KeepAlive, update requests) never count.
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { RfbInputWatch, type RfbDialect } from '../src/rfb-input.ts';
import { wsFrame, type FrameOptions } from './ws-helpers.ts';

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}
const cat = (...parts: Array<Buffer | number[]>) => Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));

const handshake = (security = 1) => cat(Buffer.from('RFB 003.008\n', 'latin1'), [security], security === 2 ? randomBytes(16) : [], [1]);
const setEncodings = (n: number) => cat([2, 0], u16(n), ...Array.from({ length: n }, (_, i) => u32(i - 100)));
const updateRequest = () => cat([3, 1], u16(0), u16(0), u16(1024), u16(768));
const key = (down: boolean, keysym: number) => cat([4, down ? 1 : 0, 0, 0], u32(keysym));
const pointer = (dialect: RfbDialect, mask: number, x: number, y: number, scroll = 0) =>
  dialect === 'kasmvnc' ? cat([5], u16(mask), u16(x), u16(y), u16(scroll & 0xffff), u16(0)) : cat([5, mask], u16(x), u16(y));
const cutText = (text: string) => cat([6, 0, 0, 0], u32(Buffer.byteLength(text)), Buffer.from(text));
const extendedCut = (bytes: number) => cat([6, 0, 0, 0], u32(-bytes), randomBytes(bytes));
const qemuKey = (down: boolean) => cat([255, 0], u16(down ? 1 : 0), u32(0x61), u32(30));
const fence = (n: number) => cat([248, 0, 0, 0], u32(0), [n], randomBytes(n));
const pixelFormat = () => cat([0, 0, 0, 0], randomBytes(16));

interface Stream {
  messages: Buffer[];
  inputs: number;
}

/** A session: everything a browser sends that is not input, around `inputs` messages that are. */
function session(dialect: RfbDialect): Stream {
  const kasm = dialect === 'kasmvnc';
  const m: Array<[Buffer, boolean]> = [
    [pixelFormat(), false],
    [setEncodings(12), false],
    [updateRequest(), false],
    [pointer(dialect, 0, 10, 20), false], // the first only says where the pointer is (a browser sends one when the layout changes)
    [pointer(dialect, 0, 10, 20), false], // the same again: no movement
    [pointer(dialect, 0, 12, 20), true], // moved
    [pointer(dialect, 1, 12, 20), true], // button down
    [pointer(dialect, 0, 12, 20), true], // button up
    [key(false, 1), false], // Kasm's keep-alive: key-up of keysym 1
    [updateRequest(), false],
    [key(true, 0x61), true],
    [key(false, 0x61), false],
    [qemuKey(true), true],
    [qemuKey(false), false],
    [cutText('pasted text'), true],
    [extendedCut(40), true],
    [fence(5), false],
    [cat([150, 1], u16(0), u16(0), u16(640), u16(480)), false], // EnableContinuousUpdates
    [cat([251, 0], u16(800), u16(600), [1, 0], u32(1), u16(0), u16(0), u16(800), u16(600), u32(0)), false], // SetDesktopSize, one screen
  ];
  if (kasm) {
    m.push(
      [pointer(dialect, 0, 10, 20, 3), true], // scroll
      [cat([178, 0, 0, 0]), false], // RequestStats
      [cat([179], randomBytes(11)), false], // FrameStats
      [cat([185]), false], // KeepAlive (1.5)
      [cat([184, 2], u32(1), u32(2)), false], // VideoEncoders
      [cat([180, 2], [10], Buffer.from('text/plain'), u32(5), Buffer.from('hello'), [9], Buffer.from('image/png'), u32(3), randomBytes(3)), true], // BinaryClipboard, 2 items
      [cat([182, 4], Buffer.from('audi')), false], // SubscribeUnixRelay
      [cat([183, 4], Buffer.from('audi'), u32(6), randomBytes(6)), true], // UnixRelay
      [cat([188], randomBytes(9)), true], // DirectMouseEvent
      [cat([252], u16(1920), u16(1080)), false], // SetMaxVideoResolution
      [cat([181], u16(3), randomBytes(3)), false], // UpgradeToUdp
    );
  }
  return { messages: m.map(([b]) => b), inputs: m.filter(([, i]) => i).length };
}

/** Browser frames are masked. */
const frame = (payload: Buffer, options: FrameOptions = {}): Buffer => wsFrame(payload, { masked: true, ...options });

const shapes: Record<string, (rfb: Buffer[]) => Buffer> = {
  'one message per frame': (msgs) => cat(...msgs.map((m) => frame(m))),
  'everything in one frame': (msgs) => frame(cat(...msgs)),
  'fragmented frames with pings between the fragments': (msgs) => {
    const all = cat(...msgs);
    const third = Math.floor(all.length / 3);
    return cat(
      frame(all.subarray(0, third), { fin: false }),
      frame(Buffer.from('ping'), { opcode: 9 }),
      frame(all.subarray(third, 2 * third), { opcode: 0, fin: false }),
      frame(Buffer.alloc(0), { opcode: 10 }),
      frame(all.subarray(2 * third), { opcode: 0 }),
    );
  },
  'messages cut across frames at odd places': (msgs) => {
    const all = cat(...msgs);
    const out: Buffer[] = [];
    for (let at = 0, size = 1; at < all.length; at += size, size = (size * 7) % 23 + 1) out.push(frame(all.subarray(at, at + size)));
    return cat(...out);
  },
};

function watch(dialect: RfbDialect): { w: RfbInputWatch; inputs: () => number; why: string[] } {
  let inputs = 0;
  const why: string[] = [];
  const w = new RfbInputWatch(dialect, { onInput: () => inputs++, onUntrusted: (reason) => why.push(reason) });
  return { w, inputs: () => inputs, why };
}

for (const dialect of ['standard', 'kasmvnc'] as const) {
  t.test(`${dialect}: input counted the same however the stream is framed and cut`, async (t) => {
    for (const security of [1, 2]) {
      const s = session(dialect);
      for (const [shape, build] of Object.entries(shapes)) {
        const bytes = cat(frame(handshake(security)), build(s.messages));
        let wrong = 0;
        for (let cut = 0; cut <= bytes.length; cut++) {
          const { w, inputs, why } = watch(dialect);
          w.feed(bytes.subarray(0, cut));
          w.feed(bytes, cut, bytes.length - cut);
          if (inputs() !== s.inputs || why.length > 0) {
            if (wrong++ === 0) t.fail(`${shape}, security ${security}, cut at ${cut}: ${inputs()} inputs (want ${s.inputs})${why.length ? `, untrusted: ${why[0]}` : ''}`);
          }
        }
        t.equal(wrong, 0, `${shape}, security type ${security}: ${s.inputs} inputs at each of ${bytes.length + 1} cuts`);
      }
    }
  });

  t.test(`${dialect}: a tab left open (keep-alives, update requests, pings) is never input`, async (t) => {
    const { w, inputs, why } = watch(dialect);
    w.feed(frame(handshake()));
    w.feed(frame(setEncodings(4)));
    for (let i = 0; i < 200; i++) {
      w.feed(frame(key(false, 1)));
      w.feed(frame(updateRequest()));
      w.feed(frame(Buffer.from([i & 0xff]), { opcode: 9 }));
      if (dialect === 'kasmvnc') w.feed(frame(Buffer.from([185])));
    }
    t.equal(inputs(), 0);
    t.same(why, []);
  });
}

t.test('a byte at a time, and large messages in 16- and 64-bit length frames', async (t) => {
  const { w, inputs, why } = watch('kasmvnc');
  const big = cutText('x'.repeat(70_000));
  const bytes = cat(frame(handshake()), frame(big.subarray(0, 100), { fin: false }), frame(big.subarray(100, 300), { opcode: 0, fin: false }), frame(big.subarray(300), { opcode: 0 }), frame(key(true, 0x41)));
  for (let i = 0; i < bytes.length; i++) w.feed(bytes, i, 1);
  t.equal(inputs(), 2, 'the paste and the key');
  t.same(why, []);
});

t.test('what it cannot follow counts as input from then on, and is said once', async (t) => {
  const cases: Array<[string, RfbDialect, Buffer, RegExp]> = [
    ['an unknown message type', 'standard', cat(frame(handshake()), frame(Buffer.from([99, 1, 2, 3]))), /message type 99/],
    ['a KasmVNC message in the standard dialect', 'standard', cat(frame(handshake()), frame(Buffer.from([185]))), /message type 185 \(standard/],
    ['ServerDisconnect, whose length is not documented', 'kasmvnc', cat(frame(handshake()), frame(Buffer.from([186]))), /message type 186/],
    ['RFB 3.3', 'standard', frame(Buffer.from('RFB 003.003\n', 'latin1')), /RFB 003\.003/],
    ['not RFB at all', 'standard', frame(Buffer.from('GET / HTTP/1.1\r\n', 'latin1')), /no RFB ProtocolVersion/],
    ['another security type (VeNCrypt)', 'standard', frame(cat(Buffer.from('RFB 003.008\n', 'latin1'), [19])), /security type 19/],
    ['a compressed frame (permessage-deflate)', 'standard', cat(frame(handshake()), Buffer.from([0xc2, 0x80, 0, 0, 0, 0])), /RSV/],
    ['a QEMU message other than a key', 'standard', cat(frame(handshake()), frame(cat([255, 1], randomBytes(10)))), /QEMU client message subtype 1/],
  ];
  for (const [name, dialect, bytes, reason] of cases) {
    const { w, inputs, why } = watch(dialect);
    w.feed(bytes);
    t.equal(why.length, 1, `${name}: said once`);
    t.match(why[0], reason, `${name}: says why`);
    t.ok(w.untrusted, `${name}: untrusted`);
    const before = inputs();
    t.ok(before >= 1, `${name}: the chunk counted`);
    w.feed(frame(key(false, 1)));
    w.feed(frame(updateRequest()));
    t.equal(inputs(), before + 2, `${name}: every later chunk counts`);
    t.equal(why.length, 1, `${name}: and is not said again`);
  }
});

t.test('unmasked frames and text frames', async (t) => {
  const { w, inputs, why } = watch('standard');
  w.feed(frame(handshake(), { masked: false }));
  w.feed(frame(Buffer.from('not rfb, a text frame'), { opcode: 1 }));
  w.feed(frame(key(true, 0x62), { masked: false }));
  t.equal(inputs(), 1, 'the key; the text frame is not RFB');
  t.same(why, []);
});
