/**
 * The upstream side of HTTP forwarding: a keep-alive pool per upstream origin (up to
 * `maxConnections` each, never one per desktop; proxy-notes.md), and the `Exchange` that carries
 * one request there and its response back to the browser.
 *
 * Bodies stream both ways with backpressure: a browser that reads slowly pauses the upstream
 * socket, an upstream that reads slowly pauses the browser's. The response is re-framed for the
 * browser (Content-Length kept, otherwise chunked, or close-delimited for HTTP/1.0 clients).
 *
 * A plain-TCP upstream socket is read by its llhttp parser directly (`consumeSocket`): no
 * 'data' event or Buffer per read. What one read produces for the browser (head, body,
 * framing) is gathered and written with one system call (`writeParts`) when the read is done.
 */
import net from 'node:net';
import type { Logger } from '@deskhub/config';
import { errorAnswer } from './errors.ts';
import type { BodySink, ProxyRequest, RequestListener } from './front.ts';
import { responseHeaderLines } from './headers.ts';
import { connectUpstreamTls } from './upstream-tls.ts';
import {
  closeParserLater,
  consumeSocket,
  HTTPParser,
  kOnBody,
  kOnExecute,
  kOnHeaders,
  kOnHeadersComplete,
  kOnMessageComplete,
  setReading,
  SKIP_BODY,
  writeParts,
  type ParseError,
  type Parser,
} from './http1.ts';
import type { ProxyMetrics, UpstreamErrorKind } from './metrics.ts';
import type { UpstreamTarget } from './targets.ts';

export interface UpstreamSettings {
  metrics: ProxyMetrics;
  logger: Logger;
  /** Until the response head arrives (connecting included): longer is a 504. */
  upstreamTimeoutMs: number;
  /** Longest pause inside a response body. */
  bodyTimeoutMs: number;
  /** Idle time after which a pooled connection is closed (shortened by the upstream's Keep-Alive hint). */
  idleTimeoutMs: number;
  maxConnections: number;
}

/** What an upstream failure means for the user, and for the metrics. */
export function classifyUpstreamError(err: NodeJS.ErrnoException): { status: number; kind: UpstreamErrorKind; message: string } {
  const code = err.code ?? '';
  switch (code) {
    case 'ETIMEDOUT':
    case 'DESKHUB_UPSTREAM_TIMEOUT':
      return { status: 504, kind: 'timeout', message: 'The upstream did not answer in time.' };
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return { status: 502, kind: 'refused', message: 'The upstream is not answering (connection refused).' };
    case 'ECONNRESET':
    case 'EPIPE':
    case 'DESKHUB_UPSTREAM_CLOSED':
      return { status: 502, kind: 'reset', message: 'The upstream closed the connection before answering.' };
    default:
      if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY/i.test(code) || /certificate/i.test(err.message)) {
        return { status: 502, kind: 'tls', message: 'The upstream certificate could not be verified.' };
      }
      return { status: 502, kind: 'protocol', message: 'The upstream sent a response the proxy could not use.' };
  }
}

function upstreamError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}


/** All pools of one proxy. */
export class Upstreams {
  private readonly pools = new Map<string, UpstreamPool>();
  /** Every open connection, for the deadline sweep (one timer, not one per request). */
  readonly connections = new Set<UpstreamConnection>();
  private readonly sweep: NodeJS.Timeout;

  constructor(readonly settings: UpstreamSettings) {
    this.sweep = setInterval(() => {
      const now = Date.now();
      for (const conn of this.connections) conn.checkDeadline(now);
    }, 250);
    this.sweep.unref();
  }

  /** Sends `exchange` over a pooled connection to its target. */
  dispatch(exchange: Exchange): void {
    const target = exchange.target;
    const key = target.poolKey;
    let pool = this.pools.get(key);
    if (pool === undefined) {
      pool = new UpstreamPool(this, key, target);
      this.pools.set(key, pool);
    }
    pool.acquire(exchange);
  }

  /**
   * Cuts every exchange of one route (withdrawn, or moved to another upstream): those under way
   * on a connection and those waiting for one. A scan over open connections and queues, done only
   * when a route changes, so a request pays nothing for it. Returns how many were cut.
   */
  cutRoute(key: string): number {
    const cut: Exchange[] = [];
    for (const conn of this.connections) if (conn.exchange !== null && conn.exchange.target.key === key) cut.push(conn.exchange);
    for (const pool of this.pools.values()) for (const exchange of pool.waiting) if (exchange.target.key === key) cut.push(exchange);
    for (const exchange of cut) exchange.cut();
    return cut.length;
  }

