/**
 * The data-plane proxy: the single public entry point. `/desktop/<path>/...` goes to that
 * desktop's upstream (from the in-memory route table), everything else to the control plane,
 * both through the same forwarding code; WebSocket upgrades are piped raw. `/healthz` and
 * `/readyz` are answered on both listeners, `/metrics` only on the internal metrics listener.
 *
 * `startProxy` is the wiring: it checks the options, builds the pools, targets and the Router
 * (router.ts, which decides where each request and upgrade goes), starts the metrics listener and
 * the route subscriber, opens the public listener once the first route snapshot is loaded, and
 * drains (a rolling restart) or closes it all in order.
 *
 * A request to a desktop costs a Map get, one pass over its headers and a write to a pooled
 * upstream connection: the HTTP/1.1 engine (front.ts, upstream.ts) is the proxy's own, on
 * Node's llhttp, with no framework or general-purpose client in between (see http1.ts for why).
 */
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger, type Logger } from '@deskhub/config';
import type { Route, RouteSubscriber } from '@deskhub/route-stream';
import type { DesktopOrigins } from '@deskhub/access-token';
import { sendError } from './errors.ts';
import { FrontServer } from './front.ts';
import { ProxyMetrics } from './metrics.ts';
import { pathOf } from './paths.ts';
import { Router, type AccessHook, type Readiness } from './router.ts';
import { ConnectedViewers, SHARE_ENDED_CLOSE, stillShared } from './shares.ts';
import { Targets, upstreamChanged } from './targets.ts';
import { Upstreams } from './upstream.ts';
import { OpenConnections, type UpgradeSettings } from './websocket.ts';

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
  /** DESKTOP_ORIGIN: each desktop is served on an origin of its own, and only there. */
  desktopOrigins?: DesktopOrigins;
  logger?: Logger;
  /**
   * Ends the wait for the first route snapshot (a stop signal before the public port opened):
   * startProxy then rejects with an AbortError, having closed what it opened.
   */
  signal?: AbortSignal;
}

export interface RunningProxy {
  /** Where the public listener listens: it does from before startProxy resolves (port 0: the port the kernel gave). */
  url: string;
  port: number;
  metricsUrl?: string;
  server: http.Server;
  /** The route subscriber has started; settled before startProxy resolves (it waits for the first snapshot). */
  started: Promise<void>;
  /**
   * The rolling-restart stop: the public port closes at once (new connections are refused and go
   * to other replicas); requests in flight finish; idle keep-alive connections stay open and the
   * next answer on each says `Connection: close`, then it closes; WebSockets stay up until
   * `timeoutMs` has passed, then get 1001 "deskhub is restarting; reconnect" at a frame boundary
   * (`close()` during the drain does that at once). Ends early once no connection is left.
   * Resolves when the proxy is closed (as `close()` would). Calling it again returns the same drain.
   */
  drain(timeoutMs: number): Promise<void>;
  /**
   * Stops now: listener closed, idle connections closed, WebSockets closed with 1001 at a frame
   * boundary, requests in flight given up to 5 s, then cut. During a drain: ends the drain this way.
   */
  close(): Promise<void>;
}

/** The close reason every WebSocket gets when this proxy stops (RFC 6455 7.4.1: 1001, going away). */
export const RESTART_CLOSE_REASON = 'deskhub is restarting; reconnect';

const DEFAULT_BODY_LIMIT = 10 * 1024 * 1024;
const DEFAULT_UPSTREAM_TIMEOUT_MS = 30_000;
/** Longer than the 60 s idle timeout of nginx and most load balancers in front, so they close first. */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;
const HEADERS_TIMEOUT_MS = 60_000;
/** A response body may pause this long between chunks (a desktop's long download, a slow client). */
const UPSTREAM_BODY_TIMEOUT_MS = 3_600_000;
/** Keep-alive connections per upstream origin: many, since one per desktop ran at 0.6x (proxy-notes.md). */
const CONNECTIONS_PER_UPSTREAM = 128;
/** An idle pooled upstream connection is closed after this (Node servers close theirs after 5 s). */
const UPSTREAM_IDLE_TIMEOUT_MS = 4_000;
const CLOSE_GRACE_MS = 5_000;
/** While the public port waits for the first route snapshot, the log says so this often. */
const SNAPSHOT_WAIT_LOG_MS = 10_000;

