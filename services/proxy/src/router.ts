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
import { desktopOrigin, labelOfHost, type AccessRole, type DesktopOrigins } from '@deskhub/access-token';
import type { Route, RouteSubscriber } from '@deskhub/route-stream';
import { errorAnswer, redirectAnswer, wantsHtml, writeRawError } from './errors.ts';
import type { FrontHandlers, ProxyRequest } from './front.ts';
import { requestHead } from './headers.ts';
import type { RelayObserver } from './relay.ts';
import { RfbInputWatch, type RfbDialect } from './rfb-input.ts';
import type { ProxyMetrics } from './metrics.ts';
import { DESKTOP_PREFIX, entryRedirect, ownerOnlyPrefix, pathOf, splitDesktopTarget, unsafeTarget, type DesktopTarget } from './paths.ts';
import { upstreamChanged, type Targets, type UpstreamTarget } from './targets.ts';
import { Exchange, type Upstreams } from './upstream.ts';
import { pipeUpgrade, type PipeOptions, type UpgradeSettings } from './websocket.ts';
import { closeAtExpiry, ConnectedViewers, HANDOFF_EXCHANGE_PATH, shareTag, stillShared } from './shares.ts';

export type AccessDecision =
  | {
      allow: true;
      userId?: string;
      username?: string;
      /** Absent: the owner's rights. */
      role?: AccessRole;
      /** The share or link a viewer came in with: its WebSockets close when it goes from the route. */
      grant?: string;
      /** When that share ends (epoch ms): its WebSockets close then. */
      expiresAt?: number;
    }
  | { allow: false; status: 401 | 403; message: string; redirectTo?: string };

/**
 * Called for every request and every upgrade to a desktop, with its route. `req` carries the
 * URL, method, headers and socket; its body is not readable there (the proxy streams it).
 * `onDesktopOrigin`: the request came to the desktop's own origin (DESKTOP_ORIGIN), not the UI's.
 */
export type AccessHook = (req: IncomingMessage, route: Route, kind: 'http' | 'upgrade', onDesktopOrigin: boolean) => AccessDecision | Promise<AccessDecision>;

/** The Host header of a request (the front refused requests with more than one). */
function hostOf(req: ProxyRequest): string | undefined {
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') return raw[i + 1];
  }
  return undefined;
}

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
  /** DESKTOP_ORIGIN: each desktop is served on its own origin, and only there. */
  desktopOrigins: DesktopOrigins | null;
  viewers: ConnectedViewers;
}

const JSON_HEADERS = 'content-type: application/json; charset=utf-8\r\ncache-control: no-store\r\n';

/** What a refused upgrade of a desktop held disconnected says: the route's reason, then what to do. */
export function disconnectedMessage(reason: string): string {
  return `${/[.!?]$/.test(reason) ? reason : `${reason}.`} Reconnect it from deskhub.`;
}

