/**
 * `node --import tsx bench/rfb-input.ts`: what the input watch (services/proxy/src/rfb-input.ts),
 * and for a viewer's connection the view filter (rfb-view-filter.ts: unmask, drop input, re-frame),
 * cost per chunk the relay carries from a browser to a VNC desktop, in the proxy's own thread:
 * a 64 KiB frame holding one ClientCutText (read 8 bytes, skip the rest), and small frames of
 * the kinds noVNC sends all the time (pointer events, key events, update requests). Compare with
 * the relay's CPU per 64 KiB frame and per small message in `pnpm bench` (tens of microseconds).
 */
import { randomBytes } from 'node:crypto';
import { RfbInputWatch } from '../services/proxy/src/rfb-input.ts';
import { RfbViewFilter } from '../services/proxy/src/rfb-view-filter.ts';
import { wsFrame } from '../services/proxy/test/ws-helpers.ts';

/** Browser frames are masked. */
const frame = (payload: Buffer): Buffer => wsFrame(payload, { masked: true });

const HANDSHAKE = frame(Buffer.concat([Buffer.from('RFB 003.008\n', 'latin1'), Buffer.from([1, 1])]));

/** Times `feed` over `chunks`, `rounds` times, after a quarter as many rounds of warm-up. */
function time(name: string, feed: (chunk: Buffer) => void, chunks: Buffer[], rounds: number, after: () => string): void {
  feed(HANDSHAKE);
  for (let warm = 0; warm < rounds / 4; warm++) for (const c of chunks) feed(c); // past the JIT's warm-up
  const start = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < rounds; r++) for (const c of chunks) feed(c);
  const wallNs = Number(process.hrtime.bigint() - t0) / (rounds * chunks.length);
  const cpu = process.cpuUsage(start);
  const cpuNs = ((cpu.user + cpu.system) * 1000) / (rounds * chunks.length);
  process.stdout.write(`${name}: ${wallNs.toFixed(0)} ns wall, ${cpuNs.toFixed(0)} ns CPU per chunk (${after()})\n`);
}

function measure(name: string, chunks: Buffer[], rounds: number): void {
  let inputs = 0;
  const watch = new RfbInputWatch('kasmvnc', { onInput: () => inputs++, onUntrusted: (why) => { throw new Error(why); } });
  time(`watch, ${name}`, (c) => watch.feed(c), chunks, rounds, () => `${inputs} inputs seen`);
  const filter = new RfbViewFilter('kasmvnc');
  let out = 0;
  time(`view filter, ${name}`, (c) => {
    out += filter.feed(c)?.length ?? 0;
    if (filter.failed !== null) throw new Error(filter.failed);
  }, chunks, rounds, () => `${out} bytes kept`);
}

const text = randomBytes(65_536 - 8);
const cut = Buffer.concat([Buffer.from([6, 0, 0, 0, 0, 0, (text.length >>> 8) & 0xff, text.length & 0xff]), text]);
cut.writeUInt32BE(text.length, 4);
measure('64 KiB frame (ClientCutText)', [frame(cut)], 20_000);
const pointer = (x: number) => Buffer.from([5, 0, 0, x >> 8, x & 0xff, 0, 10, 0, 0, 0, 0]);
const small = Array.from({ length: 64 }, (_, i) => frame(i % 4 === 0 ? Buffer.from([3, 1, 0, 0, 0, 0, 4, 0, 3, 0]) : i % 4 === 1 ? Buffer.from([4, i & 1, 0, 0, 0, 0, 0, 0x61]) : pointer(i)));
measure('small frames (pointer, key, update request)', small, 50_000);
