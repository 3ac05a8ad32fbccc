/**
 * The data-plane proxy: the single public entry point. `/desktop/<path>/...` goes to that
 * desktop's upstream (from the in-memory route table), everything else to the control plane,
 * both through the same forwarding code; WebSocket upgrades are piped raw. `/healthz` and
 * `/readyz` are answered here, `/metrics` only on the internal metrics listener.
 *
 * The public listener is a bare `http.Server`: a request to a desktop costs a Map get, one pass
 * over its headers and an undici dispatch, with no framework in between.
 */
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Agent } from 'undici';
import { createLogger, type Logger } from '@deskhub/config';
import type { Route, RouteSubscriber } from '@deskhub/route-stream';
import { sendError, sendRedirect, wantsHtml, writeRawError } from './errors.ts';
import { forward, type ForwardSettings } from './forward.ts';
import { rawHeader, requestHeaders } from './headers.ts';
import { ProxyMetrics } from './metrics.ts';
import { DESKTOP_PREFIX, entryRedirect, splitDesktopTarget, unsafeTarget, type DesktopTarget } from './paths.ts';
import { Targets, upstreamChanged, type UpstreamTarget } from './targets.ts';
import { OpenConnections, pipeUpgrade, type UpgradeSettings } from './websocket.ts';

export type AccessDecision =
  | { allow: true; userId?: string }
  | { allow: false; status: 401 | 403; message: string; redirectTo?: string };

/** Called for every request and every upgrade to a desktop, with its route. */
export type AccessHook = (req: IncomingMessage, route: Route, kind: 'http' | 'upgrade') => AccessDecision | Promise<AccessDecision>;

export interface ProxyOptions {
  /** The proxy calls subscriber.start() and close(). */
  subscriber: RouteSubscriber;
  /** Paths outside /desktop/ are forwarded here; unset: 404 JSON for them. */
  controlPlaneUrl?: string;
  /** The public address users see (its scheme becomes X-Forwarded-Proto). */
  publicUrl?: string;
  /** Public listener, default 127.0.0.1:8080 (port 0 picks a free port). */
  host?: string;
  port?: number;
  /** Internal listener for /metrics (+ /healthz, /readyz); undefined or null: none. */
  metricsPort?: number | null;
  metricsHost?: string;
  /** Largest request body in bytes, default 10 MiB; larger: 413. */
  bodyLimit?: number;
  /** Time to the upstream's response headers, default 30 s; longer: 504. */
  upstreamTimeoutMs?: number;
  /** Default: allow everything, and only when authMode is 'dev'. */
  authorize?: AccessHook;
  authMode?: 'dev' | 'oidc';
  logger?: Logger;
}

export interface RunningProxy {
  url: string;
  port: number;
  metricsUrl?: string;
  server: http.Server;
  /** Settles when the route subscriber has started (subscribed; not necessarily ready). */
  started: Promise<void>;
  close(): Promise<void>;
}

const DEFAULT_BODY_LIMIT = 10 * 1024 * 1024;
const DEFAULT_UPSTREAM_TIMEOUT_MS = 30_000;
/** Longer than the 60 s idle timeout of nginx and most load balancers in front, so they close first. */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;
const HEADERS_TIMEOUT_MS = 60_000;
/** A response body may pause this long between chunks (a desktop's long download, a slow client). */
const UPSTREAM_BODY_TIMEOUT_MS = 3_600_000;
/** Keep-alive connections per upstream origin: many, since one per desktop ran at 0.6x (proxy-notes.md). */
const CONNECTIONS_PER_UPSTREAM = 128;
const CLOSE_GRACE_MS = 5_000;

function urlOf(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function listen(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

function isThenable<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as Promise<T> | undefined)?.then === 'function';
}