function destroyOnError(this: Socket): void {
  this.destroy();
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
  private readonly desktopOrigins: DesktopOrigins | null;
  private readonly viewers: ConnectedViewers;

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
    this.desktopOrigins = settings.desktopOrigins;
    this.viewers = settings.viewers;
  }

  /**
   * With DESKTOP_ORIGIN: the label of the desktop origin a request came to, null for any other
   * host (the UI's). Without it: null, and nothing is read.
   */
  private originLabelOf(req: ProxyRequest): string | null {
    return this.desktopOrigins === null ? null : labelOfHost(this.desktopOrigins, hostOf(req));
  }

  // ---- plain HTTP ---------------------------------------------------------------------------

  request(req: ProxyRequest): void {
    const url = req.url;
    const label = this.originLabelOf(req);
    if (label !== null) {
      this.desktopOriginRequest(req, url, label);
      return;
    }
    if (url.startsWith(DESKTOP_PREFIX)) {
      if (this.desktopOrigins !== null) this.toDesktopOrigin(req, url, this.desktopOrigins);
      else this.desktopRequest(req, url, null);
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

  /** A request to a desktop's own origin: that desktop, or the token hand-off; nothing else is served there. */
  private desktopOriginRequest(req: ProxyRequest, url: string, label: string): void {
    if (url.startsWith(DESKTOP_PREFIX)) this.desktopRequest(req, url, label);
    else if (pathOf(url) === HANDOFF_EXCHANGE_PATH) this.controlPlaneRequest(req, url);
    else this.reply(req, 404, `Not found: this origin serves only its desktop, under ${DESKTOP_PREFIX}.`);
  }

  /**
   * A desktop path on the UI's origin while desktops have origins of their own: a page load is sent
   * to the desktop's origin (bookmarks keep working); anything else is refused, since a desktop's
   * pages must never run on the UI's origin.
   */
  private toDesktopOrigin(req: ProxyRequest, url: string, origins: DesktopOrigins): void {
    const unsafe = unsafeTarget(url);
    const name = splitDesktopTarget(url)!.name;
    if (unsafe !== null || name === '') {
      this.reply(req, unsafe === null ? 404 : 400, unsafe === null ? 'Not found.' : `Refused: ${unsafe}.`);
      return;
    }
    const location = `${desktopOrigin(origins, name)}${url}`;
    if (req.method === 'GET' || req.method === 'HEAD') redirectAnswer(req, location);
    else this.reply(req, 404, `Desktops are served on their own origins: this one is at ${desktopOrigin(origins, name)}.`);
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

  /**
   * What a signed-in user who is not the owner may not do, or null: the owner's own paths (Kasm's
   * `/api/`, the owner's `/Downloads/`), and viewing a desktop that has no read-only user.
   */
  private refusal(route: Route, desktop: DesktopTarget, role: AccessRole | undefined): string | null {
    if (role === undefined || role === 'owner') return null;
    const prefix = ownerOnlyPrefix(desktop.rest, route.ownerOnly);
    if (prefix !== null) return `Only the desktop's owner may use ${prefix} on it.`;
    if (role === 'view' && route.viewerAuthorization === undefined) return 'This desktop has no read-only user, so it cannot be viewed through a share.';
    return null;
  }

  private forwardToDesktop(req: ProxyRequest, route: Route, desktop: DesktopTarget, role?: AccessRole): void {
    const refused = this.refusal(route, desktop, role);
    if (refused !== null) {
      this.reply(req, 403, refused);
      return;
    }
    const view = role === 'view';
    const target = view ? this.targets.forViewer(route) : this.targets.forRoute(route);
    const method = req.method;
    if (method === 'GET' || method === 'HEAD') {
      const location = entryRedirect(desktop, target.entry);
      if (location !== null) {
        redirectAnswer(req, location);
        return;
      }
    }
    // A VNC desktop's activity is its input, seen in its WebSocket (rfb-input.ts), not page loads;
    // a viewer's requests are never a person working on it.
    if (route.activity?.on !== 'input' && !view) this.subscriber.recordActivity(route.path);
    // Someone is connected, whatever the activity counts (the "no connection" clock reads it).
    this.subscriber.recordPresence(route.path);
    let path = req.url;
    if (target.strip) {
      const rest = desktop.rest;
      path = rest === '' ? '/' : rest.charCodeAt(0) === 63 /* ? */ ? '/' + rest : rest;
    }
    this.send(req, target, path);
  }

  /** `label`: the desktop origin the request came to (null: the UI's origin, DESKTOP_ORIGIN unset). */
  private desktopRequest(req: ProxyRequest, url: string, label: string | null): void {
    const unsafe = unsafeTarget(url);
    if (unsafe !== null) {
      this.reply(req, 400, `Refused: ${unsafe}.`);
      return;
    }
    const desktop = splitDesktopTarget(url) as DesktopTarget;
    const route = desktop.name === '' ? undefined : this.subscriber.table.get(desktop.name);
    if (route === undefined || (label !== null && this.targets.forRoute(route).label !== label)) {
      // A desktop's origin serves that desktop only: another's path there does not exist.
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
      decision = authorize(req.incoming(), route, 'http', label !== null);
    } catch (err) {
      this.accessFailed(req, err);
      return;
    }
    const proceed = (d: AccessDecision): void => {
      if (req.finished) return; // the browser left meanwhile
      if (!d.allow) this.deny(req, d);
      else this.forwardToDesktop(req, route, desktop, d.role);
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

  /**
   * Set by the drain (RunningProxy.drain): a WebSocket opened now would only be closed again at
   * the drain's end, so upgrades that still arrive on open connections are answered 503, which
   * nginx (`proxy_next_upstream http_503`) retries on another replica before the browser sees it.
   */
  draining = false;

  /** A WebSocket handshake the front accepted (request-rules.ts: GET, HTTP/1.1, Upgrade naming websocket, not CONNECT). */
  upgrade(req: ProxyRequest, socket: Socket, head: Buffer): void {
    // Not a closure: one made here would share this call's scope, and so keep the request, its
    // head and the route alive for as long as the WebSocket lives.
    socket.on('error', destroyOnError);
    if (this.draining) {
      this.metrics.countResponse(503);
      writeRawError(socket, 503, 'deskhub is restarting; reconnect.', wantsHtml(req.accept), 'Retry-After: 1\r\n');
      return;
    }
    const url = req.url;
    const unsafe = unsafeTarget(url);
    if (unsafe !== null) {
      this.rawDeny(socket, 400, `Refused: ${unsafe}.`, req);
      return;
    }
    const desktop = splitDesktopTarget(url);
    const label = this.originLabelOf(req);
    if (desktop === null) {
      const target = this.targets.controlPlane;
      if (target === null || label !== null) this.rawDeny(socket, 404, label !== null ? `Not found: this origin serves only its desktop, under ${DESKTOP_PREFIX}.` : 'Not found: this proxy serves only /desktop/ paths.', req);
      else this.startPipe(req, socket, head, target, target.basePath + url);
      return;
    }
    if (label === null && this.desktopOrigins !== null) {
      this.rawDeny(socket, 404, `Desktops are served on their own origins: this one is at ${desktopOrigin(this.desktopOrigins, desktop.name || 'x')}.`, req);
      return;
    }
    const route = desktop.name === '' ? undefined : this.subscriber.table.get(desktop.name);
    if (route === undefined || (label !== null && this.targets.forRoute(route).label !== label)) {
      if (!this.subscriber.ready) this.rawDeny(socket, 503, 'The proxy is still loading its route table; try again in a moment.', req);
      else this.rawDeny(socket, 404, `There is no desktop at ${DESKTOP_PREFIX}${desktop.name}/.`, req);
      return;
    }
    const go = (d: Extract<AccessDecision, { allow: true }>): void => {
      const refused = this.refusal(route, desktop, d.role);
      if (refused !== null) {
        this.rawDeny(socket, 403, refused, req);
        return;
      }
      const view = d.role === 'view';
      const target = view ? this.targets.forViewer(route) : this.targets.forRoute(route);
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
      const options: PipeOptions = {};
      // A viewer's messages are never input (those that would be are dropped: rfb-view-filter.ts).
      if (activity?.on === 'input') {
        if (view) options.viewOnly = activity.rfb;
        else options.observe = this.inputWatch(route.path, activity.rfb);
      } else if (!view) this.subscriber.recordActivity(route.path);
      if (d.grant !== undefined && d.role !== undefined) {
        const tag = shareTag(d.grant, d.role);
        options.tag = tag;
        if (d.expiresAt !== undefined) closeAtExpiry(this.upgrades.connections, route.path, tag, d.expiresAt, socket);
      }
      if (d.username !== undefined) this.viewers.add(route.path, d.role ?? 'owner', d.username, socket);
      let path = url;
      if (target.strip) path = desktop.rest === '' ? '/' : desktop.rest.charCodeAt(0) === 63 ? '/' + desktop.rest : desktop.rest;
      this.startPipe(req, socket, head, target, path, options);
    };
    const authorize = this.authorize;
    if (authorize === null) {
      go({ allow: true });
      return;
    }
    const proceed = (d: AccessDecision): void => {
      if (d.allow) go(d);
      else this.rawDeny(socket, d.status, d.message, req);
    };
    const failed = (err: unknown): void => {
      this.logger.error({ err, reqUrl: url }, 'access hook failed');
      this.rawDeny(socket, 500, 'The access check failed.', req);
    };
    try {
      const decision = authorize(req.incoming(), route, 'upgrade', label !== null);
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

  private startPipe(req: ProxyRequest, socket: Socket, head: Buffer, target: UpstreamTarget, path: string, options: PipeOptions = {}): void {
    if (socket.destroyed) return;
    const handshake = requestHead(req, target, path, this.proto, this.nextRequestId(), true);
    const route = target.route;
    const subscriber = this.subscriber;
    const tag = options.tag;
    // A route withdrawn or moved while the access check ran must not leave a connection to the old
    // upstream behind, nor one whose share was revoked meanwhile. Any other change (state, a put
    // that changes nothing) replaces the route object but leaves the upstream: the connection stays.
    const stillCurrent = route === null ? () => true : () => {
      const now = subscriber.table.get(route.path);
      if (now === route) return tag === undefined || stillShared(now, tag);
      return now !== undefined && now.disconnected === undefined && !upstreamChanged(route, now) && (tag === undefined || stillShared(now, tag));
    };
    pipeUpgrade(this.upgrades, socket, head, target, handshake, false, stillCurrent, options);
  }
}
