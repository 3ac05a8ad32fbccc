/**
 * Where each request and upgrade on the public listener goes: to a desktop (after the access
 * hook), to the control plane, or answered here (health, readiness, refusals, entry redirects).
 *
 * The Router is the `FrontHandlers` of the front server, so a request reaches it as one method
 * call on one object: what startProxy made it from (route subscriber, targets, upstreams, access
 * hook, metrics, logger, request ids) is held in its own fields rather than looked up per request.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '@deskhub/config';
import type { Route, RouteSubscriber } from '@deskhub/route-stream';
import { errorAnswer, redirectAnswer, wantsHtml, writeRawError } from './errors.ts';
import type { FrontHandlers, ProxyRequest } from './front.ts';
import { requestHead } from './headers.ts';
import type { RelayObserver } from './relay.ts';
import { RfbInputWatch, type RfbDialect } from './rfb-input.ts';
import type { ProxyMetrics } from './metrics.ts';
import { DESKTOP_PREFIX, entryRedirect, pathOf, splitDesktopTarget, unsafeTarget, type DesktopTarget } from './paths.ts';
import { upstreamChanged, type Targets, type UpstreamTarget } from './targets.ts';
import { Exchange, type Upstreams } from './upstream.ts';
import { pipeUpgrade, type UpgradeSettings } from './websocket.ts';

export type AccessDecision =
  | { allow: true; userId?: string }
  | { allow: false; status: 401 | 403; message: string; redirectTo?: string };

/**
 * Called for every request and every upgrade to a desktop, with its route. `req` carries the
 * URL, method, headers and socket; its body is not readable there (the proxy streams it).
 */
export type AccessHook = (req: IncomingMessage, route: Route, kind: 'http' | 'upgrade') => AccessDecision | Promise<AccessDecision>;

/** What /readyz answers (on both listeners). */
export interface Readiness {
  status: number;
  body: string;
}

export interface RouterSettings {
  subscriber: RouteSubscriber;
  targets: Targets;
  upstreams: Upstreams;
  /** null: everyone passes (AUTH_MODE=dev without a hook). */
  authorize: AccessHook | null;
  metrics: ProxyMetrics;
  logger: Logger;
  upgrades: UpgradeSettings;
  nextRequestId: () => string;
  bodyLimit: number;
  /** Sent upstream as X-Forwarded-Proto. */
  proto: string;
  readiness: () => Readiness;
}

const JSON_HEADERS = 'content-type: application/json; charset=utf-8\r\ncache-control: no-store\r\n';

/** What a refused upgrade of a desktop held disconnected says: the route's reason, then what to do. */
export function disconnectedMessage(reason: string): string {
  return `${/[.!?]$/.test(reason) ? reason : `${reason}.`} Reconnect it from deskhub.`;
}

function isThenable<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as Promise<T> | undefined)?.then === 'function';
}

export class Router implements FrontHandlers {
  private readonly subscriber: RouteSubscriber;
  private readonly targets: Targets;
  private readonly upstreams: Upstreams;
  private readonly authorize: AccessHook | null;
  private readonly metrics: ProxyMetrics;
  private readonly logger: Logger;
  private readonly upgrades: UpgradeSettings;
  private readonly nextRequestId: () => string;
  private readonly bodyLimit: number;
  private readonly proto: string;
  private readonly readiness: () => Readiness;

  constructor(settings: RouterSettings) {
    this.subscriber = settings.subscriber;
    this.targets = settings.targets;
    this.upstreams = settings.upstreams;
    this.authorize = settings.authorize;
    this.metrics = settings.metrics;
    this.logger = settings.logger;
    this.upgrades = settings.upgrades;
    this.nextRequestId = settings.nextRequestId;
    this.bodyLimit = settings.bodyLimit;
    this.proto = settings.proto;
    this.readiness = settings.readiness;
  }

  // ---- plain HTTP ---------------------------------------------------------------------------

  request(req: ProxyRequest): void {
    const url = req.url;
    if (url.startsWith(DESKTOP_PREFIX)) {
      this.desktopRequest(req, url);
      return;
    }
    const path = pathOf(url);
    if (path === '/healthz') {
      req.respond(200, JSON_HEADERS, '{"status":"ok"}');
      return;
    }
    if (path === '/readyz') {
      const { status, body } = this.readiness();
      req.respond(status, JSON_HEADERS, body);
      return;
    }
    if (path === '/metrics') {
      this.reply(req, 404, 'Not found: metrics are served on the internal metrics listener only.');
      return;
    }
    this.controlPlaneRequest(req, url);
  }

