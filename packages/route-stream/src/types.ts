/**
 * The route stream's data: what a route is and the messages that carry it.
 * These shapes are the contract between the control plane (the only writer) and every proxy.
 */

export type RouteState = 'starting' | 'running' | 'stopping';

export interface Upstream {
  scheme: 'http' | 'https';
  host: string;
  port: number;
  /** false for Kasm images: their certificate is self-signed and new at every start. */
  verifyTls: boolean;
}

/**
 * What keeps a desktop's idle clock from running: `traffic` (any request or browser-to-desktop
 * byte, for web apps), or `input` (VNC desktops: key presses, pointer movement and pastes in the
 * RFB stream, in its dialect; a background tab's keep-alives do not count).
 */
export type RouteActivity = { on: 'traffic' } | { on: 'input'; rfb: 'standard' | 'kasmvnc' };

export interface Route {
  /** The first path segment after /desktop/, e.g. "alice-ubuntu-desktop". */
  path: string;
  desktopId: string;
  /** User id of the owner. */
  owner: string;
  /** User ids the owner shares the desktop with. */
  sharedWith: string[];
  upstream: Upstream;
  /** true: the upstream sees "/..." ; false: it sees "/desktop/<path>/..." (linuxserver SUBFOLDER images). */
  stripPrefix: boolean;
  /** Full Authorization header value the proxy injects (e.g. "Basic a2FzbV91c2VyOi4uLg=="), or null. */
  authorization: string | null;
  /** Query the entry URL needs, without "?" (KasmVNC: "path=desktop/<path>/websockify"), or "". */
  entryQuery: string;
  state: RouteState;
  /** Absent (routes published before it existed): traffic. */
  activity?: RouteActivity;
}

export interface Snapshot {
  version: number;
  routes: Route[];
}

/**
 * A numbered change. `version` comes from Postgres, in the same transaction as the change,
 * and is strictly increasing; a subscriber applies only `version === applied + 1`.
 */
export type RouteChange =
  | { version: number; op: 'put'; route: Route }
  | { version: number; op: 'delete'; path: string };

/** Per-route last activity, epoch milliseconds. */
export type ActivityMap = Map<string, number>;

export interface ReplicaStatus {
  id: string;
  version: number;
  /** epoch ms of the replica's last announcement */
  at: number;
}