  forget(pool: UpstreamPool): void {
    if (this.pools.get(pool.key) === pool) this.pools.delete(pool.key);
  }

  destroy(): void {
    clearInterval(this.sweep);
    for (const pool of this.pools.values()) pool.destroy();
    this.pools.clear();
  }
}

export class UpstreamPool {
  readonly idle: UpstreamConnection[] = [];
  readonly waiting: Exchange[] = [];
  size = 0;
  session: Buffer | undefined;
  readonly hostname: string;
  readonly port: number;
  readonly tls: boolean;
  readonly verifyTls: boolean;

  constructor(
    readonly upstreams: Upstreams,
    readonly key: string,
    target: UpstreamTarget,
  ) {
    this.hostname = target.hostname;
    this.port = target.port;
    this.tls = target.tls;
    this.verifyTls = target.verifyTls;
  }

  get settings(): UpstreamSettings {
    return this.upstreams.settings;
  }

  acquire(exchange: Exchange): void {
    const conn = this.idle.pop();
    if (conn !== undefined) conn.assign(exchange);
    else if (this.size < this.settings.maxConnections) this.open(exchange);
    else {
      exchange.queuedIn = this;
      this.waiting.push(exchange);
    }
  }

  private open(exchange: Exchange): void {
    this.size++;
    new UpstreamConnection(this, exchange);
  }

  released(conn: UpstreamConnection): void {
    const next = this.waiting.shift();
    if (next !== undefined) {
      next.queuedIn = null;
      conn.assign(next);
    }
    else {
      this.idle.push(conn);
      conn.parkIdle();
    }
  }

  closed(conn: UpstreamConnection): void {
    this.size--;
    const i = this.idle.indexOf(conn);
    if (i !== -1) this.idle.splice(i, 1);
    const next = this.waiting.shift();
    if (next !== undefined) {
      next.queuedIn = null;
      this.open(next);
    } else if (this.size === 0) this.upstreams.forget(this);
  }

  cancel(exchange: Exchange): void {
    exchange.queuedIn = null;
    const i = this.waiting.indexOf(exchange);
    if (i !== -1) this.waiting.splice(i, 1);
  }

  destroy(): void {
    for (const exchange of this.waiting.splice(0)) {
      exchange.queuedIn = null;
      exchange.fail(upstreamError('DESKHUB_UPSTREAM_CLOSED', 'proxy closing'));
    }
    for (const conn of [...this.idle]) conn.socket.destroy();
  }
}

class UpstreamConnection {
  readonly socket: net.Socket;
  readonly parser: Parser = new HTTPParser();
  exchange: Exchange | null = null;
  /** Has carried a complete exchange before (a reset on reuse may be a stale keep-alive). */
  reused = false;
  private closed = false;
  /** The parser reads the socket itself (plain TCP); TLS sockets deliver 'data' events instead. */
  private readonly consumed: boolean;
  private idleTimeoutMs: number;
  /** Its response completed in the read being parsed; settled after it (settle()). */
  private completed: Exchange | null = null;
  /** When the current wait ends (epoch ms, stamped when the wait starts; 0: none): for the response head, a body pause, or idling. */
  private deadline = 0;

  constructor(
    readonly pool: UpstreamPool,
    first: Exchange,
  ) {
    const settings = pool.settings;
    this.idleTimeoutMs = settings.idleTimeoutMs;
    if (pool.tls) {
      this.socket = connectUpstreamTls(pool.hostname, pool.port, pool.verifyTls, pool.session);
      this.socket.on('session', (session: Buffer) => (pool.session = session));
    } else {
      this.socket = net.connect({ host: pool.hostname, port: pool.port });
    }
    const socket = this.socket;
    socket.setNoDelay(true);
    const parser = this.parser;
    parser.initialize(HTTPParser.RESPONSE, {});
    let partial: string[] = [];
    parser[kOnHeaders] = (headers: string[]) => {
      for (const h of headers) partial.push(h);
    };
    parser[kOnHeadersComplete] = (
      _major: number,
      minor: number,
      headers: string[] | undefined,
      _method: unknown,
      _url: unknown,
      status: number,
      statusMessage: string,
      _upgrade: boolean,
      keepAlive: boolean,
    ): number => {
      if (headers === undefined) {
        headers = partial;
        partial = [];
      }
      const exchange = this.exchange;
      if (exchange === null) {
        // A response nobody asked for (sent ahead of its request, or after one already
        // complete): the connection is out of step and never used again.
        this.closed = true;
        socket.destroy();
        return SKIP_BODY;
      }
      return exchange.onHead(status, statusMessage, headers, minor, keepAlive && minor === 1);
    };
    parser[kOnBody] = (chunk: Buffer) => this.exchange?.onBody(chunk);
    parser[kOnMessageComplete] = () => {
      // A chunked response's trailer fields came through onHeaders: they are not passed on, and
      // must never become the next response's headers.
      if (partial.length > 0) partial = [];
      const exchange = this.exchange;
      if (exchange !== null && exchange.onComplete()) {
        // Settled once this read has been parsed (settle()): llhttp goes on parsing the rest of
        // the read, and bytes after a complete response must find no exchange to answer, never
        // the next request's (which would be sent on this connection as soon as it is released).
        this.exchange = null;
        this.completed = exchange;
      }
    };
    this.consumed = !pool.tls && consumeSocket(parser, socket);
    if (this.consumed) parser[kOnExecute] = this.onExecute;
    else socket.on('data', (chunk: Buffer) => this.onExecute(parser.execute(chunk)));
    socket.on('drain', this.onDrain);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    pool.upstreams.connections.add(this);
    this.attach(first);
  }

