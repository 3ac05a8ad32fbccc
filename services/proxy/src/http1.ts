/**
 * HTTP/1.1 parsing for the proxy's own server and upstream client: Node's llhttp binding (the
 * parser `http.Server` itself uses, strict mode, 16 KiB header limit), driven directly.
 *
 * Why not `http.Server` + a client library: on our 2-core machines Node's HTTP layer costs about
 * twice what the parser and the socket writes cost (measured: ~55 us per trivial request through
 * `http.createServer`, ~25 us with this parser on a bare socket). A proxy pays that on both sides
 * of every request, and the request path is what the benchmarks measure.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

/** The part of Node's internal `HTTPParser` we use (node_http_parser.cc, Node 20). */
export interface Parser {
  initialize(type: number, resource: object, maxHeaderSize?: number, lenientFlags?: number): void;
  /** Bytes parsed, or an Error with `code` (HPE_*) and `bytesParsed`. */
  execute(data: Buffer): number | ParseError;
  /** Signals EOF: completes a message delimited by the connection's end. */
  finish(): number | ParseError | undefined;
  /** The parser becomes the stream's reader: llhttp reads the socket's data in C++ (as http.Server does). */
  consume(handle: object): void;
  unconsume(): void;
  /** A copy of the data of the read being handled (inside a kOnExecute callback). */
  getCurrentBuffer(): Buffer;
  /** false from the first byte of a message until its head is complete (and before the first message). */
  headersCompleted(): boolean;
  close(): void;
  [key: number]: unknown;
}

export interface ParseError extends Error {
  code: string;
  bytesParsed?: number;
}

interface ParserModule {
  HTTPParser: {
    new (): Parser;
    REQUEST: number;
    RESPONSE: number;
    kOnMessageBegin: number;
    kOnHeaders: number;
    kOnHeadersComplete: number;
    kOnBody: number;
    kOnMessageComplete: number;
    kOnExecute: number;
  };
  methods: string[];
}

const common = createRequire(import.meta.url)('_http_common') as ParserModule;
export const HTTPParser = common.HTTPParser;

export const kOnMessageBegin = HTTPParser.kOnMessageBegin | 0;
export const kOnHeaders = HTTPParser.kOnHeaders | 0;
export const kOnHeadersComplete = HTTPParser.kOnHeadersComplete | 0;
export const kOnBody = HTTPParser.kOnBody | 0;
export const kOnMessageComplete = HTTPParser.kOnMessageComplete | 0;
export const kOnExecute = HTTPParser.kOnExecute | 0;

/**
 * Method names by llhttp's method number. The binding passes a number; Node keeps the table
 * internal, so it is rebuilt once here by parsing one request line per known method.
 */
export const methodNames: string[] = (() => {
  const names: string[] = [];
  for (const name of common.methods) {
    const parser = new HTTPParser();
    parser.initialize(HTTPParser.REQUEST, {});
    let seen = -1;
    parser[kOnHeadersComplete] = (_a: number, _b: number, _h: string[], method: number) => {
      seen = method;
      return 1;
    };
    parser.execute(Buffer.from(`${name} / HTTP/1.1\r\n\r\n`));
    parser.close();
    if (seen >= 0) names[seen] = name;
  }
  return names;
})();

/** The libuv stream under a `net.Socket` (TCP): the part a consuming parser needs. */
interface StreamHandle {
  isStreamBase?: boolean;
  _consumed?: boolean;
  reading: boolean;
  readStart(): number;
  readStop(): number;
}

function handleOf(socket: Socket): StreamHandle | null {
  return ((socket as unknown as { _handle: StreamHandle | null })._handle ?? null);
}

/**
 * Lets `parser` read `socket` directly, as `http.Server` does with its connections: each read
 * lands in the binding's static buffer and goes to llhttp in C++, with no 'data' event, no
 * Buffer per read and no JS stream machinery; `kOnExecute` is called once per read with the
 * bytes parsed (or the parse error). Only plain TCP handles can be consumed (TLS sockets keep
 * their 'data' events); returns whether it happened. End of stream and errors still reach the
 * socket's 'end'/'error'/'close' events.
 */
export function consumeSocket(parser: Parser, socket: Socket): boolean {
  const handle = handleOf(socket);
  if (handle === null || handle.isStreamBase !== true || handle._consumed === true) return false;
  handle._consumed = true;
  parser.consume(handle);
  return true;
}

/** Gives a consumed socket's reads back to the socket ('data' events), e.g. at an upgrade. */
export function unconsumeSocket(parser: Parser, socket: Socket): void {
  parser.unconsume();
  const handle = handleOf(socket);
  if (handle !== null) handle._consumed = false;
}

/**
 * Stops or restarts reading a consumed socket. `socket.pause()` only stops the JS stream, which a
 * consumed socket bypasses, so the handle is stopped itself (http.Server does the same); the
 * `reading` flag is the one net.Socket keeps, so the two never disagree.
 */
export function setReading(socket: Socket, on: boolean): void {
  const handle = handleOf(socket);
  if (handle === null || socket.destroyed) return;
  if (on) {
    if (!handle.reading) {
      handle.reading = true;
      handle.readStart();
    }
  } else if (handle.reading) {
    handle.reading = false;
    handle.readStop();
  }
}

/** Pieces up to this many bytes in all are copied into one buffer for a single write(). */
const COALESCE_MAX = 16 * 1024;

/**
 * Writes `parts` (latin1 strings and buffers; emptied afterwards) to `socket` in one system call:
 * small ones copied into one buffer and written once (cheaper than a corked writev through the
 * stream machinery), larger ones corked together. Returns what the last write returned (false:
 * wait for 'drain').
 */
export function writeParts(socket: Socket, parts: (string | Buffer)[]): boolean {
  const n = parts.length;
  let ok = true;
  if (n === 1) ok = socket.write(parts[0] as string, 'latin1');
  else if (n > 1) {
    let total = 0;
    for (let i = 0; i < n; i++) total += (parts[i] as string | Buffer).length;
    if (total <= COALESCE_MAX) {
      const buffer = Buffer.allocUnsafe(total);
      let offset = 0;
      for (let i = 0; i < n; i++) {
        const part = parts[i] as string | Buffer;
        if (typeof part === 'string') offset += buffer.write(part, offset, 'latin1');
        else offset += part.copy(buffer, offset);
      }
      ok = socket.write(buffer);
    } else {
      socket.cork();
      for (let i = 0; i < n; i++) ok = socket.write(parts[i] as string, 'latin1');
      socket.uncork();
    }
  }
  parts.length = 0;
  return ok;
}

/** Returned from a headers-complete callback: 0 parse the body, 1 no body follows. */
export const SKIP_BODY = 1;

function closeParser(parser: Parser): void {
  parser.close();
}

/**
 * Closes `parser` on the next turn: never from inside one of its own callbacks (closing a parser
 * while it runs crashes the process), and after the socket's last events have used it.
 */
export function closeParserLater(parser: Parser): void {
  setImmediate(closeParser, parser);
}
