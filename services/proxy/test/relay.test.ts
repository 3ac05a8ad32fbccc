/**
 * The byte relay under upgraded connections (src/relay.ts), on its own: a real TCP socket as the
 * source, past the point where it reads into a buffer it reuses. The destination is a Node
 * Writable that completes each write only later and reads the bytes only then, as a kernel send
 * queue does with a write the kernel could not take at once; its high-water mark is large, so
 * writes keep returning true and the relay keeps reading meanwhile. Any read over a buffer a
 * pending write still holds shows up as different bytes.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { Writable } from 'node:stream';
import t from 'tap';
import { OWN_BUFFER_AFTER, relay } from '../src/relay.ts';

t.test('reads into a reused buffer never overwrite bytes a pending write still holds', async (t) => {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const sender = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  t.teardown(() => sender.destroy());
  const source = await accepted;
  t.teardown(() => source.destroy());

  const received = createHash('sha256');
  let bytes = 0;
  let mostQueued = 0;
  const slow = new Writable({
    highWaterMark: 64 * 1024 * 1024,
    write(chunk: Buffer, _encoding, callback) {
      mostQueued = Math.max(mostQueued, slow.writableLength);
      // The bytes are read when the write completes, not when it was asked for.
      setTimeout(() => {
        received.update(chunk);
        bytes += chunk.length;
        callback();
      }, 2);
    },
  });
  relay(source, slow);

  const total = OWN_BUFFER_AFTER * 6;
  const data = randomBytes(total);
  const finished = new Promise<void>((resolve) => slow.on('finish', () => resolve()));
  for (let off = 0; off < total; off += 16 * 1024) sender.write(data.subarray(off, off + 16 * 1024));
  sender.end();
  await finished;
  t.equal(bytes, total, 'every byte arrived');
  t.ok(mostQueued > 256 * 1024, `writes were pending while the relay read on (up to ${mostQueued} bytes)`);
  t.equal(received.digest('hex'), createHash('sha256').update(data).digest('hex'), 'byte for byte, in order');
});
