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

/** The part of Node's internal `HTTPParser` we use (node_http_parser.cc, Node 20). */
export interface Parser {
  initialize(type: number, resource: object, maxHeaderSize?: number, lenientFlags?: number): void;
  /** Bytes parsed, or an Error with `code` (HPE_*) and `bytesParsed`. */
  execute(data: Buffer): number | ParseError;
  /** Signals EOF: completes a message delimited by the connection's end. */
  finish(): number | ParseError | undefined;
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

/** Returned from a headers-complete callback: 0 parse the body, 1 no body follows. */
export const SKIP_BODY = 1;

/** A coarse clock (ms) for timeouts checked by a sweep; cheaper than Date.now() per request. */
export const coarseClock = {
  now: Date.now(),
};
