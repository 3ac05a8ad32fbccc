/**
 * The control plane's HTTP API as the browser sees it (architecture.md, and the additions the
 * README lists under "What the UI needs from the control plane"). One fetch wrapper, one error
 * type: every failed call becomes an ApiError carrying the server's `message`.
 */

import { noteServerDate, type ClocksView } from './clocks.ts';
import { frameHref, tabHref } from './links.ts';
import type { Share, ShareMode, SharedDesktop, SharingView } from './sharing.ts';

export type { ClocksView, DeadlineView } from './clocks.ts';
export type { Connected, Share, ShareMode, SharedDesktop, SharingView } from './sharing.ts';

export type DesktopState = 'creating' | 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

export interface Me {
  id: string;
  username: string;
  roles: string[];
}

export interface CatalogType {
  id: string;
  name: string;
  runtime: string;
  available: boolean;
  reason?: string;
  description?: string;
}

/** A desktop as GET /api/desktops returns it; the fields after `state` are optional extras the UI shows when present. */
export interface Desktop {
  id: string;
  type: string;
  owner: string | { id?: string; username?: string };
  proxyPath: string;
  url: string;
  /**
   * Where a browser opens it: `url` itself, or (DESKTOP_ORIGIN set) the hand-off on this origin
   * that gives the desktop's own origin its access cookie and then loads `url`. Missing from an
   * older control plane: `url` is used.
   */
  openUrl?: string;
  state: DesktopState;
  /** The optional label given at launch; the control plane may call it `name` or `label`. */
  name?: string | null;
  label?: string | null;
  reason?: string | null;
  createdAt?: string | null;
  lastActivityAt?: string | null;
  /** input: lastActivityAt is the last key press, pointer movement or paste; traffic: the last request. */
  activity?: 'input' | 'traffic' | null;
  /** The last time any proxy saw someone connected (an open WebSocket or a request). */
  lastConnectedAt?: string | null;
  /** The idle clocks: exemption, held disconnected, deadlines (running desktops only). Missing: no clocks shown. */
  clocks?: ClocksView;
  /** Its home (GET /api/volumes) when its type keeps one, else null; missing from an older control plane. */
  homeId?: string | null;
  /**
   * Set when it failed because the node that holds its home is lost: it starts again once the node
   * is back; with offerNewHome (HOME_NODE_LOST=offer-new-home) it may start with a stand-in home.
   */
  homeLost?: { offerNewHome: boolean } | null;
  /** When it last became ready (a warm pool member: since when it waits to be claimed). */
  readyAt?: string | null;
  /** A warm pool member nobody has claimed yet (admin list only): `owner` is "", it has no route. */
  pool?: boolean;
}

/** A node homes can live on (Swarm), as GET /api/admin/nodes lists it. */
export interface HomeNode {
  runtime: string;
  id: string;
  name: string;
  state: string;
  availability: string;
  /** Ready, active and reachable: a home can be moved there now. */
  takesHomes: boolean;
}

/** A home (catalog `home`): a user's files kept across their desktops' lives, as GET /api/volumes lists it. */
export interface Home {
  id: string;
  owner: string;
  /** The catalog's home.name: types naming the same home share it. */
  name: string;
  scope: 'user' | 'desktop';
  /** Scope desktop: the desktop name it belongs to. */
  desktopName: string | null;
  runtime: string;
  createdAt: string;
  lastUsedAt: string | null;
  /** Bytes used, when the runtime can tell. */
  sizeBytes: number | null;
  /** Swarm: the node that holds it (its desktops run there); null elsewhere. Missing from an older control plane. */
  node?: { id: string; name: string } | null;
  /** The desktops that mount it, in any state: it cannot be deleted while there are any. */
  usedBy: { id: string; proxyPath: string; state: DesktopState }[];
}

export interface Provider {
  id: string;
  name: string;
  loginUrl: string;
}

export interface Providers {
  providers: Provider[];
  /** null when the control plane does not say (no /auth/providers): the UI then offers dev sign-in and reports what the server answers. */
  devLogin: boolean | null;
}

/** One lifecycle event on GET /api/desktops/:id/events/stream. */
export interface DesktopEvent {
  at: string;
  kind: string;
  message: string;
  progress?: number;
  state?: DesktopState;
}

