/**
 * Answers the proxy makes itself. Errors a person can read: `{statusCode, error, message}`
 * JSON for API clients (the project's one error shape), a small HTML page for browsers; never a
 * stack trace. The same answers are written to raw sockets for WebSocket upgrades and for
 * requests that could not be parsed.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * What answering needs of a request on the public listener (front.ts's ProxyRequest). Declared
 * here rather than imported, so that front.ts, which writes its own errors with this module,
 * and this module do not import each other.
 */
export interface AnswerableRequest {
  readonly headSent: boolean;
  readonly socket: { destroy(): void };
  respond(status: number, headers: string, body?: string): void;
}

/** true when the client prefers a page: a browser navigation sends Accept: text/html. */
export function wantsHtml(accept: string | undefined): boolean {
  return accept !== undefined && accept.includes('text/html');
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function reason(status: number): string {
  return STATUS_CODES[status] ?? 'Error';
}

export function errorBody(status: number, message: string, html: boolean): { type: string; body: string } {
  const error = reason(status);
  if (!html) {
    return { type: 'application/json; charset=utf-8', body: JSON.stringify({ statusCode: status, error, message }) };
  }
  const title = `${status} ${escapeHtml(error)}`;
  return {
    type: 'text/html; charset=utf-8',
    body: `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<style>body{font:16px system-ui,sans-serif;margin:3rem auto;max-width:36rem;padding:0 1rem;color:#1d2a3a}h1{font-size:1.4rem}</style>
</head><body><main><h1>${title}</h1><p>${escapeHtml(message)}</p><p><a href="/">deskhub home</a></p></main></body></html>
`,
  };
}

/** An error answer to a request on the public listener. `extra`: preformatted header lines. */
export function errorAnswer(req: AnswerableRequest, status: number, message: string, html: boolean, extra = ''): void {
  if (req.headSent) {
    req.socket.destroy();
    return;
  }
  const { type, body } = errorBody(status, message, html);
  req.respond(status, `content-type: ${type}\r\ncache-control: no-store\r\n${extra}`, body);
}

export function redirectAnswer(req: AnswerableRequest, location: string): void {
  req.respond(302, `location: ${location}\r\ncache-control: no-store\r\n`);
}

/** An error on a plain Node response (the internal metrics listener). */
export function sendError(res: ServerResponse, status: number, message: string): void {
  const { type, body } = errorBody(status, message, false);
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

/** Writes a complete HTTP/1.1 error response to a socket that is not (or no longer) an HTTP response. */
export function writeRawError(socket: Duplex, status: number, message: string, html = false, extra = ''): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const { type, body } = errorBody(status, message, html);
  socket.write(
    `HTTP/1.1 ${status} ${reason(status)}\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `Cache-Control: no-store\r\nConnection: close\r\n${extra}\r\n${body}`,
  );
  // Server sockets allow half-open connections: close for real once the answer is flushed.
  if (socket instanceof Socket) socket.destroySoon();
  else socket.end();
}