  private reply(req: ProxyRequest, status: number, message: string, extra = ''): void {
    errorAnswer(req, status, message, wantsHtml(req.accept), extra);
  }

  private notFoundDesktop(req: ProxyRequest, name: string): void {
    if (!this.subscriber.ready) this.reply(req, 503, 'The proxy is still loading its route table; try again in a moment.', 'retry-after: 1\r\n');
    else this.reply(req, 404, `There is no desktop at ${DESKTOP_PREFIX}${name}/.`);
  }

  private deny(req: ProxyRequest, decision: Extract<AccessDecision, { allow: false }>): void {
    const html = wantsHtml(req.accept);
    if (html && decision.redirectTo && (req.method === 'GET' || req.method === 'HEAD')) redirectAnswer(req, decision.redirectTo);
    else errorAnswer(req, decision.status, decision.message, html);
  }

  private accessFailed(req: ProxyRequest, err: unknown): void {
    this.logger.error({ err, reqUrl: req.url }, 'access hook failed');
    this.reply(req, 500, 'The access check failed.');
  }

  private send(req: ProxyRequest, target: UpstreamTarget, path: string): void {
    if (req.contentLength > this.bodyLimit) {
      this.reply(req, 413, `The request body is larger than ${this.bodyLimit} bytes.`);
      return;
    }
    const head = requestHead(req, target, path, this.proto, this.nextRequestId(), false);
    new Exchange(this.upstreams, req, target, head, wantsHtml(req.accept)).start();
  }

  private forwardToDesktop(req: ProxyRequest, route: Route, desktop: DesktopTarget): void {
    const target = this.targets.forRoute(route);
    const method = req.method;
    if (method === 'GET' || method === 'HEAD') {
      const location = entryRedirect(desktop, target.entry);
      if (location !== null) {
        redirectAnswer(req, location);
        return;
      }
    }
    // A VNC desktop's activity is its input, seen in its WebSocket (rfb-input.ts), not page loads.
    if (route.activity?.on !== 'input') this.subscriber.recordActivity(route.path);
    // Someone is connected, whatever the activity counts (the "no connection" clock reads it).
    this.subscriber.recordPresence(route.path);
    let path = req.url;
    if (target.strip) {
      const rest = desktop.rest;
      path = rest === '' ? '/' : rest.charCodeAt(0) === 63 /* ? */ ? '/' + rest : rest;
    }
    this.send(req, target, path);
  }

  private desktopRequest(req: ProxyRequest, url: string): void {
    const unsafe = unsafeTarget(url);
    if (unsafe !== null) {
      this.reply(req, 400, `Refused: ${unsafe}.`);
      return;
    }
    const desktop = splitDesktopTarget(url) as DesktopTarget;
    const route = desktop.name === '' ? undefined : this.subscriber.table.get(desktop.name);
    if (route === undefined) {
      this.notFoundDesktop(req, desktop.name);
      return;
    }
    const authorize = this.authorize;
    if (authorize === null) {
      this.forwardToDesktop(req, route, desktop);
      return;
    }
    let decision: AccessDecision | Promise<AccessDecision>;
    try {
      decision = authorize(req.incoming(), route, 'http');
    } catch (err) {
      this.accessFailed(req, err);
      return;
    }
    const proceed = (d: AccessDecision): void => {
      if (req.finished) return; // the browser left meanwhile
      if (!d.allow) this.deny(req, d);
      else this.forwardToDesktop(req, route, desktop);
    };
    if (isThenable(decision)) decision.then(proceed, (err: unknown) => this.accessFailed(req, err));
    else proceed(decision);
  }

  private controlPlaneRequest(req: ProxyRequest, url: string): void {
    const unsafe = unsafeTarget(url);
    if (unsafe !== null) {
      this.reply(req, 400, `Refused: ${unsafe}.`);
      return;
    }
    const target = this.targets.controlPlane;
    if (target === null) {
      this.reply(req, 404, 'Not found: this proxy serves only /desktop/ paths.');
      return;
    }
    this.send(req, target, target.basePath + url);
  }

  // ---- upgrades (WebSocket) -----------------------------------------------------------------

