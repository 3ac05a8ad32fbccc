/**
 * Desktops on origins of their own (DESKTOP_ORIGIN, e.g. `https://*.desktops.example.net`): each
 * desktop is served at `https://<label>.desktops.example.net/desktop/<path>/`, so the JavaScript
 * of one desktop (a page its owner controls, shown to every viewer it is shared with) can neither
 * read deskhub's session nor use its viewer's access to another desktop. The browser keeps
 * cookies, storage and WebSocket origins apart per origin; these helpers say which origin is
 * whose, for the control plane (hand-off redirects) and the proxy (which desktop a host serves).
 */
import { createHash } from 'node:crypto';
import { ConfigError } from '@deskhub/config';

export interface DesktopOrigins {
  /** The setting as given. */
  readonly pattern: string;
  readonly scheme: 'http' | 'https';
  /** What follows "*.", lower case: "desktops.example.net". */
  readonly suffix: string;
  /** ":8443", or "" for the scheme's default port (browsers leave it out of Origin). */
  readonly port: string;
}

/** A DNS label holds at most 63 characters (RFC 1035 §2.3.4); proxy paths may be longer. */
const MAX_LABEL = 63;
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const PATTERN = /^(https?):\/\/\*\.([A-Za-z0-9.-]+?)(?::(\d{1,5}))?\/?$/;

/** Why a DESKTOP_ORIGIN value cannot be used, as the start-up error says it. */
export class DesktopOriginError extends Error {
  override readonly name = 'DesktopOriginError';
}

/**
 * Reads DESKTOP_ORIGIN. Plain http is only allowed under `localhost` (browsers treat `*.localhost`
 * as a secure context, so `__Host-` and `Partitioned` cookies work there; anywhere else they would
 * be refused and no desktop could be reached).
 */
export function parseDesktopOrigin(value: string): DesktopOrigins {
  const m = PATTERN.exec(value.trim());
  if (m === null) {
    throw new DesktopOriginError(`expected a wildcard origin such as https://*.desktops.example.net (one subdomain per desktop), got ${JSON.stringify(value)}`);
  }
  const scheme = m[1] as 'http' | 'https';
  const suffix = m[2]!.toLowerCase();
  const labels = suffix.split('.');
  if (labels.some((l) => !LABEL.test(l)) || suffix.length > 200) {
    throw new DesktopOriginError(`"${suffix}" is not a host name (labels of a-z, 0-9 and "-")`);
  }
  if (scheme === 'http' && suffix !== 'localhost' && !suffix.endsWith('.localhost')) {
    throw new DesktopOriginError('plain http is only possible under localhost (e.g. http://*.localhost:8080); elsewhere browsers refuse the __Host- cookies desktops need: use https');
  }
  let port = '';
  if (m[3] !== undefined) {
    const n = Number(m[3]);
    if (n < 1 || n > 65535) throw new DesktopOriginError(`port ${m[3]} is out of range`);
    if (!(scheme === 'http' && n === 80) && !(scheme === 'https' && n === 443)) port = `:${n}`;
  }
  return Object.freeze({ pattern: value.trim(), scheme, suffix, port });
}

/** The DNS label of a desktop's origin: its proxy path, or for a path too long for a label, a cut with a hash. */
export function originLabel(path: string): string {
  if (path.length <= MAX_LABEL) return path;
  const hash = createHash('sha256').update(path).digest('hex').slice(0, 12);
  return `${path.slice(0, MAX_LABEL - 13).replace(/-+$/, '')}-${hash}`;
}

/** The host (with port, as a Host header carries it) of a desktop's origin. */
export function desktopHost(origins: DesktopOrigins, path: string): string {
  return `${originLabel(path)}.${origins.suffix}${origins.port}`;
}

/** `scheme://host[:port]` of a desktop: what its pages send as Origin. */
export function desktopOrigin(origins: DesktopOrigins, path: string): string {
  return `${origins.scheme}://${desktopHost(origins, path)}`;
}

/** Every desktop's origin at once, as a CSP source (`https://*.desktops.example.net`): what the UI may frame. */
export function desktopOriginsSource(origins: DesktopOrigins): string {
  return `${origins.scheme}://*.${origins.suffix}${origins.port}`;
}

/**
 * The label a Host header names under the desktop origins, or null when it is not one of them
 * (the UI's host, say). Exactly one label before the suffix; the port must be the pattern's.
 */
export function labelOfHost(origins: DesktopOrigins, host: string | undefined): string | null {
  if (host === undefined) return null;
  const h = host.toLowerCase();
  const tail = `.${origins.suffix}${origins.port}`;
  if (!h.endsWith(tail)) return null;
  const label = h.slice(0, h.length - tail.length);
  return LABEL.test(label) ? label : null;
}

/** DESKTOP_ORIGIN as an environment setting (the control plane's and the proxy's): a bad value stops start-up naming it. */
export function parseDesktopOriginSetting(raw: string, name: string): DesktopOrigins {
  try {
    return parseDesktopOrigin(raw);
  } catch (err) {
    if (err instanceof DesktopOriginError) throw new ConfigError(name, err.message);
    throw err;
  }
}