/** An API token as GET /api/tokens lists it: never its secret. */
export interface ApiToken {
  id: string;
  name: string;
  scopes: string[];
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
}

/** POST /api/tokens: the token text comes this once. */
export interface NewApiToken extends ApiToken {
  token: string;
}

/** GET /api/me/session: when the session ends and how long a desktop access cookie lives. */
export interface SessionInfo {
  expiresAt: string;
  accessLifetimeSeconds: number;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  // A header a cross-site form cannot send: the control plane's CSRF check accepts it.
  const headers: Record<string, string> = { accept: 'application/json', 'x-deskhub-csrf': '1' };
  let payload: string | undefined;
  // Fastify refuses an empty body declared as JSON, so a bodiless call sends no content-type.
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
  } catch {
    throw new ApiError(0, 'The server cannot be reached. Check your connection and try again.');
  }
  // Deadlines are the server's times: the countdowns correct for a browser clock that is off.
  noteServerDate(res.headers.get('date'), Date.now());
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown = undefined;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
  }
  if (!res.ok) {
    const message =
      data && typeof data === 'object' && typeof (data as { message?: unknown }).message === 'string'
        ? (data as { message: string }).message
        : `${res.status} ${res.statusText || 'error'}`;
    throw new ApiError(res.status, message);
  }
  return data as T;
}

export const api = {
  me: () => call<Me>('GET', '/api/me'),
  async providers(): Promise<Providers> {
    try {
      const data = await call<unknown>('GET', '/auth/providers');
      if (Array.isArray(data)) return { providers: data as Provider[], devLogin: null };
      const obj = (data ?? {}) as { providers?: Provider[]; devLogin?: boolean };
      return { providers: obj.providers ?? [], devLogin: typeof obj.devLogin === 'boolean' ? obj.devLogin : null };
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return { providers: [], devLogin: null };
      throw err;
    }
  },
  devLogin: (username: string) => call<unknown>('POST', '/auth/dev-login', { username }),
  logout: () => call<unknown>('POST', '/auth/logout', {}),
  catalog: () => call<CatalogType[]>('GET', '/api/catalog'),
  desktops: () => call<Desktop[]>('GET', '/api/desktops'),
  desktop: (id: string) => call<Desktop>('GET', `/api/desktops/${encodeURIComponent(id)}`),
  create: (type: string, name?: string) => call<Desktop>('POST', '/api/desktops', name ? { type, name } : { type }),
  stop: (id: string) => call<unknown>('POST', `/api/desktops/${encodeURIComponent(id)}/stop`, {}),
  start: (id: string) => call<unknown>('POST', `/api/desktops/${encodeURIComponent(id)}/start`, {}),
  remove: (id: string) => call<void>('DELETE', `/api/desktops/${encodeURIComponent(id)}`),
  /** Pushes the idle and expire deadlines out by one period and re-arms streams held disconnected; 409 unless running. */
  /** Starts a desktop whose home's node is lost with a stand-in home; only after the owner confirmed (403 where not allowed). */
  startWithNewHome: (id: string) => call<Desktop>('POST', `/api/desktops/${encodeURIComponent(id)}/new-home`, { confirm: true }),
  keepAlive: (id: string) => call<Desktop>('POST', `/api/desktops/${encodeURIComponent(id)}/keepalive`, {}),
  adminDesktops: () => call<Desktop[]>('GET', '/api/admin/desktops'),
  adminStop: (id: string) => call<unknown>('POST', `/api/admin/desktops/${encodeURIComponent(id)}/stop`, {}),
  adminStart: (id: string) => call<unknown>('POST', `/api/admin/desktops/${encodeURIComponent(id)}/start`, {}),
  /** Exempts a desktop from the idle clocks and its lifetime, or puts it back under them. */
  adminSetClocks: (id: string, exempt: boolean) => call<Desktop>('PUT', `/api/admin/desktops/${encodeURIComponent(id)}/clocks`, { exempt }),
  adminRemove: (id: string) => call<void>('DELETE', `/api/admin/desktops/${encodeURIComponent(id)}`),
  homes: () => call<Home[]>('GET', '/api/volumes'),
  /** 204; 409 (with the server's reason) while a desktop mounts it. */
  removeHome: (id: string) => call<void>('DELETE', `/api/volumes/${encodeURIComponent(id)}`),
  adminHomes: () => call<Home[]>('GET', '/api/admin/volumes'),
  adminRemoveHome: (id: string) => call<void>('DELETE', `/api/admin/volumes/${encodeURIComponent(id)}`),
  /** The nodes homes can live on (Swarm); empty elsewhere. */
  adminNodes: () => call<HomeNode[]>('GET', '/api/admin/nodes'),
  /** Copies the home to the node, checks the copy, removes the original; 409 while a desktop runs with it. */
  adminMoveHome: (id: string, node: string) => call<Home>('POST', `/api/admin/volumes/${encodeURIComponent(id)}/move`, { node }),
  tokens: () => call<ApiToken[]>('GET', '/api/tokens'),
  createToken: (body: { name: string; scopes: string[]; expiresInDays?: number }) => call<NewApiToken>('POST', '/api/tokens', body),
  revokeToken: (id: string) => call<void>('DELETE', `/api/tokens/${encodeURIComponent(id)}`),
  session: () => call<SessionInfo>('GET', '/api/me/session'),
  /** Renews the desktop access cookie (Path=/desktop/) from the session: 204, or 401 when the session has ended. */
  renewDesktopAccess: () => call<void>('POST', '/auth/desktop-access', {}),
  /** The desktop's shares and links, who has it open now, and whether it can be shared here (the owner's). */
  sharing: (id: string) => call<SharingView>('GET', `/api/desktops/${encodeURIComponent(id)}/shares`),
  /** Shares it with a user (or changes their share); 409 with the reason when it cannot be shared so. */
  shareWith: (id: string, body: { username: string; mode: ShareMode; expiresIn?: string }) =>
    call<Share>('POST', `/api/desktops/${encodeURIComponent(id)}/shares`, body),
  /** A link any signed-in user may open; its URL comes only in this answer. */
  createLink: (id: string, body: { mode?: ShareMode; expiresIn?: string }) =>
    call<{ share: Share; url: string }>('POST', `/api/desktops/${encodeURIComponent(id)}/links`, body),
  /** 204 once every proxy has closed the share's connections. */
  revokeShare: (id: string, shareId: string) => call<void>('DELETE', `/api/desktops/${encodeURIComponent(id)}/shares/${encodeURIComponent(shareId)}`),
  /** Desktops others share with the caller. */
  shared: () => call<SharedDesktop[]>('GET', '/api/shared'),
  /** Opens a share link by its secret: 404 when it does not exist, was revoked or has ended. */
  openLink: (secret: string) => call<SharedDesktop>('POST', '/api/shared/links', { secret }),
};

