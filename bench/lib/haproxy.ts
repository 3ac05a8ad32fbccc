/**
 * HAProxy as a desktop proxy would run it, the strongest a user could put in front of desktops:
 * one thread (`nbthread 1`, as nginx gets one worker), connections to the upstream reused
 * (`http-reuse always`), the prefix stripped in the backend (`replace-path`), one-hour client,
 * server and tunnel timeouts (a WebSocket is a tunnel once upgraded), `maxconn` sized from the
 * run's socket count within the open-file limit. Master-worker mode: a route change is a reload
 * (SIGUSR2 to the master), whose new worker takes new connections while the old one keeps its
 * WebSockets. Everything it writes stays under its own temp directory.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

export interface HaproxyLocation {
  /** Path prefix including the trailing slash, e.g. /desktop/bench/ */
  prefix: string;
  upstreamPort: number;
}

export interface HaproxyConfig {
  dir: string;
  port: number;
  /** Connections the run needs at once (every WebSocket, wrk's connections and room). */
  connections: number;
  /** Hard open-file limit: HAProxy refuses to start when its maxconn needs more descriptors than this. */
  fileLimit: number;
  locations: HaproxyLocation[];
}

/**
 * HAProxy needs two descriptors per proxied connection (client and server side) plus its own
 * (listeners, pollers, the master's socket pair): maxconn is what fits under the hard limit.
 */
export function haproxyMaxconn(c: Pick<HaproxyConfig, 'connections' | 'fileLimit'>): number {
  return Math.max(256, Math.min(c.connections, Math.floor((c.fileLimit - 256) / 2)));
}

export function haproxyConf(c: HaproxyConfig): string {
  const escape = (prefix: string) => prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const routes = c.locations.map((l, i) => `  use_backend b${i} if { path_beg ${l.prefix} }`).join('\n');
  const backends = c.locations
    .map(
      (l, i) => `backend b${i}
  # /desktop/bench/small -> /small, as every other target strips the prefix
  http-request replace-path ^${escape(l.prefix)}(.*) /\\1
  server s0 127.0.0.1:${l.upstreamPort}`,
    )
    .join('\n\n');
  return `# written by deskhub's benchmark harness
global
  nbthread 1
  maxconn ${haproxyMaxconn(c)}
  pidfile ${c.dir}/haproxy.pid

defaults
  mode http
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 3600s
  timeout server 3600s
  timeout tunnel 3600s
  timeout http-request 30s
  # Node's upstream keeps connections 65 s; wrk's stay open for the whole run.
  timeout http-keep-alive 65s

frontend desktops
  bind 127.0.0.1:${c.port}
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
${routes}
  default_backend missing

backend missing
  http-request return status 404

${backends}
`;
}

export function writeHaproxyConf(c: HaproxyConfig): string {
  mkdirSync(c.dir, { recursive: true });
  const file = `${c.dir}/haproxy.cfg`;
  writeFileSync(file, haproxyConf(c));
  try {
    execFileSync('haproxy', ['-c', '-q', '-f', file], { stdio: 'pipe' });
  } catch (err) {
    const output = String((err as { stderr?: Buffer }).stderr ?? '').trim();
    throw new Error(`haproxy refused ${file}: ${output.split('\n').filter((l) => /ALERT/.test(l)).join('; ') || output}`);
  }
  return file;
}

/** Foreground master-worker: the master is the process the harness starts and measures with its worker. */
export function haproxyArgs(c: HaproxyConfig): string[] {
  return ['-W', '-db', '-f', `${c.dir}/haproxy.cfg`];
}

export function haproxyVersion(): string {
  try {
    const out = execFileSync('haproxy', ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return /version (\S+)/.exec(out)?.[1] ?? 'unknown';
  } catch {
    return 'missing';
  }
}
