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
  /**
   * Who else may reach it, and how (sharing): named users and links, each with its mode and
   * expiry. A proxy lets a viewer in only while the share their token names is here; a share
   * gone from a new route closes the WebSockets opened with it.
   */
  shares: RouteShare[];
  upstream: Upstream;
  /** true: the upstream sees "/..." ; false: it sees "/desktop/<path>/..." (linuxserver SUBFOLDER images). */
  stripPrefix: boolean;
  /** Full Authorization header value the proxy injects (e.g. "Basic a2FzbV91c2VyOi4uLg=="), or null. */
  authorization: string | null;
  /**
   * Authorization the proxy injects for a `view` share instead of `authorization` (Kasm images:
   * Basic for kasm_viewer, a read-only VNC user). Absent: the desktop has no read-only user and
   * cannot be shared for viewing.
   */
  viewerAuthorization?: string;
  /**
   * Path prefixes under the desktop (as the browser sees them after `/desktop/<path>`, e.g.
   * "/api/", "/Downloads/") that only the owner reaches: control shares and viewers get 403.
   */
  ownerOnly?: string[];
  /** Query the entry URL needs, without "?" (KasmVNC: "path=desktop/<path>/websockify"), or "". */
  entryQuery: string;
  state: RouteState;
  /** Absent (routes published before it existed): traffic. */
  activity?: RouteActivity;
  /**
   * Present: the desktop's stream is held disconnected (idle disconnect), and this is the reason
   * shown to the user, e.g. "Disconnected after 30 minutes without input". The proxy closes the
   * route's open WebSockets with close code 4000 and this reason, and refuses its WebSocket
   * upgrades (409) until a route without it arrives; plain HTTP requests pass as usual. Non-empty,
   * at most 123 bytes of UTF-8 (what a close frame's reason can carry, RFC 6455 5.5.1).
   * Absent (and in routes published before it existed): streams allowed.
   */
  disconnected?: string;
}

/** One share of a desktop (see Route.shares). */
export interface RouteShare {
  /** The share's or link's id; a viewer's access token names it. */
  id: string;
  /** User id of the user it is shared with; absent for a link (any signed-in user who opened it). */
  user?: string;
  mode: 'view' | 'control';
  /** Epoch ms; absent: until revoked. */
  expiresAt?: number;
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

/**
 * Per-route time, epoch milliseconds: the last activity (what a person did), or the last presence
 * (when someone was last connected: a request, or a WebSocket open at a flush).
 */
export type ActivityMap = Map<string, number>;

export interface ReplicaStatus {
  id: string;
  version: number;
  /** epoch ms of the replica's last announcement */
  at: number;
}

/** Someone who had a route open (a WebSocket, at a proxy's flush), and as what. */
export interface Viewer {
  path: string;
  /** owner, control or view. */
  role: string;
  username: string;
  /** epoch ms of the latest flush that saw them. */
  at: number;
}