  assign(exchange: Exchange): void {
    this.reused = true;
    this.attach(exchange);
  }

  private attach(exchange: Exchange): void {
    this.exchange = exchange;
    exchange.conn = this;
    this.deadline = Date.now() + this.pool.settings.upstreamTimeoutMs;
    exchange.begin();
  }

  /** Called by the exchange once its response is complete. */
  done(reusable: boolean, keepAliveSeconds: number): void {
    this.exchange = null;
    if (!reusable || this.closed) {
      this.socket.destroy();
      return;
    }
    // A slow browser may have paused the socket on the response's last chunk.
    this.setReading(true);
    if (keepAliveSeconds >= 0) {
      // Leave a second of margin before the upstream's own idle timeout.
      this.idleTimeoutMs = Math.min(this.pool.settings.idleTimeoutMs, keepAliveSeconds * 1000 - 1000);
      if (this.idleTimeoutMs <= 0) {
        this.socket.destroy();
        return;
      }
    }
    this.pool.released(this);
  }

  parkIdle(): void {
    this.deadline = Date.now() + this.idleTimeoutMs;
  }

  /** From the exchange: the response head arrived; the body may pause this long. */
  headReceived(): void {
    this.deadline = Date.now() + this.pool.settings.bodyTimeoutMs;
  }

  /** From the sweep. */
  checkDeadline(now: number): void {
    if (this.deadline !== 0 && now > this.deadline && !this.closed) this.onTimeout();
  }

  /** Pauses (false) or resumes reading the upstream: backpressure from a slow browser. */
  setReading(on: boolean): void {
    if (this.consumed) setReading(this.socket, on);
    else if (on) this.socket.resume();
    else this.socket.pause();
  }

  /** After each read has been parsed: what it produced goes to the browser in one write. */
  private readonly onExecute = (ret: number | ParseError): void => {
    const exchange = this.exchange;
    if (exchange !== null) {
      if (exchange.headSeen) this.deadline = Date.now() + this.pool.settings.bodyTimeoutMs;
      exchange.flush();
    }
    if (typeof ret !== 'number') this.protocolError(ret);
    this.settle();
  };

  /** A response completed in the read just parsed: the browser gets its end, the connection is released. */
  private settle(): void {
    const exchange = this.completed;
    if (exchange === null) return;
    this.completed = null;
    exchange.complete();
  }

  private protocolError(err: ParseError): void {
    const exchange = this.exchange;
    this.exchange = null;
    this.closed = true;
    this.socket.destroy();
    exchange?.fail(Object.assign(new Error(`unusable upstream response: ${err.code}`), { code: 'DESKHUB_UPSTREAM_PROTOCOL' }));
  }

  private readonly onDrain = (): void => {
    this.exchange?.req.conn.bodyUnblocked();
  };

  private readonly onEnd = (): void => {
    // A response delimited by the connection's end is complete now.
    if (this.exchange !== null) {
      const ret = this.parser.finish();
      if (ret !== undefined && typeof ret !== 'number') this.protocolError(ret);
      this.settle();
    }
    this.socket.destroy();
  };

  private onTimeout(): void {
    const exchange = this.exchange;
    this.exchange = null;
    this.closed = true;
    this.socket.destroy();
    if (exchange !== null) exchange.fail(upstreamError('DESKHUB_UPSTREAM_TIMEOUT', 'upstream timed out'));
  }