  /** A WebSocket handshake the front accepted (request-rules.ts: GET, HTTP/1.1, Upgrade naming websocket, not CONNECT). */
  upgrade(req: ProxyRequest, socket: Socket, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const url = req.url;
    const unsafe = unsafeTarget(url);
    if (unsafe !== null) {
      this.rawDeny(socket, 400, `Refused: ${unsafe}.`, req);
      return;
    }
    const desktop = splitDesktopTarget(url);
    if (desktop === null) {
      const target = this.targets.controlPlane;
      if (target === null) this.rawDeny(socket, 404, 'Not found: this proxy serves only /desktop/ paths.', req);
      else this.startPipe(req, socket, head, target, target.basePath + url);
      return;
    }
    const route = desktop.name === '' ? undefined : this.subscriber.table.get(desktop.name);
    if (route === undefined) {
      if (!this.subscriber.ready) this.rawDeny(socket, 503, 'The proxy is still loading its route table; try again in a moment.', req);
      else this.rawDeny(socket, 404, `There is no desktop at ${DESKTOP_PREFIX}${desktop.name}/.`, req);
      return;
    }
    const target = this.targets.forRoute(route);
    const go = (): void => {
      // Held disconnected (the idle clock ran out): refused until the owner re-arms the desktop, and
      // neither activity nor presence. After the access check, so only those who may reach the
      // desktop learn why; on the table's latest route, as a change may have come during the check.
      const latest = this.subscriber.table.get(route.path) ?? route;
      if (latest.disconnected !== undefined) {
        this.rawDeny(socket, 409, disconnectedMessage(latest.disconnected), req);
        return;
      }
      this.subscriber.recordPresence(route.path);
      const activity = route.activity;
      let observe: RelayObserver | undefined;
      if (activity?.on === 'input') observe = this.inputWatch(route.path, activity.rfb);
      else this.subscriber.recordActivity(route.path);
      let path = url;
      if (target.strip) path = desktop.rest === '' ? '/' : desktop.rest.charCodeAt(0) === 63 ? '/' + desktop.rest : desktop.rest;
      this.startPipe(req, socket, head, target, path, observe);
    };
    const authorize = this.authorize;
    if (authorize === null) {
      go();
      return;
    }
    const proceed = (d: AccessDecision): void => {
      if (d.allow) go();
      else this.rawDeny(socket, d.status, d.message, req);
    };
    const failed = (err: unknown): void => {
      this.logger.error({ err, reqUrl: url }, 'access hook failed');
      this.rawDeny(socket, 500, 'The access check failed.', req);
    };
    try {
      const decision = authorize(req.incoming(), route, 'upgrade');
      if (isThenable(decision)) decision.then(proceed, failed);
      else proceed(decision);
    } catch (err) {
      failed(err);
    }
  }

  private rawDeny(socket: Socket, status: number, message: string, req: ProxyRequest): void {
    this.metrics.countResponse(status);
    writeRawError(socket, status, message, wantsHtml(req.accept));
  }

  /**
   * Records the route's activity on each input message the browser sends in this connection (the
   * subscriber keeps the latest per route and flushes it to the store in batches).
   */
  private inputWatch(routePath: string, dialect: RfbDialect): RelayObserver {
    const subscriber = this.subscriber;
    const logger = this.logger;
    const watch = new RfbInputWatch(dialect, {
      onInput: () => subscriber.recordActivity(routePath),
      onUntrusted: (why) => logger.warn({ route: routePath, dialect, why }, 'input watch cannot follow this RFB stream: the rest of the connection counts as input'),
    });
    return (chunk, start, length) => watch.feed(chunk, start, length);
  }

  private startPipe(req: ProxyRequest, socket: Socket, head: Buffer, target: UpstreamTarget, path: string, observe?: RelayObserver): void {
    if (socket.destroyed) return;
    const handshake = requestHead(req, target, path, this.proto, this.nextRequestId(), true);
    const route = target.route;
    const subscriber = this.subscriber;
    // A route withdrawn or moved while the access check ran must not leave a connection to the old
    // upstream behind. Any other change (sharing, state, a put that changes nothing) replaces the
    // route object but leaves the upstream: the connection stays.
    const stillCurrent = route === null ? () => true : () => {
      const now = subscriber.table.get(route.path);
      return now === route || (now !== undefined && now.disconnected === undefined && !upstreamChanged(route, now));
    };
    pipeUpgrade(this.upgrades, socket, head, target, handshake, false, stillCurrent, { observe });
  }
}
