/**
 * HTTP forwarding: one request from the public listener to an upstream and its response back,
 * both bodies streamed with backpressure and never held whole.
 *
 * It drives undici's dispatcher directly with a small handler object (one per request) instead
 * of `undici.request` or `http.request`: no intermediate Readable, no header object, and the
 * per-origin keep-alive pools of an undici Agent (many connections each, not one).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { Logger } from '@deskhub/config';
import { sendError } from './errors.ts';
import type { RequestFacts } from './headers.ts';
import { responseHeaders } from './headers.ts';
import type { ProxyMetrics, UpstreamErrorKind } from './metrics.ts';
import type { UpstreamTarget } from './targets.ts';

export const BODY_TOO_LARGE = 'DESKHUB_BODY_TOO_LARGE';

class BodyTooLargeError extends Error {
  readonly code = BODY_TOO_LARGE;
  constructor() {
    super('request body too large');
  }
}

/** Counts a body of unknown length (chunked) and fails the upload once it passes the limit. */
class BodyLimit extends Transform {
  private seen = 0;
  constructor(private readonly limit: number) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) done(new BodyTooLargeError());
    else done(null, chunk);
  }
}

export interface ForwardSettings {
  metrics: ProxyMetrics;
  logger: Logger;
  bodyLimit: number;
}

/** What an upstream failure means for the user, and for the metrics. */
export function classifyUpstreamError(err: NodeJS.ErrnoException): { status: number; kind: UpstreamErrorKind; message: string } {
  const code = err.code ?? '';
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
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
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return { status: 502, kind: 'reset', message: 'The upstream closed the connection before answering.' };
    default:
      if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY/i.test(code) || /certificate/i.test(err.message)) {
        return { status: 502, kind: 'tls', message: 'The upstream certificate could not be verified.' };
      }
      return { status: 502, kind: 'protocol', message: 'The upstream sent a response the proxy could not use.' };
  }
}

/** One request in flight: undici's (legacy, raw-header) dispatch handler. */
class Exchange implements Dispatcher.DispatchHandler {
  private abortUpstream: ((reason?: Error) => void) | null = null;
  private resumeUpstream: (() => void) | null = null;
  private clientGone = false;
  private finished = false;
  private status = 0;

  constructor(
    private readonly settings: ForwardSettings,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly target: UpstreamTarget,
    private readonly html: boolean,
  ) {
    res.on('close', this.onClientClose);
  }

  private readonly onClientClose = (): void => {
    if (this.finished) return;
    this.clientGone = true;
    this.abortUpstream?.();
  };

  private readonly onDrain = (): void => {
    this.resumeUpstream?.();
  };

  onConnect(abort: (reason?: Error) => void): void {
    if (this.clientGone) abort();
    else this.abortUpstream = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true; // 1xx: undici reports informational responses; the final one follows
    this.resumeUpstream = resume;
    this.status = statusCode;
    try {
      this.res.writeHead(statusCode, responseHeaders(rawHeaders, statusCode, this.target));
    } catch (err) {
      // An upstream header Node refuses to write (bad characters): the user gets a 502, not a crash.
      this.settings.logger.warn({ err, upstream: this.target.origin }, 'unusable upstream response headers');
      this.settings.metrics.upstreamErrors.protocol++;
      this.fail(502, 'The upstream sent a response the proxy could not use.');
      this.abortUpstream?.();
      return false;
    }
    return true;
  }

  onData(chunk: Buffer): boolean {
    const ok = this.res.write(chunk);
    if (!ok) this.res.once('drain', this.onDrain);
    return ok;
  }

  onComplete(): void {
    this.finished = true;
    this.settings.metrics.countResponse(this.status);
    this.res.end();
  }

  onError(err: Error): void {
    if (this.finished) return;
    this.finished = true;
    if (this.clientGone) return;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === BODY_TOO_LARGE) {
      this.fail(413, `The request body is larger than ${this.settings.bodyLimit} bytes.`, true);
      return;
    }
    if (code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH' || code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED') {
      this.fail(400, 'The request could not be forwarded as sent.', true);
      return;
    }
    if (this.res.headersSent) {
      // The response was already under way: all the client can learn is that it was cut.
      this.settings.metrics.upstreamErrors.reset++;
      this.res.destroy();
      return;
    }
    const { status, kind, message } = classifyUpstreamError(err as NodeJS.ErrnoException);
    this.settings.metrics.upstreamErrors[kind]++;
    this.settings.logger.warn(
      { upstream: this.target.origin, route: this.target.key || undefined, code, reqMethod: this.req.method, reqUrl: this.req.url },
      `upstream error: ${err.message}`,
    );
    this.fail(status, message, !this.req.complete);
  }

  private fail(status: number, message: string, close = false): void {
    this.finished = true;
    this.settings.metrics.countResponse(status);
    sendError(this.res, status, message, { html: this.html, close });
  }
}

/**
 * Sends `req` to `target` at `path` (already rewritten) with the headers from `facts`, and
 * streams the answer into `res`. Errors become the proxy's own 413/502/504 answers.
 */
export function forward(settings: ForwardSettings, req: IncomingMessage, res: ServerResponse, target: UpstreamTarget, path: string, facts: RequestFacts, html: boolean): void {
  let body: IncomingMessage | BodyLimit | null = null;
  if (facts.contentLength > 0) {
    if (facts.contentLength > settings.bodyLimit) {
      settings.metrics.countResponse(413);
      sendError(res, 413, `The request body is larger than ${settings.bodyLimit} bytes.`, { html, close: true });
      return;
    }
    body = req;
  } else if (facts.chunked) {
    const limit = new BodyLimit(settings.bodyLimit);
    req.pipe(limit);
    body = limit;
  }
  res.sendDate = false; // the upstream's Date header is passed on
  const exchange = new Exchange(settings, req, res, target, html);
  target.dispatcher.dispatch(
    {
      origin: target.origin,
      path,
      method: req.method as Dispatcher.HttpMethod,
      headers: facts.headers,
      body,
    },
    exchange,
  );
}
