/**
 * The addresses the UI builds: where to go after sign-in, and how a desktop is opened in a tab
 * or an iframe. Pure functions with no browser globals, so they are tested in Node as well.
 */

/** Only a path on this origin may be a post-sign-in target (no `//host`, no scheme): an open redirect otherwise. */
export function safeNext(next: string | null | undefined): string {
  // The server's rule (control plane, safeNextPath): one leading "/", no backslash, no encoded
  // slash or backslash, no control character; then the path as the browser resolves it.
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.includes('\\') || /%(2f|5c)/i.test(next) || /[\u0000-\u0020\u007f]/.test(next)) return '/';
  try {
    const url = new URL(next, 'http://deskhub.invalid');
    if (url.origin !== 'http://deskhub.invalid') return '/';
    next = url.pathname + url.search + url.hash;
  } catch {
    return '/';
  }
  // Coming back to the sign-in page after signing in would loop.
  if (next === '/signin' || next.startsWith('/signin?') || next.startsWith('/signin/')) return '/';
  return next;
}

/**
 * The desktop's address as a path on this origin: architecture.md serves UI and desktops from one
 * origin, and a relative address keeps working when PUBLIC_URL names the same host differently
 * (localhost vs 127.0.0.1). Falls back to the proxy path when the URL cannot be parsed.
 */
export function desktopPath(url: string, proxyPath: string, origin: string): string {
  try {
    const u = new URL(url, origin);
    return u.pathname + u.search + u.hash;
  } catch {
    return `/desktop/${proxyPath}/`;
  }
}

/** What an iframe needs on top of the entry URL: without it KasmVNC hides its control bar and turns off clipboard and resize. */
export const KASM_IFRAME_QUERY =
  'show_control_bar=true&resize=remote&clipboard_up=true&clipboard_down=true&clipboard_seamless=true';

export function withIframeQuery(href: string): string {
  const hashAt = href.indexOf('#');
  const base = hashAt >= 0 ? href.slice(0, hashAt) : href;
  const sep = base.includes('?') ? (base.endsWith('?') || base.endsWith('&') ? '' : '&') : '?';
  return base + sep + KASM_IFRAME_QUERY;
}

/** Where the UI's origin hands a desktop's own origin its access cookie (the control plane's HANDOFF_PATH). */
export const HANDOFF_PATH = '/auth/desktop-handoff';

/** A hand-off address, read: the desktop it is for and where it goes afterwards (null: just renew). */
export interface Handoff {
  desktop: string;
  next: string | null;
}

/**
 * The hand-off in an `openUrl`, or null when it is not one (DESKTOP_ORIGIN unset: `openUrl` is the
 * desktop's own address on this origin). Only the path is looked at: PUBLIC_URL may name this
 * origin differently (localhost vs 127.0.0.1), and the session cookie is on the origin in use.
 */
export function handoffOf(openUrl: string | null | undefined, origin: string): Handoff | null {
  if (!openUrl) return null;
  try {
    const u = new URL(openUrl, origin);
    const desktop = u.searchParams.get('desktop');
    if (u.pathname !== HANDOFF_PATH || !desktop) return null;
    return { desktop, next: u.searchParams.get('next') };
  } catch {
    return null;
  }
}

function handoffPath(h: Handoff): string {
  const q = new URLSearchParams({ desktop: h.desktop });
  if (h.next !== null) q.set('next', h.next);
  return `${HANDOFF_PATH}?${q.toString()}`;
}

/** What a desktop (own or shared) is opened from: its `openUrl` when the API gives one, else its `url`. */
export interface Openable {
  proxyPath: string;
  url?: string;
  openUrl?: string;
}

/**
 * Where "Open in new tab" goes: the hand-off (a path on this origin, which redirects to the
 * desktop's own origin with a fresh access cookie), or the desktop's path on this origin.
 */
export function tabHref(d: Openable, origin: string): string {
  const h = handoffOf(d.openUrl, origin);
  if (h !== null) return handoffPath(h);
  return desktopPath(d.openUrl ?? d.url ?? '', d.proxyPath, origin);
}

/** What the in-page iframe loads: as tabHref, with the KasmVNC iframe query on the desktop's own address (the hand-off's `next`). */
export function frameHref(d: Openable, origin: string): string {
  const h = handoffOf(d.openUrl, origin);
  if (h !== null) return handoffPath({ desktop: h.desktop, next: withIframeQuery(h.next ?? `/desktop/${h.desktop}/`) });
  return withIframeQuery(desktopPath(d.openUrl ?? d.url ?? '', d.proxyPath, origin));
}

/** The renewal frame's address (a hand-off without `next`: the desktop's origin answers "renewed"), or null when the desktop is opened without one. */
export function renewalHref(d: Openable, origin: string): string | null {
  const h = handoffOf(d.openUrl, origin);
  return h === null ? null : handoffPath({ desktop: h.desktop, next: null });
}
