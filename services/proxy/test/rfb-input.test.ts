/**
 * The input watch at the byte level, in both dialects: a browser's RFB stream as noVNC and
 * Kasm's client write it (rfb-messages.ts), wrapped in masked WebSocket frames in several shapes
 * (one message per frame, everything in one frame, fragmented frames with pings between the
 * fragments, messages cut across frames, a close at the end: rfb-messages.ts `framings`), fed in two
 * pieces split at every offset. The count of input messages must come out the same every time;
 * keep-alives (Kasm's key-up of keysym 1, KeepAlive, update requests) never count.
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { RfbInputWatch, type RfbDialect } from '../src/rfb-input.ts';
import { browserFrame, cat, cutText, framings, handshake, key, session, setEncodings, updateRequest } from './rfb-messages.ts';

interface Stream {
  messages: Buffer[];
  inputs: number;
}

/** A session: everything a browser sends that is not input, around `inputs` messages that are. */
function inputSession(dialect: RfbDialect): Stream {
  const m = session(dialect);
  return { messages: m.map((x) => x.bytes), inputs: m.filter((x) => x.input).length };
}

const frame = browserFrame;

function watch(dialect: RfbDialect): { w: RfbInputWatch; inputs: () => number; why: string[] } {
  let inputs = 0;
  const why: string[] = [];
  const w = new RfbInputWatch(dialect, { onInput: () => inputs++, onUntrusted: (reason) => why.push(reason) });
  return { w, inputs: () => inputs, why };
}

for (const dialect of ['standard', 'kasmvnc'] as const) {
  t.test(`${dialect}: input counted the same however the stream is framed and cut`, async (t) => {
    for (const security of [1, 2]) {
      const s = inputSession(dialect);
      for (const [shape, build] of Object.entries(framings)) {
        const bytes = cat(frame(handshake(security)), build(s.messages).bytes);
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
