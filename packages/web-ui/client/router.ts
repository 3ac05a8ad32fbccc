/**
 * A router of a handful of routes is smaller written out than imported: the path lives in history, a
 * hook re-renders on change, and `navigate` is the one way to move between pages.
 */
import { useEffect, useState } from 'preact/hooks';
import { safeNext } from './links.ts';

export type Route =
  | { page: 'dashboard' }
  | { page: 'signin'; next: string }
  | { page: 'admin' }
  | { page: 'tokens' }
  | { page: 'homes' }
  | { page: 'desktop'; id: string }
  | { page: 'shared'; id: string }
  | { page: 'share-link'; secret: string }
  | { page: 'missing'; path: string };

export function parseRoute(loc: { pathname: string; search: string }): Route {
  const path = loc.pathname.replace(/\/+$/, '') || '/';
  if (path === '/' || path === '/desktops') return { page: 'dashboard' };
  if (path === '/signin') return { page: 'signin', next: safeNext(new URLSearchParams(loc.search).get('next')) };
  if (path === '/admin') return { page: 'admin' };
  if (path === '/tokens') return { page: 'tokens' };
  if (path === '/homes') return { page: 'homes' };
  const m = /^\/desktops\/([^/]+)$/.exec(path);
  if (m && m[1]) return { page: 'desktop', id: decodeURIComponent(m[1]) };
  const shared = /^\/shared\/([^/]+)$/.exec(path);
  if (shared && shared[1]) return { page: 'shared', id: decodeURIComponent(shared[1]) };
  const link = /^\/share\/([^/]+)$/.exec(path);
  if (link && link[1]) return { page: 'share-link', secret: decodeURIComponent(link[1]) };
  return { page: 'missing', path };
}

const listeners = new Set<() => void>();

export function navigate(to: string, options: { replace?: boolean } = {}): void {
  if (options.replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  listeners.forEach((fn) => fn());
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location));
  useEffect(() => {
    const update = () => setRoute(parseRoute(location));
    listeners.add(update);
    window.addEventListener('popstate', update);
    return () => {
      listeners.delete(update);
      window.removeEventListener('popstate', update);
    };
  }, []);
  return route;
}

/** Click handler for in-app links: plain clicks stay in the page, modified clicks (new tab) keep the browser's meaning. */
export function linkTo(to: string) {
  return (e: MouseEvent) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to);
  };
}