  private readonly onError = (err: Error): void => {
    const exchange = this.exchange;
    this.exchange = null;
    this.closed = true;
    this.socket.destroy();
    exchange?.fail(err);
  };

  private readonly onClose = (): void => {
    this.closed = true;
    this.pool.upstreams.connections.delete(this);
    const exchange = this.exchange;
    this.exchange = null;
    this.pool.closed(this);
    if (this.consumed) this.parser.unconsume();
    closeParserLater(this.parser);
    exchange?.fail(upstreamError('DESKHUB_UPSTREAM_CLOSED', 'upstream closed the connection'));
  };
}

/** One request carried to an upstream and its response back (also the request body's sink). */
export class Exchange implements BodySink, RequestListener {
  conn: UpstreamConnection | null = null;
  /** The pool whose queue this exchange waits in for a connection. */
  queuedIn: UpstreamPool | null = null;
  private headReceived = false;
  /** The final response head has been parsed (the body timeout applies from here). */
  get headSeen(): boolean {
    return this.headReceived;
  }
  private informational = false;
  private finished = false;
  /** Re-frame the response body as chunked for the browser. */
  private chunkedOut = false;
  private closeClient = false;
  private upstreamKeepAlive = false;
  private keepAliveSeconds = -1;
  private status = 0;
  private bodyEnded = false;
  private retried = false;
  /** What the current upstream read produced for the browser, written at its end (flush). */
  private readonly out: (string | Buffer)[] = [];

  constructor(
    private readonly upstreams: Upstreams,
    readonly req: ProxyRequest,
    readonly target: UpstreamTarget,
    private readonly head: string,
    private readonly html: boolean,
  ) {
    req.listener = this;
  }

  start(): void {
    this.upstreams.dispatch(this);
  }

  /** Writes the request head and whatever body there is, once a connection is assigned. */
  begin(): void {
    const socket = (this.conn as UpstreamConnection).socket;
    if (!this.req.hasBody) {
      socket.write(this.head, 'latin1');
      return;
    }
    socket.cork();
    socket.write(this.head, 'latin1');
    this.req.attachBody(this);
    socket.uncork();
  }

  // ---- request body (BodySink) ----

  write(chunk: Buffer): boolean {
    const conn = this.conn;
    if (conn === null || this.finished) return true;
    const socket = conn.socket;
    if (this.req.chunked) {
      socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
      socket.write(chunk);
      return socket.write('\r\n', 'latin1');
    }
    return socket.write(chunk);
  }

  end(): void {
    this.bodyEnded = true;
    if (this.req.chunked && this.conn !== null && !this.finished) this.conn.socket.write('0\r\n\r\n', 'latin1');
  }

  // ---- response (from the connection's parser) ----

  onHead(status: number, statusMessage: string, headers: string[], versionMinor: number, keepAlive: boolean): number {
    if (status < 200) {
      if (status === 101) return this.unusable('unexpected 101 from upstream'); // never asked for: upgrades do not come through here
      this.informational = true; // 100 Continue, 103 Early Hints: the final response follows
      return SKIP_BODY;
    }
    const parts = responseHeaderLines(headers, status, this.target);
    // A body framed in a way the proxy cannot follow exactly as the upstream meant it (a coding
    // other than one final chunked, chunked twice, Transfer-Encoding from an HTTP/1.0 server,
    // RFC 9112 §6.1 and §6.3) would be passed on wrong or never end: 502, connection discarded.
    if (parts.transferEncoding !== undefined && (versionMinor === 0 || parts.transferEncoding.trim().toLowerCase() !== 'chunked')) {
      return this.unusable(`unusable Transfer-Encoding from upstream: ${parts.transferEncoding}`);
    }
    const req = this.req;
    this.headReceived = true;
    this.status = status;
    this.upstreamKeepAlive = keepAlive;
    this.conn?.headReceived();
    this.keepAliveSeconds = parts.keepAliveSeconds;
    const noBody = req.method === 'HEAD' || status === 204 || status === 304;
    let framing = '';
    let close = req.closeAfter;
    if (!noBody && !parts.hasLength) {
      if (req.versionMinor === 1) {
        this.chunkedOut = true;
        framing = 'transfer-encoding: chunked\r\n';
      } else {
        close = true; // HTTP/1.0: the body ends with the connection
      }
    }
    this.closeClient = close;
    let connection = close ? 'connection: close\r\n' : req.versionMinor === 0 ? 'connection: keep-alive\r\n' : '';
    // Upgrade is hop-by-hop: a 426 names what this proxy itself can upgrade to (RFC 9110 §15.5.22, §7.8).
    if (status === 426) connection = `upgrade: websocket\r\nconnection: upgrade${close ? ', close' : req.versionMinor === 0 ? ', keep-alive' : ''}\r\n`;
    req.headSent = true;
    this.out.push(`HTTP/1.1 ${status} ${statusMessage || 'Unknown'}\r\n${parts.lines}${framing}${connection}\r\n`);
    return noBody ? SKIP_BODY : 0;
  }

