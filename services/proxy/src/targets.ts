/**
 * Where a request goes (a desktop's upstream or the control plane) and what the proxy does on
 * the way, worked out once per route object and cached, so a request only does a WeakMap get.
 */
import { originLabel } from '@deskhub/access-token';
import type { Route } from '@deskhub/route-stream';
import { DESKTOP_PREFIX, parseEntryQuery, type EntryParam } from './paths.ts';

export interface UpstreamTarget {
  /** The desktop's route; null for the control plane. */
  route: Route | null;
  /** Key under which this target's WebSockets are tracked: the route's path, "" for the control plane. */
  key: string;
  /** scheme://host:port, lower case (Location rewriting compares against it). */
  origin: string;
  /** Host header for a raw WebSocket handshake. */
  authority: string;
  hostname: string;
  port: number;
  tls: boolean;
  verifyTls: boolean;
  /** Connections are pooled per (scheme, TLS verification, host, port). */
  poolKey: string;
  /** Path the control plane lives under ("" normally). */
  basePath: string;
  /** Public prefix of a desktop: "/desktop/<p>" ("" for the control plane). */
  prefix: string;
  strip: boolean;
  entry: EntryParam[];
  /** Injected Authorization (desktops only): the owner's, or for a viewer's target the read-only user's. */
  authorization: string | null;
  /** The DNS label of the desktop's own origin (DESKTOP_ORIGIN); "" for the control plane. */
  label: string;
}

function bracketed(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

function poolKey(tls: boolean, verify: boolean, hostname: string, port: number): string {
  return `${tls ? (verify ? 'https' : 'https-unverified') : 'http'}|${hostname}|${port}`;
}

export class Targets {
  private readonly cache = new WeakMap<Route, UpstreamTarget>();
  private readonly viewerCache = new WeakMap<Route, UpstreamTarget>();
  readonly controlPlane: UpstreamTarget | null;

  constructor(controlPlaneUrl: string | undefined) {
    this.controlPlane = controlPlaneUrl ? this.controlPlaneTarget(controlPlaneUrl) : null;
  }

  forRoute(route: Route): UpstreamTarget {
    let target = this.cache.get(route);
    if (target === undefined) {
      target = this.routeTarget(route);
      this.cache.set(route, target);
    }
    return target;
  }

  /**
   * The same desktop as a viewer reaches it: with the read-only user's credentials
   * (route.viewerAuthorization; none when the route has none, and the router refuses viewers then).
   */
  forViewer(route: Route): UpstreamTarget {
    let target = this.viewerCache.get(route);
    if (target === undefined) {
      target = { ...this.forRoute(route), authorization: route.viewerAuthorization ?? null };
      this.viewerCache.set(route, target);
    }
    return target;
  }

  private routeTarget(route: Route): UpstreamTarget {
    const { scheme, host, port, verifyTls } = route.upstream;
    const tls = scheme === 'https';
    const authority = `${bracketed(host)}:${port}`;
    const hostname = host.replace(/^\[|\]$/g, '');
    return {
      route,
      key: route.path,
      origin: `${scheme}://${authority}`.toLowerCase(),
      authority,
      hostname,
      port,
      tls,
      verifyTls: tls && verifyTls,
      poolKey: poolKey(tls, tls && verifyTls, hostname, port),
      basePath: '',
      prefix: DESKTOP_PREFIX + route.path,
      strip: route.stripPrefix,
      entry: parseEntryQuery(route.entryQuery),
      authorization: route.authorization,
      label: originLabel(route.path),
    };
  }

  private controlPlaneTarget(raw: string): UpstreamTarget {
    const url = new URL(raw);
    const tls = url.protocol === 'https:';
    const port = url.port ? Number(url.port) : tls ? 443 : 80;
    const hostname = url.hostname.replace(/^\[|\]$/g, '');
    const authority = `${bracketed(hostname)}:${port}`;
    return {
      route: null,
      key: '',
      origin: `${url.protocol}//${authority}`.toLowerCase(),
      authority,
      hostname,
      port,
      tls,
      verifyTls: tls,
      poolKey: poolKey(tls, tls, hostname, port),
      basePath: url.pathname.replace(/\/+$/, ''),
      prefix: '',
      strip: false,
      entry: [],
      authorization: null,
      label: '',
    };
  }
}

/** true when a route's change must cut its open connections: withdrawn, or now elsewhere. */
export function upstreamChanged(before: Route | undefined, after: Route | undefined): boolean {
  if (before === undefined) return false;
  if (after === undefined) return true;
  const a = before.upstream;
  const b = after.upstream;
  return a.scheme !== b.scheme || a.host !== b.host || a.port !== b.port || a.verifyTls !== b.verifyTls || before.stripPrefix !== after.stripPrefix || before.authorization !== after.authorization;
}
