/**
 * The view filter at the byte level, in both dialects: a browser's whole RFB stream (handshake,
 * encodings, update requests, and every message a viewer may not send interleaved) in masked
 * WebSocket frames of several shapes (rfb-messages.ts `framings`: fragmented messages, several
 * messages per frame, messages across frames, pings and a close among them), fed split at every
 * byte boundary, at random ones and a byte at a time. What it writes, read back, must be exactly
 * the handshake (shared flag forced on) and the messages a viewer may send, in order, in binary
 * FIN frames masked with keys that vary, with the control frames as they came at their place; and
 * each thing it cannot follow must fail it, once, with nothing written after.
 */
import t from 'tap';
import type { RfbDialect } from '../src/rfb-grammar.ts';
import { RfbViewFilter } from '../src/rfb-view-filter.ts';
import { browserFrame, cat, extendedCut, framings, handshake, key, qemuKey, session, setEncodings, u16, updateRequest, type Framed } from './rfb-messages.ts';
import { readFrames, wsFrame } from './ws-helpers.ts';

const dialects: RfbDialect[] = ['standard', 'kasmvnc'];

/** What a filter wrote, read back. */
interface Written {
  /** The payloads of its data frames, unmasked, in order. */
  data: Buffer;
  /** Its control frames as written, with how many data bytes came before each. */
  controls: Array<{ at: number; frame: Buffer }>;
  /** Each data frame's masking key, in hex. */
  keys: string[];
  /** What is wrong with the frames: not binary, FIN and masked; a frame cut short. */
  wrong: string[];
}

function readBack(written: Buffer[]): Written {
  const all = Buffer.concat(written);
  const { frames, used } = readFrames(all);
  const back: Written = { data: Buffer.alloc(0), controls: [], keys: [], wrong: [] };
  if (used !== all.length) back.wrong.push(`${all.length - used} bytes after the last whole frame`);
  const data: Buffer[] = [];
  let at = 0;
  for (const f of frames) {
    if (f.opcode >= 8) {
      back.controls.push({ at, frame: f.raw });
      continue;
    }
    if (!f.fin || f.opcode !== 2 || f.key === null || f.rsv !== 0) back.wrong.push(`a data frame with fin ${f.fin}, opcode ${f.opcode}, rsv ${f.rsv}, masked ${f.key !== null}`);
    if (f.payload.length === 0) back.wrong.push('an empty data frame');
    if (f.key !== null) back.keys.push(f.key.toString('hex'));
    data.push(f.payload);
    at += f.payload.length;
  }
  back.data = Buffer.concat(data);
  return back;
}

/** Feeds `bytes` in pieces ending at `cuts`, then the rest; returns what it wrote, each feed's output apart. */
function feedCut(dialect: RfbDialect, bytes: Buffer, cuts: number[]): { filter: RfbViewFilter; written: Buffer[] } {
  const filter = new RfbViewFilter(dialect);
  const written: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    const out = filter.feed(bytes.subarray(from, cut));
    if (out !== null) written.push(out);
    from = cut;
  }
  return { filter, written };
}

/** A browser's stream for `dialect`: its RFB messages (the handshake first), and what a viewer's connection must carry of them. */
function viewerStream(dialect: RfbDialect, security: number): { rfb: Buffer[]; kept: Buffer; keptBefore: (at: number) => number } {
  const hs = handshake(security, 0); // asks for exclusive access
  const messages = session(dialect);
  const rfb = [hs, ...messages.map((m) => m.bytes)];
  const sharedHs = Buffer.from(hs);
  sharedHs[sharedHs.length - 1] = 1;
  const kept = cat(sharedHs, ...messages.filter((m) => m.view).map((m) => m.bytes));
  // Kept bytes before RFB offset `at` (a control frame there comes after them).
  const spans: Array<[number, number, boolean]> = [];
  let offset = 0;
  for (const [i, b] of rfb.entries()) {
    spans.push([offset, b.length, i === 0 || messages[i - 1]!.view]);
    offset += b.length;
  }
  const keptBefore = (at: number): number => spans.reduce((n, [start, length, view]) => n + (view ? Math.max(0, Math.min(length, at - start)) : 0), 0);
  return { rfb, kept, keptBefore };
}