export async function startProxy(options: ProxyOptions): Promise<RunningProxy> {
  const authMode = options.authMode;
  if (options.authorize === undefined && authMode !== 'dev') {
    throw new Error('startProxy: an access hook (authorize) is required unless AUTH_MODE is dev; the proxy never lets everyone through by default');
  }
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const upstreamTimeoutMs = options.upstreamTimeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS;
  if (!Number.isInteger(bodyLimit) || bodyLimit < 0) throw new Error('startProxy: bodyLimit must be a whole number of bytes');
  if (!Number.isInteger(upstreamTimeoutMs) || upstreamTimeoutMs <= 0) throw new Error('startProxy: upstreamTimeoutMs must be a positive whole number');
  const logger = options.logger ?? createLogger('proxy');
  const authorize = options.authorize ?? null;
  const subscriber = options.subscriber;
  const proto = options.publicUrl ? new URL(options.publicUrl).protocol.replace(/:$/, '') : 'http';

  const metrics = new ProxyMetrics(subscriber);
  const agentOptions = {
    connections: CONNECTIONS_PER_UPSTREAM,
    headersTimeout: upstreamTimeoutMs,
    bodyTimeout: UPSTREAM_BODY_TIMEOUT_MS,
  };
  const connectTimeout = Math.min(upstreamTimeoutMs, 10_000);
  const verifying = new Agent({ ...agentOptions, connect: { timeout: connectTimeout } });
  const trusting = new Agent({ ...agentOptions, connect: { timeout: connectTimeout, rejectUnauthorized: false } });
  const targets = new Targets({ verifying, trusting }, options.controlPlaneUrl);
  const connections = new OpenConnections();
  const forwardSettings: ForwardSettings = { metrics, logger, bodyLimit };
  const upgradeSettings: UpgradeSettings = { metrics, logger, upstreamTimeoutMs, connections };

  // Request ids: the caller's X-Request-Id if it sent one, else a cheap unique one passed upstream.
  const idPrefix = randomBytes(4).toString('hex') + '-';
  let requestCounter = 0;
  const nextRequestId = (): string => idPrefix + (++requestCounter).toString(36);

  const onRouteChange = (path: string, before: Route | undefined, after: Route | undefined): void => {
    if (!upstreamChanged(before, after)) return;
    const closed = connections.close(path);
    if (closed > 0) logger.info({ route: path, closed, withdrawn: after === undefined }, 'closed open connections of a changed route');
  };
  subscriber.on('change', onRouteChange);

  // ---- plain HTTP ---------------------------------------------------------------------------

  const reply = (res: ServerResponse, status: number, message: string, req: IncomingMessage, extra?: Record<string, string>): void => {
    metrics.countResponse(status);
    const html = wantsHtml(rawHeader(req.rawHeaders, 'accept'));
    sendError(res, status, message, extra ? { html, headers: extra } : { html });
  };

  const notFoundDesktop = (req: IncomingMessage, res: ServerResponse, name: string): void => {
    if (!subscriber.ready) reply(res, 503, 'The proxy is still loading its route table; try again in a moment.', req, { 'retry-after': '1' });
    else reply(res, 404, `There is no desktop at ${DESKTOP_PREFIX}${name}/.`, req);
  };

  const deny = (req: IncomingMessage, res: ServerResponse, decision: Extract<AccessDecision, { allow: false }>): void => {
    const html = wantsHtml(rawHeader(req.rawHeaders, 'accept'));
    if (html && decision.redirectTo && (req.method === 'GET' || req.method === 'HEAD')) {
      metrics.countResponse(302);
      sendRedirect(res, decision.redirectTo);
      return;
    }
    metrics.countResponse(decision.status);
    sendError(res, decision.status, decision.message, { html });
  };

  const accessFailed = (req: IncomingMessage, res: ServerResponse, err: unknown): void => {
    logger.error({ err, reqUrl: req.url }, 'access hook failed');
    reply(res, 500, 'The access check failed.', req);
  };

  const forwardToDesktop = (req: IncomingMessage, res: ServerResponse, route: Route, desktop: DesktopTarget, url: string): void => {
    const target = targets.forRoute(route);
    const method = req.method;
    if (method === 'GET' || method === 'HEAD') {
      const location = entryRedirect(desktop, target.entry);
      if (location !== null) {
        metrics.countResponse(302);
        sendRedirect(res, location);
        return;
      }
    }
    subscriber.recordActivity(route.path);
    let path = url;
    if (target.strip) {
      const rest = desktop.rest;
      path = rest === '' ? '/' : rest.charCodeAt(0) === 63 /* ? */ ? '/' + rest : rest;
    }
    const facts = requestHeaders(req.rawHeaders, target, req.socket.remoteAddress, proto, nextRequestId(), false);
    forward(forwardSettings, req, res, target, path, facts, wantsHtml(facts.accept));
  };

  const desktopRequest = (req: IncomingMessage, res: ServerResponse, url: string): void => {
    const unsafe = unsafeTarget(url);
    if (unsafe !== null) {
      reply(res, 400, `Refused: ${unsafe}.`, req);
      return;
    }
    const desktop = splitDesktopTarget(url) as DesktopTarget;
    const route = desktop.name === '' ? undefined : subscriber.table.get(desktop.name);
    if (route === undefined) {
      notFoundDesktop(req, res, desktop.name);
      return;
    }
    if (authorize === null) {
      forwardToDesktop(req, res, route, desktop, url);
      return;
    }
    let decision: AccessDecision | Promise<AccessDecision>;
    try {
      decision = authorize(req, route, 'http');
    } catch (err) {
      accessFailed(req, res, err);
      return;
    }
    const proceed = (d: AccessDecision): void => {
      if (!d.allow) deny(req, res, d);
      else if (!res.destroyed) forwardToDesktop(req, res, route, desktop, url);
    };
    if (isThenable(decision)) decision.then(proceed, (err: unknown) => accessFailed(req, res, err));
    else proceed(decision);
  };

  const controlPlaneRequest = (req: IncomingMessage, res: ServerResponse, url: string): void => {
    const unsafe = unsafeTarget(url);
    if (unsafe !== null) {
      reply(res, 400, `Refused: ${unsafe}.`, req);
      return;
    }
    const target = targets.controlPlane;
    if (target === null) {
      reply(res, 404, 'Not found: this proxy serves only /desktop/ paths.', req);
      return;
    }
    const facts = requestHeaders(req.rawHeaders, target, req.socket.remoteAddress, proto, nextRequestId(), false);
    forward(forwardSettings, req, res, target, target.basePath + url, facts, wantsHtml(facts.accept));
  };

  const health = (res: ServerResponse, path: string): boolean => {
    if (path === '/healthz') {
      sendJson(res, 200, { status: 'ok' });
      return true;
    }
    if (path === '/readyz') {
      if (subscriber.ready) sendJson(res, 200, { status: 'ready', routeVersion: subscriber.version, routes: subscriber.table.size });
      else sendJson(res, 503, { statusCode: 503, error: 'Service Unavailable', message: 'The route table is not loaded yet.' });
      return true;
    }
    return false;
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url as string;
    if (url.startsWith(DESKTOP_PREFIX)) {
      desktopRequest(req, res, url);
      return;
    }
    const path = pathOf(url);
    if (health(res, path)) return;
    if (path === '/metrics') {
      reply(res, 404, 'Not found: metrics are served on the internal metrics listener only.', req);
      return;
    }
    controlPlaneRequest(req, res, url);
  };

  // ---- upgrades (WebSocket) -----------------------------------------------------------------

  const rawDeny = (socket: Duplex, status: number, message: string, req: IncomingMessage): void => {
    metrics.countResponse(status);
    writeRawError(socket, status, message, wantsHtml(rawHeader(req.rawHeaders, 'accept')));
  };

  const startPipe = (req: IncomingMessage, socket: Duplex, head: Buffer, target: UpstreamTarget, path: string): void => {
    if (socket.destroyed) return;
    const facts = requestHeaders(req.rawHeaders, target, req.socket.remoteAddress, proto, nextRequestId(), true);
    let handshake = `${req.method} ${path} HTTP/1.1\r\nHost: ${target.authority}\r\nConnection: Upgrade\r\n`;
    const h = facts.headers;
    for (let i = 0; i < h.length; i += 2) handshake += `${h[i]}: ${h[i + 1]}\r\n`;
    handshake += '\r\n';
    const route = target.route;
    const stillCurrent = route === null ? () => true : () => subscriber.table.get(route.path) === route;
    pipeUpgrade(upgradeSettings, socket, head, target, handshake, false, stillCurrent);
  };

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    const url = req.url as string;
    const unsafe = unsafeTarget(url);
    if (unsafe !== null) {
      rawDeny(socket, 400, `Refused: ${unsafe}.`, req);
      return;
    }
    const upgrade = rawHeader(req.rawHeaders, 'upgrade');
    if (upgrade === undefined || upgrade.trim().toLowerCase() !== 'websocket') {
      rawDeny(socket, 400, 'Only WebSocket upgrades are supported.', req);
      return;
    }
    const desktop = splitDesktopTarget(url);
    if (desktop === null) {
      const target = targets.controlPlane;
      if (target === null) rawDeny(socket, 404, 'Not found: this proxy serves only /desktop/ paths.', req);
      else startPipe(req, socket, head, target, target.basePath + url);
      return;
    }
    const route = desktop.name === '' ? undefined : subscriber.table.get(desktop.name);
    if (route === undefined) {
      if (!subscriber.ready) rawDeny(socket, 503, 'The proxy is still loading its route table; try again in a moment.', req);
      else rawDeny(socket, 404, `There is no desktop at ${DESKTOP_PREFIX}${desktop.name}/.`, req);
      return;
    }
    const target = targets.forRoute(route);
    const go = (): void => {
      subscriber.recordActivity(route.path);
      let path = url;
      if (target.strip) path = desktop.rest === '' ? '/' : desktop.rest.charCodeAt(0) === 63 ? '/' + desktop.rest : desktop.rest;
      startPipe(req, socket, head, target, path);
    };
    if (authorize === null) {
      go();
      return;
    }
    const proceed = (d: AccessDecision): void => {
      if (d.allow) go();
      else rawDeny(socket, d.status, d.message, req);
    };
    const failed = (err: unknown): void => {
      logger.error({ err, reqUrl: url }, 'access hook failed');
      rawDeny(socket, 500, 'The access check failed.', req);
    };
    try {
      const decision = authorize(req, route, 'upgrade');
      if (isThenable(decision)) decision.then(proceed, failed);
      else proceed(decision);
    } catch (err) {
      failed(err);
    }
  };

  // ---- the listeners ------------------------------------------------------------------------

  const server = http.createServer(
    {
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
      headersTimeout: HEADERS_TIMEOUT_MS,
      // Whole-request timeout off: a 100 MiB upload on a slow line is legitimate; header
      // slowloris is bounded by headersTimeout. Upgraded sockets leave the parser and these
      // timeouts at the handshake.
      requestTimeout: 0,
      noDelay: true,
    },
    onRequest,
  );
  server.on('upgrade', onUpgrade);
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => socket.destroy());
    rawDeny(socket, 405, 'CONNECT is not supported.', req);
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // A request Node could not parse: garbage, CR/LF inside headers, headers over 16 KiB.
    const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const message =
      status === 431 ? 'The request headers are too large.' : status === 408 ? 'The request took too long to arrive.' : 'The request is not valid HTTP.';
    metrics.countResponse(status);
    writeRawError(socket, status, message);
  });

  let port: number;
  const host = options.host ?? '127.0.0.1';
  let metricsServer: http.Server | null = null;
  let metricsUrl: string | undefined;
  try {
    port = await listen(server, options.port ?? 8080, host);
    if (options.metricsPort !== undefined && options.metricsPort !== null) {
      metricsServer = http.createServer((req, res) => {
        const path = pathOf(req.url ?? '/');
        if (health(res, path)) return;
        if (path === '/metrics' && (req.method === 'GET' || req.method === 'HEAD')) {
          metrics.registry.metrics().then(
            (text) => {
              res.writeHead(200, { 'content-type': metrics.registry.contentType });
              res.end(req.method === 'HEAD' ? undefined : text);
            },
            (err: unknown) => {
              logger.error({ err }, 'collecting metrics failed');
              sendError(res, 500, 'Collecting metrics failed.', { html: false });
            },
          );
          return;
        }
        sendError(res, 404, 'Not found: this listener serves /metrics, /healthz and /readyz.', { html: false });
      });
      const metricsHost = options.metricsHost ?? '127.0.0.1';
      const mport = await listen(metricsServer, options.metricsPort, metricsHost);
      metricsUrl = urlOf(metricsHost, mport);
    }
  } catch (err) {
    server.close();
    metricsServer?.close();
    subscriber.off('change', onRouteChange);
    await Promise.allSettled([verifying.destroy(), trusting.destroy()]);
    throw err;
  }

  let closing: Promise<void> | null = null;
  // The listeners are up before the route stream: /healthz answers and /readyz says 503 while
  // the table loads (or while Redis is still unreachable), as an orchestrator expects.
  const started = subscriber.start();
  started.catch((err: unknown) => {
    if (closing === null) logger.error({ err }, 'the route subscriber failed to start');
  });

  if (authorize === null) logger.warn('AUTH_MODE=dev: the proxy lets every request through to every desktop');
  const url = urlOf(host, port);
  logger.info({ url, metricsUrl, controlPlaneUrl: options.controlPlaneUrl }, 'proxy listening');

  const close = (): Promise<void> => {
    closing ??= (async () => {
      subscriber.off('change', onRouteChange);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      connections.closeAll();
      metricsServer?.close();
      metricsServer?.closeAllConnections();
      // Requests in flight get a moment to finish; then their connections are cut.
      const grace = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      await closed;
      clearTimeout(grace);
      await Promise.allSettled([verifying.destroy(), trusting.destroy(), subscriber.close()]);
    })();
    return closing;
  };

  return { url, port, metricsUrl, server, started, close };
}
