/**
 * The byte relay under an upgraded connection (WebSocket): what one socket reads is written to
 * the other, with backpressure (a destination that does not keep up pauses the source, its
 * 'drain' resumes it), and one side's end half-closes the other, as `stream.pipe` does.
 *
 * Why not `stream.pipe`: every read of a plain socket allocates a fresh 64 KiB ArrayBuffer, and at
 * desktop frame rates (hundreds of MB/s through the proxy) that external memory drove V8 into a
 * full mark-compact every ~150 ms: about a quarter of the proxy's CPU on 64 KiB WebSocket frames
 * went to garbage collection. A direction that has carried `OWN_BUFFER_AFTER` bytes therefore
 * reads into a buffer of its own (Node's `onread` mechanism, switched on for an existing socket),
 * reused for every read whose write went out whole; a write still pending (the kernel took only
 * part of it) keeps its buffer, and the next read gets a new one. Idle and lightly used
 * connections never get one, so they cost no more memory than before.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex, Writable } from 'node:stream';

/** A direction gets its own read buffer once it has carried this much (a busy desktop stream). */
export const OWN_BUFFER_AFTER = 1024 * 1024;
/**
 * Larger reads mean fewer system calls per frame: with 64 KiB frames, 256 KiB cost ~25% less CPU
 * per frame than 64 KiB (75 against 107 us in interleaved runs). A busy direction holds one (two
 * while a write is pending), bounded, and only busy connections have one at all.
 */
const OWN_BUFFER_SIZE = 256 * 1024;

interface OnreadSymbols {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

/**
 * net.Socket keeps its `onread` option behind three private symbols (Node 20: kBuffer,
 * kBufferCb, kBufferGen, set on every instance). Found once by name; null if a Node version
 * changed them, and then every direction simply stays on 'data' events.
 */
const onreadSymbols: OnreadSymbols | null = (() => {
  const probe = new net.Socket();
  const find = (name: string) => Object.getOwnPropertySymbols(probe).find((s) => s.description === name);
  const buffer = find('kBuffer');
  const callback = find('kBufferCb');
  const generator = find('kBufferGen');
  probe.destroy();
  return buffer && callback && generator ? { buffer, callback, generator } : null;
})();

interface UserBufferHandle {
  useUserBuffer?(buffer: Buffer): void;
}

type SocketSlots = Record<symbol, unknown> & { _handle: UserBufferHandle | null };

/**
 * Makes `socket` read into buffers it reuses, calling `onRead` with each chunk read (a view of
 * the buffer, valid until `onRead` returns unless `keep()` then says the chunk is still held).
 * Returns false when the socket cannot (TLS, not a plain socket, no handle, unknown Node).
 */
function readIntoOwnBuffer(socket: Duplex, onRead: (chunk: Buffer) => void, keep: () => boolean): boolean {
  if (onreadSymbols === null || !(socket instanceof net.Socket) || socket instanceof tls.TLSSocket) return false;
  const slots = socket as unknown as SocketSlots;
  const handle = slots._handle;
  if (handle === null || typeof handle.useUserBuffer !== 'function' || slots[onreadSymbols.buffer]) return false;
  let buffer = Buffer.allocUnsafeSlow(OWN_BUFFER_SIZE);
  slots[onreadSymbols.buffer] = buffer;
  slots[onreadSymbols.callback] = (n: number, into: Buffer) => onRead(into.subarray(0, n));
  // Asked after each read for the buffer of the next one.
  slots[onreadSymbols.generator] = () => {
    if (keep()) buffer = Buffer.allocUnsafeSlow(OWN_BUFFER_SIZE);
    return buffer;
  };
  handle.useUserBuffer(buffer);
  return true;
}

/** Relays `from` to `to` until either closes; returns a function that stops relaying. */
export function relay(from: Duplex, to: Writable): () => void {
  let carried = 0;
  let stopped = false;
  let ownBuffer = false;
  const forward = (chunk: Buffer): boolean => {
    if (stopped) return true;
    if (to.write(chunk)) return true;
    from.pause();
    return false;
  };
  const onData = (chunk: Buffer): void => {
    const flowing = forward(chunk);
    carried += chunk.length;
    // Switch only between reads with nothing held back: the next read then lands in the new buffer.
    if (!ownBuffer && flowing && carried >= OWN_BUFFER_AFTER && from.readableLength === 0) {
      // The chunk a pending write still holds must not be read over: anything still queued on
      // `to` (writableLength > 0) includes it.
      ownBuffer = readIntoOwnBuffer(from, forward, () => to.writableLength > 0);
    }
  };
  const onDrain = (): void => {
    if (!stopped) from.resume();
  };
  const onEnd = (): void => {
    if (!stopped) to.end();
  };
  from.on('data', onData);
  from.on('end', onEnd);
  to.on('drain', onDrain);
  from.resume();
  return () => {
    stopped = true;
    from.off('data', onData);
    from.off('end', onEnd);
    to.off('drain', onDrain);
  };
}