export function eventStreamUrl(id: string): string {
  return `/api/desktops/${encodeURIComponent(id)}/events/stream`;
}

/**
 * A desktop's event stream, closed when the page goes away (navigation, reload): left open, the
 * browser cuts it mid-load and Firefox reports that as a page error. `close()` also stops
 * listening for the page going away.
 */
export function openEventStream(id: string): EventSource {
  const source = new EventSource(eventStreamUrl(id));
  const onPageHide = () => source.close();
  window.addEventListener('pagehide', onPageHide);
  const close = source.close.bind(source);
  source.close = () => {
    window.removeEventListener('pagehide', onPageHide);
    close();
  };
  return source;
}

/** Lists may come bare or wrapped ({ desktops: [...] }); the UI accepts both so a small contract drift does not blank the page. */
export function asList<T>(data: unknown, key: string): T[] {
  if (Array.isArray(data)) return data as T[];
  if (data && typeof data === 'object' && Array.isArray((data as Record<string, unknown>)[key])) {
    return (data as Record<string, T[]>)[key] as T[];
  }
  return [];
}

/** The owner's username; "nobody" for an unowned desktop (a warm pool member's owner is ""). */
export function ownerName(owner: Desktop['owner']): string {
  if (typeof owner === 'string') return owner || 'nobody';
  return owner?.username || owner?.id || 'unknown';
}

/** "Open in new tab": the hand-off when the desktop has an origin of its own, else its path here. */
export function desktopHref(desktop: Desktop | SharedDesktop): string {
  return tabHref(desktop, location.origin);
}

/** The in-page iframe's address: as desktopHref, with the KasmVNC iframe query on the desktop's address. */
export function iframeSrc(desktop: Desktop | SharedDesktop): string {
  return frameHref(desktop, location.origin);
}