  /** The response cannot be passed on: 502 to the browser, the upstream connection discarded. */
  private unusable(why: string): number {
    const conn = this.conn;
    this.fail(upstreamError('DESKHUB_UPSTREAM_PROTOCOL', why));
    conn?.socket.destroy();
    return SKIP_BODY;
  }

  onBody(chunk: Buffer): void {
    if (this.finished) return;
    if (this.chunkedOut) this.out.push(`${chunk.length.toString(16)}\r\n`, chunk, '\r\n');
    else this.out.push(chunk);
  }

  /** Writes what the last upstream read produced; a browser that does not keep up pauses the upstream. */
  flush(): void {
    if (this.out.length === 0 || this.finished) return;
    if (!writeParts(this.req.socket, this.out)) this.conn?.setReading(false);
  }

  /** The upstream's message is complete; true for the final response (then complete() follows). */
  onComplete(): boolean {
    if (this.informational) {
      this.informational = false;
      return false;
    }
    if (this.finished) return false;
    if (this.chunkedOut) this.out.push('0\r\n\r\n');
    return true;
  }

  /** After the read that completed the response: its last bytes go out, the connection is released. */
  complete(): void {
    if (this.finished) return;
    const req = this.req;
    this.flush();
    this.finished = true;
    this.upstreams.settings.metrics.countResponse(this.status);
    // The upstream connection is reusable only if the request went out whole.
    const reusable = this.upstreamKeepAlive && (!req.hasBody || this.bodyEnded);
    const conn = this.conn;
    this.conn = null;
    // The connection goes back to the pool first, so the browser's next request can take it.
    conn?.done(reusable, this.keepAliveSeconds);
    req.end(!this.closeClient);
  }

  clientDrained(): void {
    this.conn?.setReading(true);
  }

  clientGone(): void {
    if (this.finished) return;
    this.finished = true;
    this.out.length = 0;
    const conn = this.conn;
    this.conn = null;
    if (conn !== null) conn.socket.destroy();
    else this.queuedIn?.cancel(this); // still waiting for a connection: nothing was sent
  }

  /**
   * The route changed under this request (withdrawn or moved): the upstream side is dropped; a
   * browser still waiting for the head gets a 503 (a new request finds the route's new state), one
   * already receiving the body has its connection cut.
   */
  cut(): void {
    if (this.finished) return;
    const under = this.headReceived || this.req.headSent;
    this.clientGone();
    if (under) this.req.socket.destroy();
    else errorAnswer(this.req, 503, 'The desktop was stopped or moved while this request was under way.', this.html, 'retry-after: 1\r\n');
  }

  /** The upstream failed (or the proxy gave up on it). */
  fail(err: NodeJS.ErrnoException): void {
    if (this.finished) return;
    const conn = this.conn;
    this.conn = null;
    const settings = this.upstreams.settings;
    if (this.headReceived || this.req.headSent) {
      // The response was under way: all the browser can learn is that it was cut.
      this.finished = true;
      this.out.length = 0;
      settings.metrics.upstreamErrors.reset++;
      this.req.socket.destroy();
      return;
    }
    // A pooled connection the upstream had closed meanwhile: try once on a fresh one, when the
    // request can safely be sent again (GET/HEAD/OPTIONS without a body).
    const method = this.req.method;
    if (conn !== null && conn.reused && !this.retried && !this.req.hasBody && (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') && (err.code === 'ECONNRESET' || err.code === 'EPIPE' || err.code === 'DESKHUB_UPSTREAM_CLOSED')) {
      this.retried = true;
      this.upstreams.dispatch(this);
      return;
    }
    this.finished = true;
    const { status, kind, message } =
      err.code === 'DESKHUB_UPSTREAM_PROTOCOL'
        ? { status: 502, kind: 'protocol' as const, message: 'The upstream sent a response the proxy could not use.' }
        : classifyUpstreamError(err);
    settings.metrics.upstreamErrors[kind]++;
    settings.logger.warn(
      { upstream: this.target.origin, route: this.target.key || undefined, code: err.code, reqMethod: this.req.method, reqUrl: this.req.url },
      `upstream error: ${err.message}`,
    );
    errorAnswer(this.req, status, message, this.html);
  }
}
