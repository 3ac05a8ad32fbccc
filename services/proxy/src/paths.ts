/**
 * How the proxy reads a request target: which desktop it names, whether it is safe to pass on,
 * and whether a browser must first be sent to the desktop's entry URL.
 *
 * Everything here works on the raw `req.url` string with indexOf/slice: no URL object on the hot
 * path, because a request through the proxy has a budget of a few tens of microseconds.
 */

export const DESKTOP_PREFIX = '/desktop/';
const PREFIX_LENGTH = DESKTOP_PREFIX.length;

/** A request target under /desktop/, split without copying more than needed. */
export interface DesktopTarget {
  /** The route's proxy path: the first segment after /desktop/. */
  name: string;
  /** What follows the name: "" (no trailing slash), "?q", "/", "/a/b?q". */
  rest: string;
}

/** `/desktop/<name><rest>`, or null when the target is not under /desktop/. */
export function splitDesktopTarget(url: string): DesktopTarget | null {
  if (!url.startsWith(DESKTOP_PREFIX)) return null;
  let end = PREFIX_LENGTH;
  const len = url.length;
  while (end < len) {
    const c = url.charCodeAt(end);
    if (c === 47 /* / */ || c === 63 /* ? */) break;
    end++;
  }
  return { name: url.slice(PREFIX_LENGTH, end), rest: url.slice(end) };
}

/** The path of a request target: what comes before its query. */
export function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

/** A "%" not followed by two hex digits. */
const BAD_ESCAPE = /%(?![0-9A-Fa-f]{2})/;

/**
 * Why a request target is refused, or null when it may be forwarded.
 *
 * Refused (400): a target not starting with "/" (absolute-form or "*"), a fragment ("#": not
 * part of a request target, RFC 9112 §3.2.1 and RFC 3986 §3.5; an upstream could cut the path
 * there where the proxy did not), and before the query a backslash, a "%" not followed by two
 * hex digits (RFC 3986 §2.1: each server would read it its own way, as nginx refuses it too), an
 * encoded slash or backslash (%2f, %5c), an encoded NUL (%00), and any "." or ".." segment,
 * written plainly or percent-encoded (%2e). Browsers remove dot segments before sending, so only
 * a crafted request has them; an upstream that decodes them could be led out of the desktop's
 * prefix, so the proxy does not try to guess what they mean.
 */
export function unsafeTarget(url: string): string | null {
  if (url.charCodeAt(0) !== 47) return 'the request target must start with "/"';
  if (url.indexOf('#') !== -1) return 'a request target cannot carry a fragment ("#")';
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  // Fast path: nothing that could form a dot segment, an escape or a backslash.
  if (path.indexOf('%') === -1 && path.indexOf('/.') === -1 && path.indexOf('\\') === -1) return null;
  if (path.indexOf('\\') !== -1) return 'backslashes are not allowed in paths';
  if (BAD_ESCAPE.test(path)) return 'a "%" in a path must start an escape of two hex digits';
  const lower = path.toLowerCase();
  if (lower.includes('%2f') || lower.includes('%5c')) return 'encoded slashes are not allowed in paths';
  if (lower.includes('%00')) return 'encoded NUL bytes are not allowed in paths';
  for (const segment of lower.split('/')) {
    const decoded = segment.includes('%2e') ? segment.replaceAll('%2e', '.') : segment;
    if (decoded === '.' || decoded === '..') return 'dot segments ("." and "..") are not allowed in paths';
  }
  return null;
}

/**
 * The owner-only prefix (route.ownerOnly, e.g. "/api/", "/Downloads/") that a desktop request's
 * `rest` falls under, or null. Compared as an upstream could read the path, so no spelling gets
 * around it: percent-escapes decoded (`/%41pi/`; unsafeTarget has already refused encoded
 * slashes, NUL and dot segments), runs of "/" taken as one (`//api/`), letters in any case
 * (`/API/`), and the prefix without its last "/" (`/api`) included.
 */
export function ownerOnlyPrefix(rest: string, prefixes: readonly string[] | undefined): string | null {
  if (prefixes === undefined || prefixes.length === 0) return null;
  let path = pathOf(rest);
  if (path.indexOf('%') !== -1) {
    try {
      path = decodeURIComponent(path);
    } catch {
      // Not UTF-8 once decoded: decode byte by byte, so the ASCII that matters still shows.
      path = path.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
    }
  }
  path = path.replace(/\/{2,}/g, '/').toLowerCase();
  for (const prefix of prefixes) {
    const p = prefix.toLowerCase();
    if (path.startsWith(p) || (p.endsWith('/') && path === p.slice(0, -1))) return prefix;
  }
  return null;
}

/** One `key=value` pair of a route's entry query, split once per route. */
export interface EntryParam {
  key: string;
  pair: string;
}

export function parseEntryQuery(entryQuery: string): EntryParam[] {
  if (entryQuery === '') return [];
  return entryQuery
    .split('&')
    .filter((pair) => pair !== '')
    .map((pair) => {
      const eq = pair.indexOf('=');
      return { key: eq === -1 ? pair : pair.slice(0, eq), pair };
    });
}

function queryHasKey(query: string, key: string): boolean {
  // query without "?"; keys compared as written (entry query keys are plain ASCII like "path").
  let start = 0;
  while (start <= query.length) {
    let end = query.indexOf('&', start);
    if (end === -1) end = query.length;
    const eq = query.indexOf('=', start);
    const keyEnd = eq !== -1 && eq < end ? eq : end;
    if (keyEnd - start === key.length && query.startsWith(key, start)) return true;
    start = end + 1;
  }
  return false;
}

/**
 * Where a GET/HEAD page load must be sent first, or null to forward it.
 * `/desktop/<p>` (no slash) goes to `/desktop/<p>/`; the desktop's root without one of its entry
 * query's keys gets them added (the page's own query is kept). KasmVNC's client reads its
 * WebSocket path from `?path=` and its assets are relative, so both are needed (kasm-contract.md).
 */
export function entryRedirect(target: DesktopTarget, entry: EntryParam[]): string | null {
  const rest = target.rest;
  let query: string;
  if (rest === '' || rest.charCodeAt(0) === 63 /* ? */) {
    query = rest === '' ? '' : rest.slice(1);
  } else if (rest === '/' || rest.startsWith('/?')) {
    if (entry.length === 0) return null;
    query = rest.length > 1 ? rest.slice(2) : '';
    let missing = false;
    for (const param of entry) {
      if (!queryHasKey(query, param.key)) {
        missing = true;
        break;
      }
    }
    if (!missing) return null;
  } else {
    return null;
  }
  let out = query;
  for (const param of entry) {
    if (!queryHasKey(query, param.key)) out = out === '' ? param.pair : `${out}&${param.pair}`;
  }
  return `${DESKTOP_PREFIX}${target.name}/${out === '' ? '' : '?' + out}`;
}
