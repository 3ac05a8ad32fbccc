/**
 * Ending a WebSocket at a frame boundary with a close frame of the proxy's own (ws-frames.ts,
 * relay.ts): the frame cursor across every split of a stream (and, with a payload listener, the
 * payloads it shows, unmasked, and the frames it cannot read), the close frame's reason kept
 * within 125 bytes at a character boundary, and on real sockets: a route withdrawn while the
 * desktop is half-way through a 1 MiB frame; the browser gets that frame whole, then 1001 and
 * the reason, and no byte after it.
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import WebSocket from 'ws';
import { closeFrame, FrameCursor, type PayloadListener } from '../src/ws-frames.ts';
import { makeRoute, startStack } from './helpers.ts';
import { startHalfFrameDesktop, wsFrame } from './ws-helpers.ts';

const frame = (payload: Buffer, opcode = 2): Buffer => wsFrame(payload, { opcode });

t.test('the frame cursor finds the boundaries however the stream is cut', async (t) => {
  const frames = [frame(Buffer.alloc(0)), frame(randomBytes(5)), frame(randomBytes(300)), frame(randomBytes(70_000)), frame(Buffer.from('ping'), 9)];
  const stream = Buffer.concat(frames);
  const boundaries = new Set<number>();
  frames.reduce((at, f) => (boundaries.add(at + f.length), at + f.length), 0);
  let wrong = 0;
  for (let cut = 0; cut <= stream.length; cut += cut < 400 ? 1 : 997) {
    const c = new FrameCursor();
    c.feed(stream, 0, cut);
    const atBoundary = cut === 0 || boundaries.has(cut);
    if (c.atBoundary() !== atBoundary) wrong++;
    // From here, where is the next boundary?
    const n = c.untilBoundary(stream, cut, stream.length - cut);
    const next = atBoundary ? cut : Math.min(...[...boundaries].filter((b) => b > cut));
    if (n !== next - cut) wrong++;
  }
  t.equal(wrong, 0, 'boundaries and the distance to the next one, at every cut');
  const c = new FrameCursor();
  const big = frame(randomBytes(70_000));
  t.equal(c.untilBoundary(big, 0, 1000), 0, 'between frames: the boundary is here');
  c.feed(big, 0, 1000);
  t.equal(c.untilBoundary(big, 1000, 1000), -1, 'inside a frame: none in this chunk');
  t.equal(c.untilBoundary(big, 2000, big.length - 2000), big.length - 2000, 'then at its end');
});

/** A listener that keeps the unmasked payload bytes of binary and continuation frames. */
function keeper(stopAfter = Infinity): PayloadListener & { bytes: number[]; why: string[]; calls: number } {
  return {
    bytes: [],
    why: [],
    calls: 0,
    wants: (opcode) => opcode === 2 || opcode === 0,
    payload(chunk, start, length, mask, maskAt) {
      this.calls++;
      for (let k = 0; k < length; k++) this.bytes.push(chunk[start + k]! ^ mask[(maskAt + k) & 3]!);
      return this.calls < stopAfter;
    },
    unreadable(why) {
      this.why.push(why);
    },
  };
}

t.test('with a listener: the payloads of the frames it wants, unmasked, however the stream is cut; boundaries the same', async (t) => {
  const parts = [randomBytes(5), randomBytes(300), randomBytes(70_000), randomBytes(3)];
  const frames = [
    wsFrame(parts[0]!, { masked: true, fin: false }),
    wsFrame(Buffer.from('ping'), { opcode: 9, masked: true }),
    wsFrame(parts[1]!, { opcode: 0, masked: true }),
    wsFrame(Buffer.from('text'), { opcode: 1, masked: true }),
    wsFrame(parts[2]!, { masked: true }),
    wsFrame(Buffer.alloc(0), { masked: true }),
    wsFrame(parts[3]!, { masked: false }),
  ];
  const stream = Buffer.concat(frames);
  const want = Buffer.concat(parts);
  const boundaries = new Set<number>();
  frames.reduce((at, f) => (boundaries.add(at + f.length), at + f.length), 0);
  let wrong = 0;
  for (let cut = 0; cut <= stream.length; cut += cut < 500 ? 1 : 991) {
    const k = keeper();
    const c = new FrameCursor(k);
    c.feed(stream, 0, cut);
    if (c.atBoundary() !== (cut === 0 || boundaries.has(cut))) wrong++;
    c.feed(stream, cut, stream.length - cut);
    if (!Buffer.from(k.bytes).equals(want) || k.why.length > 0 || !c.atBoundary()) wrong++;
  }
  t.equal(wrong, 0, 'the wanted payloads byte for byte, no others, and the same boundaries, at every cut');
  const k = keeper();
  const c = new FrameCursor(k);
  for (let i = 0; i < stream.length; i++) c.feed(stream, i, 1);
  t.ok(Buffer.from(k.bytes).equals(want), 'a byte at a time');

  const once = keeper(1);
  const stopped = new FrameCursor(once);
  stopped.feed(stream, 0, stream.length);
  t.equal(once.calls, 1, 'a listener that returns false is shown nothing more');
  t.ok(stopped.atBoundary(), 'and the cursor still follows the frames');
});

