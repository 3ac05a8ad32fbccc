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