/** Checks what was written against the kept stream and the control frames' places; returns what differs. */
function differences(back: Written, kept: Buffer, framed: Framed, keptBefore: (at: number) => number): string[] {
  const wrong = [...back.wrong];
  if (!back.data.equals(kept)) wrong.push(`data: ${back.data.length} bytes, want the ${kept.length} kept`);
  const want = framed.controls.map((c) => ({ at: keptBefore(c.at), frame: c.frame.toString('hex') }));
  const got = back.controls.map((c) => ({ at: c.at, frame: c.frame.toString('hex') }));
  if (JSON.stringify(got) !== JSON.stringify(want)) wrong.push(`control frames ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  return wrong;
}

for (const dialect of dialects) {
  t.test(`${dialect}: only what a viewer may send passes, however the stream is framed and cut`, async (t) => {
    for (const security of [1, 2]) {
      const { rfb, kept, keptBefore } = viewerStream(dialect, security);
      for (const [shape, build] of Object.entries(framings)) {
        const framed = build(rfb);
        let wrong = 0;
        for (let cut = 0; cut <= framed.bytes.length; cut++) {
          const { filter, written } = feedCut(dialect, framed.bytes, [cut]);
          const diff = differences(readBack(written), kept, framed, keptBefore);
          if (filter.failed !== null) diff.push(`failed: ${filter.failed}`);
          if (diff.length > 0 && wrong++ === 0) t.fail(`${shape}, security ${security}, cut at ${cut}: ${diff.join('; ')}`);
        }
        t.equal(wrong, 0, `${shape}, security type ${security}: at each of ${framed.bytes.length + 1} cuts`);

        let randomWrong = 0;
        for (let run = 0; run < 100; run++) {
          const cuts: number[] = [];
          for (let at = 1 + Math.floor(Math.random() * 40); at < framed.bytes.length; at += 1 + Math.floor(Math.random() * 40)) cuts.push(at);
          const { filter, written } = feedCut(dialect, framed.bytes, cuts);
          const diff = differences(readBack(written), kept, framed, keptBefore);
          if ((diff.length > 0 || filter.failed !== null) && randomWrong++ === 0) t.fail(`${shape}, cuts ${cuts.join(',')}: ${diff.join('; ')} ${filter.failed ?? ''}`);
        }
        t.equal(randomWrong, 0, `${shape}, security type ${security}: 100 runs cut at random places`);
      }
    }
  });

  t.test(`${dialect}: a byte at a time: every byte kept goes out at once, in frames masked with keys that vary`, async (t) => {
    const { rfb, kept, keptBefore } = viewerStream(dialect, 1);
    const framed = framings['everything in one frame']!(rfb);
    const headerLength = framed.bytes.length - rfb.reduce((n, b) => n + b.length, 0);
    const filter = new RfbViewFilter(dialect);
    const written: Buffer[] = [];
    let late = 0;
    let sent = 0;
    for (let i = 0; i < framed.bytes.length; i++) {
      const out = filter.feed(framed.bytes.subarray(i, i + 1));
      if (out !== null) written.push(out);
      sent = readBack(written).data.length;
      // Nothing held back: all that is kept of what was fed so far has gone out.
      if (sent !== keptBefore(Math.max(0, i + 1 - headerLength))) late++;
    }
    t.equal(late, 0, 'after each byte fed, everything kept of it so far was written');
    const back = readBack(written);
    t.same(back.wrong, []);
    t.ok(back.data.equals(kept), 'the kept stream');
    t.equal(back.data[handshake().length - 1], 1, 'ClientInit: the shared flag forced on');
    t.ok(back.keys.length > 100, `${back.keys.length} frames`);
    t.ok(new Set(back.keys).size >= back.keys.length - 1, 'each with a key of its own');
    t.notOk(back.keys.includes('00000000'), 'never the zero key');
  });
}

t.test('large messages: one dropped across frames, one kept, written in frames with 16- and 64-bit lengths', async (t) => {
  const encodings = setEncodings(20_000); // 80,004 bytes a viewer may send
  const paste = extendedCut(70_000); // dropped, across three frames
  const rfb = cat(handshake(), encodings, paste, key(true, 0x41), updateRequest());
  const want = cat(handshake(), encodings, updateRequest());
  const bytes = cat(
    browserFrame(rfb.subarray(0, 90_000), { fin: false }),
    browserFrame(rfb.subarray(90_000, 100_000), { opcode: 0, fin: false }),
    browserFrame(rfb.subarray(100_000), { opcode: 0 }),
  );
  for (const [how, cuts] of [['in one chunk', []], ['in 1000-byte chunks', Array.from({ length: Math.floor(bytes.length / 1000) }, (_, i) => (i + 1) * 1000)]] as const) {
    const { filter, written } = feedCut('standard', bytes, [...cuts]);
    const back = readBack(written);
    t.equal(filter.failed, null, `${how}: followed`);
    t.same(back.wrong, [], `${how}: binary FIN masked frames`);
    t.ok(back.data.equals(want), `${how}: the handshake, the encodings and the update request; not the paste or the key`);
  }
  const { written } = feedCut('standard', bytes, []);
  const lengths = readFrames(Buffer.concat(written)).frames.map((f) => f.raw[1]! & 0x7f);
  t.same(lengths, [127], 'one frame for one chunk, its length in 64 bits');
  const { written: small } = feedCut('standard', bytes, [10_000]);
  t.same(readFrames(Buffer.concat(small)).frames.map((f) => f.raw[1]! & 0x7f), [126, 127], '16 bits, then 64');
});

t.test('what it cannot follow fails it: said once, and nothing written from that chunk on', async (t) => {
  const start = cat(browserFrame(handshake()), browserFrame(updateRequest()));
  const frame = (bytes: number[] | Buffer, options = {}) => browserFrame(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes), options);
  const cases: Array<[string, RfbDialect, Buffer, RegExp]> = [
    ['an unknown message type', 'standard', frame([99, 1, 2, 3]), /message type 99 \(standard/],
    ['a KasmVNC message in the standard dialect', 'standard', frame([185]), /message type 185 \(standard/],
    ['ServerDisconnect, whose length is not documented', 'kasmvnc', frame([186]), /message type 186 \(kasmvnc/],
    ['a QEMU message other than a key', 'kasmvnc', frame(cat([255, 1], qemuKey(true).subarray(2))), /QEMU client message subtype 1/],
    ['a text frame', 'standard', frame(Buffer.from('text'), { opcode: 1 }), /text frame/],
    ['an unmasked frame', 'standard', wsFrame(updateRequest()), /unmasked/],
    ['RSV bits (a compressed frame)', 'standard', Buffer.from([0xc2, 0x80, 0, 0, 0, 0]), /RSV/],
    ['a reserved data opcode', 'standard', Buffer.from([0x83, 0x80, 0, 0, 0, 0]), /reserved opcode 3/],
    ['a reserved control opcode', 'standard', Buffer.from([0x8b, 0x80, 0, 0, 0, 0]), /reserved opcode 11/],
    ['a length past 2^53', 'standard', Buffer.from([0x82, 0xff, 0, 0x20, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]), /2\^53/],
    ['a ping over 125 bytes', 'standard', frame(Buffer.alloc(126), { opcode: 9 }), /longer than 125/],
    ['a close over 125 bytes', 'standard', frame(cat(u16(1000), Buffer.alloc(124)), { opcode: 8 }), /longer than 125/],
    ['a fragmented ping', 'standard', frame([1], { opcode: 9, fin: false }), /fragmented control frame/],
    ['a continuation with no message', 'standard', frame(updateRequest(), { opcode: 0 }), /continuation frame with no message/],
    ['a message inside a fragmented one', 'standard', cat(frame(updateRequest(), { fin: false }), frame(updateRequest())), /before the end of a fragmented one/],
  ];
  for (const [name, dialect, bad, reason] of cases) {
    const filter = new RfbViewFilter(dialect);
    const before = filter.feed(start);
    t.ok(before !== null && readBack([before]).data.equals(cat(handshake(), updateRequest())), `${name}: what came before passed`);
    t.equal(filter.feed(cat(bad, browserFrame(updateRequest()))), null, `${name}: nothing of the chunk is written`);
    t.match(filter.failed, reason, `${name}: says why`);
    const why = filter.failed;
    t.equal(filter.feed(browserFrame(updateRequest())), null, `${name}: nor of any later one`);
    t.equal(filter.failed, why, `${name}: said once`);
  }

  const handshakes: Array<[string, Buffer, RegExp]> = [
    ['RFB 3.3', Buffer.from('RFB 003.003\n', 'latin1'), /RFB 003\.003/],
    ['RFB 4.0 (a server reads it as 3.3)', Buffer.from('RFB 004.000\n', 'latin1'), /RFB 004\.000/],
    ['RFB 3.889 (Apple; a server reads it as 3.3)', Buffer.from('RFB 003.889\n', 'latin1'), /RFB 003\.889/],
    ['not RFB at all', Buffer.from('GET / HTTP/1.1\r\n', 'latin1'), /no RFB ProtocolVersion/],
    ['security type 19 (VeNCrypt)', cat(Buffer.from('RFB 003.008\n', 'latin1'), [19]), /security type 19/],
  ];
  for (const [name, rfb, reason] of handshakes) {
    const filter = new RfbViewFilter('standard');
    t.equal(filter.feed(browserFrame(rfb)), null, `${name}: nothing written`);
    t.match(filter.failed, reason, `${name}: says why`);
  }
});

t.test('a control frame split across chunks is written once whole, after the data before it', async (t) => {
  const ping = browserFrame(Buffer.from('are you there?'), { opcode: 9 });
  const bytes = cat(browserFrame(handshake()), browserFrame(updateRequest()), ping, browserFrame(updateRequest()));
  const pingAt = bytes.indexOf(ping);
  const filter = new RfbViewFilter('kasmvnc');
  const first = filter.feed(bytes.subarray(0, pingAt + 5));
  const firstBack = readBack([first!]);
  t.ok(firstBack.data.equals(cat(handshake(), updateRequest())), 'the data before the ping went out at once');
  t.same(firstBack.controls, [], 'half a ping is held');
  const rest = readBack([filter.feed(bytes.subarray(pingAt + 5))!]);
  t.same(rest.controls.map((c) => c.frame.toString('hex')), [ping.toString('hex')], 'then the ping, as it came');
  t.equal(rest.controls[0]!.at, 0, 'before the data after it');
  t.ok(rest.data.equals(updateRequest()));
});
