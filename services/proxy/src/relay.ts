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
 *
 * Before that, from its second read on, a direction reads into one buffer shared by the whole
 * process and copies each chunk out of it (small messages land in Node's pooled small buffers).
 * That skips, for every small message (VNC input, the benchmark's 100-byte ping-pong), a 64 KiB
 * allocation shrunk to the message, the readable stream's push and 'data' event and its
 * read-ahead tick: in interleaved runs the round trip through the proxy dropped from ~173 to
 * ~152 us at p50, with no memory per socket. TLS sockets keep plain reads throughout.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex, Writable } from 'node:stream';
import type { FrameCursor } from './ws-frames.ts';

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
 * One read buffer for the whole process, for every direction not yet busy: each chunk is copied
 * out of it (into Node's small-buffer pool for small messages) before the next read of any socket
 * can land in it, so no write ever holds it. Allocated on the first upgraded connection.
 */
let sharedReadBuffer: Buffer | null = null;
const SHARED_BUFFER_SIZE = 64 * 1024;

function shared(): Buffer {
  if (sharedReadBuffer === null) sharedReadBuffer = Buffer.allocUnsafeSlow(SHARED_BUFFER_SIZE);
  return sharedReadBuffer;
}

/**
 * Makes `socket` read into `first` and then into whatever `next()` returns after each read, calling
 * `onRead` with each read (its length and the buffer it landed in). Returns false when the socket
 * cannot (TLS, not a plain socket, no handle, unknown Node).
 */
function readIntoBuffers(socket: Duplex, first: Buffer, onRead: (n: number, into: Buffer) => boolean, next: () => Buffer): boolean {
  if (onreadSymbols === null || !(socket instanceof net.Socket) || socket instanceof tls.TLSSocket) return false;
  const slots = socket as unknown as SocketSlots;
  const handle = slots._handle;
  if (handle === null || typeof handle.useUserBuffer !== 'function' || slots[onreadSymbols.buffer]) return false;
  slots[onreadSymbols.buffer] = first;
  slots[onreadSymbols.callback] = onRead;
  // Asked after each read for the buffer of the next one.
  slots[onreadSymbols.generator] = next;
  handle.useUserBuffer(first);
  return true;
}

/** Sees each chunk a relay carries, before it is written on: `chunk[start .. start + length)`. */
export type RelayObserver = (chunk: Buffer, start: number, length: number) => void;

export interface RelayOptions {
  /** Shown every chunk first (the input watch of a VNC desktop). */
  observe?: RelayObserver;
  /** Follows the WebSocket frames this direction carries, so it can end at a frame boundary. */
  frames?: FrameCursor;
}

export interface Relay {
  /** Stops relaying (the sockets are left to the caller). */
  stop(): void;
  /**
   * Writes `frame` (a close frame) to the destination at the next frame boundary: at once if the
   * stream is between frames, else right after the frame in progress has been passed on whole.
   * Then stops relaying and calls `done`. Needs `frames`.
   */
  endAtBoundary(frame: Buffer, done: () => void): void;
}

/** Relays `from` to `to` until either closes. */
export function relay(from: Duplex, to: Writable, options: RelayOptions = {}): Relay {
  const { observe, frames } = options;
  let carried = 0;
  let stopped = false;
  let reading = false; // reads go to our buffers (shared, then own), not to 'data' events
  let own: Buffer | null = null;
  let ending: { frame: Buffer; done: () => void } | null = null;
  const finish = (): void => {
    const e = ending!;
    ending = null;
    stop();
    to.write(e.frame);
    e.done();
  };
  const forward = (chunk: Buffer): boolean => {
    if (stopped) return true;
    if (frames !== undefined) {
      if (ending !== null) {
        const n = frames.untilBoundary(chunk, 0, chunk.length);
        if (n !== -1) {
          if (n > 0) to.write(chunk.subarray(0, n));
          finish();
          return true;
        }
      } else frames.feed(chunk, 0, chunk.length);
    }
    if (to.write(chunk)) return true;
    from.pause();
    return false;
  };
  const onRead = (n: number, into: Buffer): boolean => {
    carried += n;
    if (observe !== undefined) observe(into, 0, n);
    if (into !== own) {
      // The shared buffer: the next read of any socket lands in it, so the chunk leaves it now.
      const copy = Buffer.allocUnsafe(n);
      into.copy(copy, 0, 0, n);
      return forward(copy);
    }
    return forward(into.subarray(0, n));
  };
  const next = (): Buffer => {
    if (own !== null) {
      // The chunk a pending write still holds must not be read over: anything still queued on
      // `to` (writableLength > 0) includes it.
      if (to.writableLength > 0) own = Buffer.allocUnsafeSlow(OWN_BUFFER_SIZE);
      return own;
    }
    if (carried >= OWN_BUFFER_AFTER) own = Buffer.allocUnsafeSlow(OWN_BUFFER_SIZE);
    return own ?? shared();
  };
  const onData = (chunk: Buffer): void => {
    if (observe !== undefined) observe(chunk, 0, chunk.length);
    const flowing = forward(chunk);
    carried += chunk.length;
    // Switch only between reads with nothing held back: the next read then lands in our buffer.
    // Not before the first chunk: whoever opened the socket may want it as a 'data' event (the
    // upstream's handshake answer).
    if (!reading && flowing && from.readableLength === 0 && !stopped) reading = readIntoBuffers(from, next(), onRead, next);
  };
  const onDrain = (): void => {
    if (!stopped) from.resume();
  };
  const onEnd = (): void => {
    if (!stopped) to.end();
  };
  const stop = (): void => {
    stopped = true;
    from.off('data', onData);
    from.off('end', onEnd);
    to.off('drain', onDrain);
  };
  from.on('data', onData);
  from.on('end', onEnd);
  to.on('drain', onDrain);
  from.resume();
  return {
    stop,
    endAtBoundary(frame, done) {
      if (stopped || ending !== null || frames === undefined) return;
      ending = { frame, done };
      if (frames.atBoundary()) finish();
      else from.resume(); // the rest of the frame in progress must come through
    },
  };
}

/** Rewrites one chunk a relay carries: the bytes to write (null: none), or false to stop relaying. */
export type RelayTransform = (chunk: Buffer) => Buffer | null | false;

/**
 * Relays `from` to `to` through `transform`, with the same backpressure and half-close as `relay`,
 * on plain 'data' events: for a direction whose bytes are rewritten (a viewer's, read through the
 * view filter, rfb-view-filter.ts), a few update requests a second, where reused read buffers
 * would save nothing. Returns its stop; the sockets are left to the caller.
 */
export function relayThrough(from: Duplex, to: Writable, transform: RelayTransform): () => void {
  const onData = (chunk: Buffer): void => {
    const out = transform(chunk);
    if (out === false) stop();
    else if (out !== null && !to.write(out)) from.pause();
  };
  const onDrain = (): void => void from.resume();
  const onEnd = (): void => void to.end();
  const stop = (): void => {
    from.off('data', onData).off('end', onEnd);
    to.off('drain', onDrain);
  };
  from.on('data', onData).on('end', onEnd);
  to.on('drain', onDrain);
  from.resume();
  return stop;
}