function urlOf(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function abortError(): Error {
  const err = new Error('startProxy: stopped before the first route snapshot; the public port never opened');
  err.name = 'AbortError';
  return err;
}

/**
 * Resolves once the subscriber holds its first snapshot; rejects if its start fails or `signal`
 * aborts. Says in the log that the public port waits, and again every SNAPSHOT_WAIT_LOG_MS.
 */
function firstSnapshot(subscriber: RouteSubscriber, started: Promise<void>, signal: AbortSignal | undefined, logger: Logger): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortError());
  if (subscriber.ready) return Promise.resolve();
  const since = Date.now();
  logger.info('waiting for the first route snapshot: the public port opens once it is loaded (health and readiness answer on the metrics port meanwhile)');
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err?: unknown): void => {
      if (done) return;
      done = true;
      clearInterval(nag);
      subscriber.off('ready', onReady);
      signal?.removeEventListener('abort', onAbort);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onReady = (): void => finish();
    const onAbort = (): void => finish(abortError());
    const nag = setInterval(() => {
      logger.warn({ waitedS: Math.round((Date.now() - since) / 1000) }, 'still no route snapshot (is Redis reachable?): the public port stays closed until one is loaded');
    }, SNAPSHOT_WAIT_LOG_MS);
    subscriber.on('ready', onReady);
    signal?.addEventListener('abort', onAbort, { once: true });
    started.catch((err: unknown) => finish(err));
    if (subscriber.ready) finish();
  });
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
  const upstreams = new Upstreams({
    metrics,
    logger,
    upstreamTimeoutMs,
    bodyTimeoutMs: UPSTREAM_BODY_TIMEOUT_MS,
    idleTimeoutMs: UPSTREAM_IDLE_TIMEOUT_MS,
    maxConnections: CONNECTIONS_PER_UPSTREAM,
  });
  const targets = new Targets(options.controlPlaneUrl);
  const connections = new OpenConnections();
  const upgradeSettings: UpgradeSettings = { metrics, logger, upstreamTimeoutMs, connections };

  // Request ids: the caller's X-Request-Id if it sent one, else a cheap unique one passed upstream.
  const idPrefix = randomBytes(4).toString('hex') + '-';
  let requestCounter = 0;
  const nextRequestId = (): string => idPrefix + (++requestCounter).toString(36);

  const onRouteChange = (path: string, before: Route | undefined, after: Route | undefined): void => {
    const disconnected = after?.disconnected;
    if (disconnected !== undefined && disconnected !== before?.disconnected) {
      // Held disconnected (the idle clock): the browser shows the reason from the close frame (4000,
      // an application code, RFC 6455 7.4.2) after the desktop's frame in progress. New upgrades
      // are refused (router.ts) until a route without it arrives; plain HTTP goes on.
      const closed = connections.close(path, 4000, disconnected);
      const cut = upstreamChanged(before, after) ? upstreams.cutRoute(path) : 0;
      // Not at a first load (before undefined) with nothing open: a start would log every held route.
      if (before !== undefined || closed > 0) logger.info({ route: path, closed, cut, reason: disconnected }, 'closed the WebSockets of a desktop held disconnected');
      return;
    }
    if (!upstreamChanged(before, after)) {
      // A share revoked, ended or changed in mode: exactly the WebSockets opened with it close.
      if (before !== undefined && after !== undefined && before.shares !== after.shares && before.shares.length > 0) {
        const closed = connections.closeWhere(path, (tag) => !stillShared(after, tag), SHARE_ENDED_CLOSE, 'Your access to this desktop was revoked.');
        if (closed > 0) logger.info({ route: path, closed }, 'closed the WebSockets of revoked shares');
      }
      return;
    }
    // The browser is told why (RFC 6455 7.4.1: 1001, going away), after the desktop's frame in progress.
    const closed = connections.close(path, 1001, after === undefined ? 'The desktop is no longer running.' : 'The desktop moved; reconnect.');
    const cut = upstreams.cutRoute(path);
    if (closed > 0 || cut > 0) logger.info({ route: path, closed, cut, withdrawn: after === undefined }, 'closed open connections and cut requests of a changed route');
  };
  subscriber.on('change', onRouteChange);
  // A desktop with a WebSocket open here is "connected" at every flush, even with no traffic.
  subscriber.setConnectedPaths(() => connections.keys());
  // Who has which desktop open, and as what ("connected now" in the control plane).
  const viewers = new ConnectedViewers();
  subscriber.setConnectedViewers(() => viewers.keys());

  const readiness = (): Readiness =>
    metrics.draining
      ? { status: 503, body: JSON.stringify({ statusCode: 503, error: 'Service Unavailable', message: 'The proxy is shutting down.' }) }
      : subscriber.ready
        ? { status: 200, body: JSON.stringify({ status: 'ready', routeVersion: subscriber.version, routes: subscriber.table.size }) }
        : { status: 503, body: JSON.stringify({ statusCode: 503, error: 'Service Unavailable', message: 'The route table is not loaded yet.' }) };

  const router = new Router({
    subscriber,
    targets,
    upstreams,
    authorize,
    metrics,
    logger,
    upgrades: upgradeSettings,
    nextRequestId,
    bodyLimit,
    proto,
    readiness,
    desktopOrigins: options.desktopOrigins ?? null,
    viewers,
  });

  // ---- the listeners ------------------------------------------------------------------------

  const front = new FrontServer(
    {
      bodyLimit,
      headersTimeoutMs: HEADERS_TIMEOUT_MS,
      keepAliveTimeoutMs: KEEP_ALIVE_TIMEOUT_MS,
      logger,
      countResponse: (status) => metrics.countResponse(status),
    },
    router,
  );
  const server = front.server;

  // The metrics listener comes first and answers /healthz and /readyz from the start. The public
  // one opens only once the first route snapshot is loaded: nginx (open source) has no active
  // health checks and never sees "not ready", only refused connections and the answers it gets,
  // so a port that accepted before the table was loaded would answer 503s it cannot tell from a
  // desktop's. Until then the port refuses connections and nginx uses the other replicas. The
  // port is not reserved meanwhile (a bound socket that does not listen is not something Node
  // offers, and a listening one with a backlog accepts connections at the TCP level): with port
  // 0 the kernel picks it when the listener opens, so `url` and `port` are always where it listens.
  const host = options.host ?? '127.0.0.1';
  let metricsServer: http.Server | null = null;
  let metricsUrl: string | undefined;
  let started: Promise<void> = Promise.resolve();
  let port: number;
  try {
    if (options.metricsPort !== undefined && options.metricsPort !== null) {
      metricsServer = http.createServer((req: IncomingMessage, res: ServerResponse) => {
        const path = pathOf(req.url ?? '/');
        if (path === '/healthz' || path === '/readyz') {
          const { status, body } = path === '/healthz' ? { status: 200, body: '{"status":"ok"}' } : readiness();
          res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
          res.end(body);
          return;
        }
        if (path === '/metrics' && (req.method === 'GET' || req.method === 'HEAD')) {
          metrics.registry.metrics().then(
            (text) => {
              res.writeHead(200, { 'content-type': metrics.registry.contentType });
              res.end(req.method === 'HEAD' ? undefined : text);
            },
            (err: unknown) => {
              logger.error({ err }, 'collecting metrics failed');
              sendError(res, 500, 'Collecting metrics failed.');
            },
          );
          return;
        }
        sendError(res, 404, 'Not found: this listener serves /metrics, /healthz and /readyz.');
      });
      const metricsHost = options.metricsHost ?? '127.0.0.1';
      const mport = await listen(metricsServer, options.metricsPort, metricsHost);
      metricsUrl = urlOf(metricsHost, mport);
      logger.info({ metricsUrl }, 'metrics listener up (/metrics, /healthz, /readyz)');
    }
    started = subscriber.start();
    started.catch(() => undefined); // a failure is the wait's (below), not an unhandled rejection
    await firstSnapshot(subscriber, started, options.signal, logger);
    port = await listen(server, options.port ?? 8080, host);
  } catch (err) {
    if ((err as Error).name !== 'AbortError') logger.error({ err }, 'the proxy could not start');
    await front.close(0);
    metricsServer?.close();
    metricsServer?.closeAllConnections();
    subscriber.off('change', onRouteChange);
    subscriber.setConnectedPaths(null);
    subscriber.setConnectedViewers(null);
    upstreams.destroy();
    await subscriber.close().catch(() => undefined);
    throw err;
  }

  if (authorize === null) logger.warn('AUTH_MODE=dev: the proxy lets every request through to every desktop');
  const url = urlOf(host, port);
  logger.info({ url, metricsUrl, controlPlaneUrl: options.controlPlaneUrl, routeVersion: subscriber.version, routes: subscriber.table.size }, 'proxy listening');

  let closing: Promise<void> | null = null;
  let draining: Promise<void> | null = null;
  let endDrainNow: (() => void) | null = null;

  const counts = () => ({ httpConnections: front.connections.size, idle: front.idleConnections(), webSockets: connections.size });

  /** The last phase of every stop: WebSockets get 1001, HTTP connections close, then the rest. */
  const shutDown = (): Promise<void> => {
    closing ??= (async () => {
      metrics.draining = true;
      router.draining = true;
      subscriber.off('change', onRouteChange);
      // Each gets its close frame after the desktop's frame in progress (at most 5 s, websocket.ts);
      // one whose browser does not read it is cut with the rest after the grace.
      const sockets = connections.closeAll(1001, RESTART_CLOSE_REASON);
      logger.info({ ...counts(), webSockets: sockets.length }, 'closing: WebSockets get 1001 at a frame boundary, idle connections close, requests in flight get up to 5 s');
      const cut = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, CLOSE_GRACE_MS);
      subscriber.setConnectedPaths(null);
      subscriber.setConnectedViewers(null);
      metricsServer?.close();
      metricsServer?.closeAllConnections();
      // The listener's close waits for upgraded sockets too; one still in its access check when the
      // WebSockets were closed is not among them: after the grace and a second, it is cut and not waited for.
      let bound: NodeJS.Timeout | undefined;
      await Promise.race([front.close(CLOSE_GRACE_MS), new Promise<void>((resolve) => (bound = setTimeout(resolve, CLOSE_GRACE_MS + 1000)))]);
      clearTimeout(bound);
      clearTimeout(cut);
      connections.closeAll();
      upstreams.destroy();
      await subscriber.close().catch((err: unknown) => logger.warn({ err }, 'closing the route subscriber failed'));
      logger.info('proxy closed');
    })();
    return closing;
  };

  const drain = (timeoutMs: number): Promise<void> => {
    if (draining !== null) return draining;
    if (closing !== null) return closing;
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) throw new RangeError('drain: timeoutMs must be a number of milliseconds, 0 or more');
    const t0 = Date.now();
    metrics.draining = true;
    router.draining = true;
    const allClosed = front.drain();
    logger.info(
      { timeoutMs, ...counts() },
      'draining: the public port is closed; requests in flight finish, each connection closes after its next answer (Connection: close), WebSockets stay open until the drain timeout',
    );
    draining = (async () => {
      let timer: NodeJS.Timeout | undefined;
      let progress: NodeJS.Timeout | undefined;
      const why = await new Promise<'nothing left' | 'timeout' | 'stop'>((resolve) => {
        void allClosed.then(() => resolve('nothing left'));
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
        endDrainNow = () => resolve('stop');
        // Once the last HTTP connection has closed, the log says so (WebSockets may hold on).
        let httpDone = front.connections.size === 0;
        progress = setInterval(() => {
          if (httpDone || front.connections.size > 0) return;
          httpDone = true;
          logger.info({ afterMs: Date.now() - t0, webSockets: connections.size }, 'draining: every HTTP connection has closed');
        }, 250);
      });
      clearTimeout(timer);
      clearInterval(progress);
      endDrainNow = null;
      logger.info({ why, afterMs: Date.now() - t0, ...counts() }, why === 'nothing left' ? 'drain over: no connection left' : why === 'timeout' ? 'drain timeout reached' : 'drain ended early: stop asked again');
      await shutDown();
    })();
    return draining;
  };

  const close = (): Promise<void> => {
    if (draining !== null) {
      endDrainNow?.();
      return draining;
    }
    return shutDown();
  };

  return { url, port, metricsUrl, server, started, drain, close };
}