t.test('with a listener: frames it cannot read are said once, and nothing is shown after', async (t) => {
  const long = Buffer.from([0x82, 0x7f, 0, 0x20, 0, 0, 0, 0, 0, 0]); // 2^53 bytes announced
  const cases: Array<[string, Buffer, RegExp]> = [
    ['RSV1 (permessage-deflate)', Buffer.from([0xc2, 0x80, 0, 0, 0, 0]), /RSV/],
    ['a reserved opcode', Buffer.from([0x83, 0x00]), /reserved opcode 3/],
    ['a length past 2^53', long, /2\^53/],
  ];
  for (const [name, bad, reason] of cases) {
    const k = keeper();
    const c = new FrameCursor(k);
    c.feed(Buffer.concat([wsFrame(Buffer.from([1, 2])), bad, wsFrame(Buffer.from([3]))]), 0, 2 + 2 + bad.length + 3);
    t.same(k.why.length, 1, `${name}: said once`);
    t.match(k.why[0], reason, `${name}: says why`);
    t.same(k.bytes, [1, 2], `${name}: only what came before it was shown`);
  }
});

t.test('a close frame: code, reason in UTF-8, never over 125 bytes, cut between characters', async (t) => {
  const f = closeFrame(1001, 'The desktop is no longer running.');
  t.same([...f.subarray(0, 4)], [0x88, 2 + 33, 0x03, 0xe9]);
  t.equal(f.subarray(4).toString(), 'The desktop is no longer running.');
  const long = closeFrame(4000, 'é'.repeat(100));
  t.ok(long[1]! <= 125, `payload ${long[1]} bytes`);
  t.equal(long.subarray(4).toString('utf8'), 'é'.repeat(61), 'whole characters only');
});

t.test('a route withdrawn while a 1 MiB desktop frame is half sent: the frame arrives whole, then 1001 with the reason', async (t) => {
  const payload = randomBytes(1024 * 1024);
  const desktop = await startHalfFrameDesktop(payload);
  t.teardown(() => desktop.close());
  const { proxy, remove } = await startStack(t, [makeRoute('ann-vnc', desktop.url)]);
  const ws = new WebSocket(`${proxy.url.replace('http', 'ws')}/desktop/ann-vnc/websockify`);
  const messages: Buffer[] = [];
  ws.on('message', (data: Buffer) => messages.push(Buffer.from(data)));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  desktop.sendFirstHalf();
  await new Promise((r) => setTimeout(r, 200)); // half of the frame is through the proxy
  t.equal(messages.length, 0, 'half a frame is not a message yet');
  await remove('ann-vnc');
  await new Promise((r) => setTimeout(r, 100));
  desktop.sendRest();
  const { code, reason } = await closed;
  t.equal(messages.length, 1, 'one message: the frame in progress, and nothing after the close');
  t.ok(messages[0]!.equals(payload), 'the 1 MiB frame arrived intact');
  t.equal(code, 1001, 'closed with 1001, going away');
  t.equal(reason, 'The desktop is no longer running.', 'with the reason');
  await desktop.closed;
  t.pass('the connection to the desktop is closed too');
});

t.test('a route withdrawn between frames closes at once with the reason', async (t) => {
  const desktop = await startHalfFrameDesktop(Buffer.alloc(10));
  t.teardown(() => desktop.close());
  const { proxy, remove } = await startStack(t, [makeRoute('ann-vnc', desktop.url)]);
  const ws = new WebSocket(`${proxy.url.replace('http', 'ws')}/desktop/ann-vnc/websockify`);
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  await remove('ann-vnc');
  t.same(await closed, { code: 1001, reason: 'The desktop is no longer running.' });
});
