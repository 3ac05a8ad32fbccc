/**
 * The public listener's HTTP/1.1 side: one `ClientConnection` per browser connection parses
 * requests with llhttp (http1.ts), hands each to the proxy in order, buffers at most a little of
 * a request body until it has somewhere to go, and writes responses straight to the socket.
 *
 * Rules it keeps:
 * - responses go out in request order; while a response is under way at most `MAX_QUEUED`
 *   requests are read ahead (bounded pipelining), and a request that cannot be parsed is
 *   answered after the ones before it;
 * - a request body is never held whole: more than `PENDING_BODY_MAX` waiting, or an upstream
 *   that does not keep up, pauses reading from the browser;
 * - a response that ends before its request body was read closes the connection (the unread
 *   rest would otherwise be taken for the next request);
 * - headers must arrive within `headersTimeoutMs`; an idle keep-alive connection is closed
 *   after `keepAliveTimeoutMs` (both checked by one sweep a second, not a timer per request);
 * - an upgrade request leaves this machinery entirely: the socket is handed over raw.
 */
import http, { IncomingMessage, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '@deskhub/config';
import { errorBody, writeRawError } from './errors.ts';
import { hostRefusal, methodRefusal, transferCodingRefusal, versionRefusal, webSocketRefusal, type Refusal } from './request-rules.ts';
import {
  closeParserLater,
  consumeSocket,
  HTTPParser,
  kOnBody,
  kOnExecute,
  kOnHeaders,
  kOnHeadersComplete,
  kOnMessageComplete,
  methodNames,
  setReading,
  unconsumeSocket,
  writeParts,
  type ParseError,
  type Parser,
} from './http1.ts';

/** Request body bytes held while the request waits for an upstream connection. */
const PENDING_BODY_MAX = 64 * 1024;
/**
 * Requests parsed and waiting for their turn (pipelining); with this many, reading pauses. A
 * consumed socket is not stopped per request: stopping and restarting its handle costs two
 * epoll_ctl calls each time, for browsers that do not pipeline at all.
 */
const MAX_QUEUED = 16;

/** Where a request body goes once the proxy knows (an upstream connection, or nowhere). */
export interface BodySink {
  /** false: stop reading until `resumeBody()` is called. */
  write(chunk: Buffer): boolean;
  end(): void;
}

/** What carries a request onward hears about the browser's side through this. */
export interface RequestListener {
  /** The browser went away before the response finished. */
  clientGone(): void;
  /** The browser's socket drained after a write returned false. */
  clientDrained(): void;
}

export interface FrontSettings {
  bodyLimit: number;
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
  logger: Logger;
  countResponse(status: number): void;
}

export interface FrontHandlers {
  request(req: ProxyRequest): void;
  upgrade(req: ProxyRequest, socket: Socket, head: Buffer): void;
}

const DISCARD: BodySink = { write: () => true, end: () => undefined };


/** One request as the proxy sees it: what was asked, and how to answer. */
export class ProxyRequest {
  contentLength = -1;
  chunked = false;
  expectContinue = false;
  accept: string | undefined = undefined;
  bodyComplete = false;
  bodyBytes = 0;
  /** A response head has been written. */
  headSent = false;
  finished = false;
  /** Told when the browser goes away or its socket drains (the exchange carrying this request). */
  listener: RequestListener | null = null;
  private pending: Buffer[] | null = null;
  private pendingBytes = 0;
  private sink: BodySink | null = null;
  private message: IncomingMessage | null = null;

  constructor(
    readonly conn: ClientConnection,
    readonly method: string,
    readonly url: string,
    readonly rawHeaders: string[],
    readonly versionMinor: number,
    readonly keepAlive: boolean,
  ) {}

  get socket(): Socket {
    return this.conn.socket;
  }

  get remoteAddress(): string | undefined {
    return this.conn.remoteAddress;
  }

  /** A request body is expected (declared length > 0, or chunked). */
  get hasBody(): boolean {
    return this.contentLength > 0 || this.chunked;
  }

  /**
   * The request as a Node `IncomingMessage` (url, method, headers, socket), made only when an
   * access hook wants one. Its body is not readable through it: the proxy streams bodies itself.
   */
  incoming(): IncomingMessage {
    if (this.message === null) {
      const m = new IncomingMessage(this.conn.socket);
      m.url = this.url;
      m.method = this.method;
      m.httpVersionMajor = 1;
      m.httpVersionMinor = this.versionMinor;
      m.httpVersion = `1.${this.versionMinor}`;
      m.rawHeaders = this.rawHeaders;
      (m as IncomingMessage & { _addHeaderLines(h: string[], n: number): void })._addHeaderLines(this.rawHeaders, this.rawHeaders.length);
      m.complete = this.bodyComplete;
      this.message = m;
    }
    return this.message;
  }

  /** Sends the body (what arrived so far, then the rest) into `sink`. */
  attachBody(sink: BodySink): void {
    if (this.expectContinue && !this.bodyComplete && this.bodyBytes === 0) {
      this.conn.socket.write('HTTP/1.1 100 Continue\r\n\r\n');
    }
    this.sink = sink;
    const pending = this.pending;
    this.pending = null;
    this.pendingBytes = 0;
    let flowing = true;
    if (pending !== null) for (const chunk of pending) flowing = sink.write(chunk);
    if (this.bodyComplete) sink.end();
    else if (flowing) this.conn.bodyUnblocked();
    else this.conn.bodyBlocked();
  }

  /** The body is not wanted (a local answer): what arrives is dropped. */
  discardBody(): void {
    this.pending = null;
    this.sink = DISCARD;
  }

  /** From the connection: one piece of the body. */
  body(chunk: Buffer): void {
    this.bodyBytes += chunk.length;
    if (this.bodyBytes > this.conn.server.settings.bodyLimit) {
      this.overflow();
      return;
    }
    if (this.sink !== null) {
      if (!this.sink.write(chunk)) this.conn.bodyBlocked();
      return;
    }
    (this.pending ??= []).push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes > PENDING_BODY_MAX) this.conn.bodyBlocked();
  }

  /** A body of undeclared length went past the limit: whatever was under way stops, 413. */
  private overflow(): void {
    if (this.finished || this.sink === DISCARD) return;
    const limit = this.conn.server.settings.bodyLimit;
    this.listener?.clientGone();
    this.listener = null;
    this.discardBody();
    if (this.headSent) {
      this.conn.socket.destroy();
      return;
    }
    const html = this.accept !== undefined && this.accept.includes('text/html');
    const { type, body } = errorBody(413, `The request body is larger than ${limit} bytes.`, html);
    this.respond(413, `content-type: ${type}\r\ncache-control: no-store\r\n`, body);
  }

  /** From the connection: the body is complete. */
  bodyEnd(): void {
    this.bodyComplete = true;
    this.sink?.end();
  }

  /** Writes part of the response; false: wait for the listener's clientDrained(). */
  write(data: Buffer | string): boolean {
    return this.conn.socket.write(data as string, 'latin1');
  }

  /** The response is complete. `reusable: false` closes the connection after it. */
  end(reusable = true): void {
    this.conn.finish(this, reusable);
  }

  /** Whether the connection must close after this response (the caller adds Connection: close). */
  get closeAfter(): boolean {
    return !this.keepAlive || !this.bodyComplete || this.conn.server.closing;
  }

  /**
   * A complete response made by the proxy itself. `headers` are preformatted "name: value\r\n"
   * lines. An unread request body is dropped and the connection closed after the answer.
   */
  respond(status: number, headers: string, body: string | Buffer = ''): void {
    if (this.headSent || this.finished) return;
    this.headSent = true;
    if (!this.bodyComplete) this.discardBody();
    const close = this.closeAfter;
    const payload = typeof body === 'string' ? Buffer.from(body) : body;
    const head =
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n${headers}content-length: ${payload.length}\r\n` +
      (close ? 'connection: close\r\n\r\n' : this.versionMinor === 0 ? 'connection: keep-alive\r\n\r\n' : '\r\n');
    const socket = this.conn.socket;
    this.conn.server.settings.countResponse(status);
    if (this.method === 'HEAD' || payload.length === 0) socket.write(head, 'latin1');
    else writeParts(socket, [head, payload]);
    this.end(!close);
  }
}

export class ClientConnection {
  readonly parser: Parser = new HTTPParser();
  readonly remoteAddress: string | undefined;
  /** Requests received and not yet answered, in order; the first is the one being answered. */
  private readonly queue: ProxyRequest[] = [];
  /** The request whose body is being parsed. */
  private parsing: ProxyRequest | null = null;
  private upgrade: { req: ProxyRequest; head: Buffer | null; refused: Refusal | null } | null = null;
  /**
   * When the current request head started arriving (epoch ms), 0 when none is. Stamped from
   * Date.now() when it happens (a vDSO read, no system call): a clock that only the sweep
   * advances can be a whole sweep old, and a timeout measured from it fires that much early.
   */
  headStartedAt = 0;
  idleSince = Date.now();
  private blockedByBody = false;
  private waitingForResponse = false;
  private paused = false;
  private closed = false;
  /** A request that could not be parsed while earlier ones were being answered: answered after them. */
  private failed: ParseError | null = null;
  /** llhttp reads the socket itself (consumeSocket); false for other sockets and after an upgrade. */
  private consumed = false;
  private partialHeaders: string[] = [];
  private partialUrl = '';
  /** The request being parsed asked for an upgrade the proxy ignores; llhttp stops at its end. */
  private ignoredUpgrade = false;
  /** llhttp stopped after such a request in this read: parsing resumes after it (parsed()). */
  private resumeAfterUpgrade = false;
  /** Why the last head was refused (request-rules.ts); the parse error it caused is answered with it. */
  private refusal: Refusal | null = null;

  constructor(
    readonly server: FrontServer,
    readonly socket: Socket,
  ) {
    this.remoteAddress = socket.remoteAddress;
    socket.setNoDelay(true);
    const parser = this.parser;
    parser.initialize(HTTPParser.REQUEST, {});
    parser[kOnHeaders] = (headers: string[], url: string) => {
      // Slow path: a head spread over several packets or over 32 header lines.
      for (const h of headers) this.partialHeaders.push(h);
      this.partialUrl += url;
    };
    parser[kOnHeadersComplete] = this.onHeadersComplete;
    parser[kOnBody] = (chunk: Buffer) => this.parsing?.body(chunk);
    parser[kOnMessageComplete] = this.onMessageComplete;
    // The parser reads the socket in C++ and reports each read to onExecute; 'data' events only
    // come for a socket that cannot be consumed, and after an upgrade request gave it back.
    this.consumed = consumeSocket(parser, socket);
    if (this.consumed) parser[kOnExecute] = this.onExecute;
    socket.on('data', this.onData);
    socket.on('drain', this.onDrain);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    server.connections.add(this);
  }

  private readonly onHeadersComplete = (
    major: number,
    minor: number,
    headers: string[] | undefined,
    method: number,
    url: string | undefined,
    _status: unknown,
    _message: unknown,
    upgrade: boolean,
    keepAlive: boolean,
  ): number => {
    if (headers === undefined) {
      headers = this.partialHeaders;
      this.partialHeaders = [];
    }
    if (url === undefined) {
      url = this.partialUrl;
      this.partialUrl = '';
    }
    this.headStartedAt = 0;
    const req = new ProxyRequest(this, methodNames[method] ?? 'UNKNOWN', url, headers, minor, keepAlive);
    let hosts = 0;
    let host: string | undefined;
    let codings: string | undefined;
    let webSocket = false;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i] as string;
      switch (name.length) {
        case 7:
          if (upgrade && name.toLowerCase() === 'upgrade') webSocket = /(?:^|,)\s*websocket\s*(?:,|$)/i.test(headers[i + 1] as string);
          break;
        case 4:
          if (name.toLowerCase() === 'host') {
            hosts++;
            host = headers[i + 1];
          }
          break;
        case 6:
          if (name.toLowerCase() === 'accept') req.accept = headers[i + 1];
          // An HTTP/1.0 client does not know 100 Continue (RFC 9110 §10.1.1).
          else if (name.toLowerCase() === 'expect') req.expectContinue = minor === 1 && /100-continue/i.test(headers[i + 1] as string);
          break;
        case 14:
          if (name.toLowerCase() === 'content-length') req.contentLength = Number(headers[i + 1]);
          break;
        case 17:
          if (name.toLowerCase() === 'transfer-encoding') {
            codings = codings === undefined ? (headers[i + 1] as string) : `${codings}, ${headers[i + 1]}`;
            req.chunked = true;
          }
          break;
      }
    }
    let refused =
      versionRefusal(major) ?? (codings !== undefined ? transferCodingRefusal(codings, minor) : null) ?? hostRefusal(hosts, host, minor) ?? methodRefusal(req.method);
    if (upgrade) {
      if (webSocket) refused ??= webSocketRefusal(req.method, minor, req.hasBody);
      if (refused !== null || webSocket || req.method === 'CONNECT') {
        // llhttp stops after this message (it ignores an error returned for an upgrade); the
        // socket is then handed over with what follows, or refused (handOver).
        this.upgrade = { req, head: null, refused };
        return 0;
      }
      // An upgrade to anything else (h2c) is ignored, as RFC 9110 §7.8 lets a server do: the
      // request is served as HTTP/1.1 (Upgrade is hop-by-hop and not forwarded), and parsing
      // goes on after it where llhttp stopped (parsed()).
      this.ignoredUpgrade = true;
    }
    // A head the proxy will not forward stops the parser here, before anything is dispatched:
    // the error that comes back from execute() is answered with this refusal (answerParseError).
    if (refused !== null) {
      this.refusal = refused;
      return -1;
    }
    this.parsing = req;
    this.queue.push(req);
    if (this.queue.length === 1) this.dispatch(req);
    else if (this.queue.length >= MAX_QUEUED) this.updateReading();
    return 0;
  };

  private readonly onMessageComplete = (): void => {
    if (this.ignoredUpgrade) {
      this.ignoredUpgrade = false;
      this.resumeAfterUpgrade = true;
    }
    // Trailer fields of a chunked body come through onHeaders too. They are not forwarded (the
    // proxy ends the body with an empty trailer section), and must never become the next
    // request's headers or URL.
    if (this.partialHeaders.length > 0 || this.partialUrl !== '') {
      this.partialHeaders = [];
      this.partialUrl = '';
    }
    const req = this.parsing;
    if (req === null) return;
    this.parsing = null;
    req.bodyEnd();
    if (!req.finished) {
      // A socket read through 'data' events is not read past this request until it is answered
      // (pausing it costs nothing); a consumed one reads ahead up to MAX_QUEUED requests.
      this.waitingForResponse = true;
      this.updateReading();
    }
  };

  private readonly onData = (chunk: Buffer): void => {
    if (this.closed || this.failed !== null) return;
    const waiting = this.upgrade;
    if (waiting !== null && waiting.head !== null) {
      // Bytes after a queued upgrade's head belong to the upgraded connection.
      waiting.head = Buffer.concat([waiting.head, chunk]);
      return;
    }
    this.parsed(this.parser.execute(chunk), chunk);
  };

  /** After each read of a consumed socket: `ret` bytes of it were parsed. */
  private readonly onExecute = (ret: number | ParseError): void => {
    if (this.closed || this.failed !== null) return;
    this.parsed(ret, null);
  };

  /**
   * What one read leaves to do: a parse error to answer, an upgrade head to set aside, or the
   * start of a head that has not arrived whole (its timeout runs from here). Asking the parser
   * once per read is cheaper than a message-begin callback from C++ for every request.
   */
  private parsed(ret: number | ParseError, chunk: Buffer | null): void {
    if (typeof ret !== 'number') {
      this.parseError(ret);
      return;
    }
    if (this.resumeAfterUpgrade) {
      this.resumeAfterUpgrade = false;
      const rest = (chunk ?? this.parser.getCurrentBuffer()).subarray(ret);
      if (rest.length > 0) {
        this.parsed(this.parser.execute(rest), rest);
        return;
      }
    }
    if (this.headStartedAt === 0 && !this.parser.headersCompleted()) this.headStartedAt = Date.now();
    const upgrade = this.upgrade;
    if (upgrade !== null && upgrade.head === null) {
      // What follows the upgrade's head in this read belongs to the upgraded connection; later
      // reads come as 'data' events (onData), no longer through the parser.
      upgrade.head = (chunk ?? this.parser.getCurrentBuffer()).subarray(ret);
      if (this.consumed) {
        this.consumed = false;
        unconsumeSocket(this.parser, this.socket);
      }
      if (this.queue.length === 0) this.handOver();
      else {
        this.waitingForResponse = true;
        this.updateReading();
      }
    }
  }

  private readonly onDrain = (): void => {
    this.queue[0]?.listener?.clientDrained();
  };

  private readonly onEnd = (): void => {
    // The browser finished sending. Answer what is under way, then close.
    if (this.queue.length === 0 && this.parsing === null) this.socket.destroy();
    else this.closed = true;
  };

  private readonly onError = (): void => {
    this.socket.destroy();
  };

  private readonly onClose = (): void => {
    this.closed = true;
    this.server.connections.delete(this);
    const active = this.queue[0];
    this.queue.length = 0;
    if (active !== undefined && !active.finished) active.listener?.clientGone();
    if (this.consumed) {
      this.consumed = false;
      this.parser.unconsume();
    }
    closeParserLater(this.parser);
  };

  private dispatch(req: ProxyRequest): void {
    try {
      this.server.handlers.request(req);
    } catch (err) {
      this.server.settings.logger.error({ err, reqUrl: req.url }, 'request handler failed');
      if (!req.headSent) req.respond(500, 'content-type: application/json; charset=utf-8\r\n', '{"statusCode":500,"error":"Internal Server Error","message":"The proxy failed."}');
      else this.socket.destroy();
    }
  }

  /** A response is complete. */
  finish(req: ProxyRequest, reusable: boolean): void {
    if (req.finished) return;
    req.finished = true;
    req.listener = null;
    if (this.queue[0] === req) this.queue.shift();
    // While draining, a connection closes only after an answer that said so (closeAfter): one
    // whose answer began before the drain promised keep-alive, so it stays open, idle, and its
    // next answer says close. Closing it here could race a request the client has just written.
    if (!reusable || !req.keepAlive || !req.bodyComplete || this.closed || this.server.stopping) {
      this.closed = true;
      this.socket.destroySoon();
      return;
    }
    this.waitingForResponse = false;
    this.blockedByBody = false;
    const next = this.queue[0];
    if (next !== undefined) this.dispatch(next);
    else if (this.failed !== null) {
      this.answerParseError(this.failed);
      return;
    } else if (this.upgrade !== null && this.upgrade.head !== null) this.handOver();
    else this.idleSince = Date.now();
    this.updateReading();
  }

  bodyBlocked(): void {
    this.blockedByBody = true;
    this.updateReading();
  }

  bodyUnblocked(): void {
    this.blockedByBody = false;
    this.updateReading();
  }

  private updateReading(): void {
    const pause =
      this.blockedByBody || this.failed !== null || this.queue.length >= MAX_QUEUED || (this.waitingForResponse && !this.consumed);
    if (pause === this.paused || this.closed) return;
    this.paused = pause;
    if (this.consumed) setReading(this.socket, !pause);
    else if (pause) this.socket.pause();
    else this.socket.resume();
  }

  /** The socket leaves HTTP: the upgrade handler owns it from here. */
  private handOver(): void {
    const upgrade = this.upgrade;
    if (upgrade === null || upgrade.head === null) return;
    this.closed = true;
    this.upgrade = null;
    if (upgrade.refused !== null) {
      this.server.settings.countResponse(upgrade.refused.status);
      writeRawError(this.socket, upgrade.refused.status, upgrade.refused.message, false, upgrade.refused.headers);
      return;
    }
    const socket = this.socket;
    socket.off('data', this.onData);
    socket.off('drain', this.onDrain);
    socket.off('end', this.onEnd);
    socket.off('error', this.onError);
    socket.off('close', this.onClose);
    this.server.connections.delete(this);
    closeParserLater(this.parser);
    if (this.paused) {
      this.paused = false;
      socket.resume();
    }
    // Left paused for the upgrade handler (its pipe resumes it, restarting the handle's reads).
    socket.pause();
    this.server.handlers.upgrade(upgrade.req, socket, upgrade.head);
  }

  private parseError(err: ParseError): void {
    const req = this.parsing;
    if (req !== null) {
      // Inside a body (a bad chunk size, a chunk longer than it said): that request can never
      // complete. Whatever was carrying it stops (an upstream connection that got part of the
      // body is discarded), and it is answered 400 unless its answer has already begun.
      this.parsing = null;
      if (req === this.queue[0]) {
        req.finished = true;
        this.queue.shift();
        req.listener?.clientGone();
        req.listener = null;
        if (req.headSent) {
          this.closed = true;
          this.socket.destroy();
          return;
        }
      } else {
        this.queue.pop(); // not dispatched yet: it is the last one queued
      }
    }
    if (this.queue.length > 0) {
      // Answering now would interleave with a response under way: the answer waits for the
      // requests before it.
      this.failed = err;
      this.headStartedAt = 0;
      this.updateReading();
      return;
    }
    this.answerParseError(err);
  }

  private answerParseError(err: ParseError): void {
    this.closed = true;
    this.failed = err;
    const refused = err.code === 'HPE_CB_HEADERS_COMPLETE' ? this.refusal : null;
    const status = refused !== null ? refused.status : err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    const message = refused !== null ? refused.message : status === 431 ? 'The request headers are too large.' : 'The request is not valid HTTP.';
    this.server.settings.countResponse(status);
    writeRawError(this.socket, status, message, false, refused?.headers);
  }

  /** From the sweep. */
  checkTimeouts(now: number): void {
    const settings = this.server.settings;
    if (this.headStartedAt !== 0 && now - this.headStartedAt > settings.headersTimeoutMs) {
      this.closed = true;
      if (this.queue.length > 0) this.socket.destroy();
      else {
        settings.countResponse(408);
        writeRawError(this.socket, 408, 'The request took too long to arrive.');
      }
      return;
    }
    if (this.queue.length === 0 && this.parsing === null && this.headStartedAt === 0 && now - this.idleSince > settings.keepAliveTimeoutMs) {
      this.socket.destroy();
    }
  }

  /** On shutdown: close now if nothing is under way. */
  closeIfIdle(): void {
    if (this.queue.length === 0 && this.parsing === null) this.socket.destroy();
  }

  /** Nothing is being received or answered (an idle keep-alive connection, or one never used). */
  get idle(): boolean {
    return this.queue.length === 0 && this.parsing === null && this.headStartedAt === 0;
  }
}

/**
 * The public listener. It is a real `http.Server` (so it listens, closes and reports its
 * address as callers expect), but its connections are served by `ClientConnection`, not by
 * Node's HTTP machinery.
 */
export class FrontServer {
  readonly server: http.Server;
  readonly connections = new Set<ClientConnection>();
  /** Draining or stopping: every answer says `Connection: close` and its connection closes after it. */
  closing = false;
  /** Stopping (close()): idle connections close too, and busy ones after their answer whatever it said. */
  stopping = false;
  private readonly sweep: NodeJS.Timeout;
  private closed: Promise<void> | null = null;

  constructor(
    readonly settings: FrontSettings,
    readonly handlers: FrontHandlers,
  ) {
    this.server = http.createServer();
    this.server.removeAllListeners('connection');
    this.server.on('connection', (socket: Socket) => new ClientConnection(this, socket));
    this.sweep = setInterval(() => {
      const now = Date.now();
      for (const conn of this.connections) conn.checkTimeouts(now);
    }, 1000);
    this.sweep.unref();
  }

  /**
   * The drain: stops listening (a new connection is refused by the kernel) and leaves every
   * connection open; each answer from now on says `Connection: close` and its connection closes
   * after it, so an idle keep-alive connection is closed by its next request's answer, never
   * under a request the client may just have written. Resolves once every connection accepted
   * has closed, upgraded ones (WebSockets) included: the listener's own count.
   */
  drain(): Promise<void> {
    this.closing = true;
    // Not listening (stopped before the first route snapshot): the callback gets an error, and
    // there is nothing to wait for.
    this.closed ??= new Promise<void>((resolve) => this.server.close(() => resolve()));
    return this.closed;
  }

  /** HTTP connections with nothing under way (idle keep-alive, or never used). */
  idleConnections(): number {
    let n = 0;
    for (const conn of this.connections) if (conn.idle) n++;
    return n;
  }

  /**
   * Stops listening; idle connections close now, busy ones after their response or `graceMs`.
   * Resolves when every HTTP connection has closed and the listener has too (it waits for
   * upgraded sockets as well: whoever hands them over must end them).
   */
  async close(graceMs: number): Promise<void> {
    this.stopping = true;
    clearInterval(this.sweep);
    const closed = this.drain();
    for (const conn of this.connections) conn.closeIfIdle();
    const deadline = setTimeout(() => {
      for (const conn of this.connections) conn.socket.destroy();
    }, graceMs);
    await closed;
    clearTimeout(deadline);
  }
}
