/**
 * Ending a WebSocket at a frame boundary with a close frame of the proxy's own (ws-frames.ts,
 * relay.ts): the frame cursor across every split of a stream, the close frame's reason kept
 * within 125 bytes at a character boundary, and on real sockets: a route withdrawn while the
 * desktop is half-way through a 1 MiB frame; the browser gets that frame whole, then 1001 and
 * the reason, and no byte after it.
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import WebSocket from 'ws';
import { closeFrame, FrameCursor } from '../src/ws-frames.ts';
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
