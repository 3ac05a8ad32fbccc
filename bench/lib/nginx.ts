/**
 * nginx as a desktop proxy would run it: one worker, the keep-alive-friendly upgrade map,
 * an upstream keep-alive pool, no buffering, one-hour timeouts. Everything it writes (pid file,
 * error log, temp paths) stays under its own temp directory.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

export interface NginxLocation {
  /** Path prefix including the trailing slash, e.g. /desktop/bench/ */
  prefix: string;
  upstreamPort: number;
}

export interface NginxConfig {
  dir: string;
  port: number;
  /** Sized from the largest number of open WebSockets the run holds (two connections each). */
  workerConnections: number;
  /** Hard open-file limit: nginx can raise its own limit only up to it. */
  fileLimit: number;
  locations: NginxLocation[];
}

export function nginxConf(c: NginxConfig): string {
  const upstreams = [...new Set(c.locations.map((l) => l.upstreamPort))]
    .map(
      (port) => `  upstream up_${port} {
    server 127.0.0.1:${port};
    keepalive 64;
    keepalive_requests 100000;
    keepalive_timeout 60s;
  }`,
    )
    .join('\n');
  const locations = c.locations
    .map(
      (l) => `    location ${l.prefix} {
      proxy_pass http://up_${l.upstreamPort}/;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }`,
    )
    .join('\n');
  // Running as root, nginx would hand its worker to "nobody", which cannot write our temp dirs.
  const user = process.getuid?.() === 0 ? 'user root root;\n' : '';
  return `# written by deskhub's benchmark harness
${user}worker_processes 1;
worker_rlimit_nofile ${Math.min(c.fileLimit, Math.max(1024, c.workerConnections + 64))};
daemon off;
pid ${c.dir}/nginx.pid;
error_log ${c.dir}/error.log warn;
events {
  worker_connections ${c.workerConnections};
}
http {
  access_log off;
  client_body_temp_path ${c.dir}/client_body;
  proxy_temp_path ${c.dir}/proxy;
  fastcgi_temp_path ${c.dir}/fastcgi;
  uwsgi_temp_path ${c.dir}/uwsgi;
  scgi_temp_path ${c.dir}/scgi;
  # Node's server has no per-connection request limit; nginx's default of 1000 would make wrk reconnect.
  keepalive_requests 100000;
  keepalive_timeout 65s;
  # '' -> '' (not 'close') keeps upstream keep-alive for ordinary requests.
  map $http_upgrade $connection_upgrade {
    default upgrade;
    '' '';
  }
${upstreams}
  server {
    listen 127.0.0.1:${c.port};
${locations}
    location / {
      return 404;
    }
  }
}
`;
}

export function writeNginxConf(c: NginxConfig): string {
  mkdirSync(c.dir, { recursive: true });
  const file = `${c.dir}/nginx.conf`;
  writeFileSync(file, nginxConf(c));
  return file;
}

export function nginxArgs(c: NginxConfig): string[] {
  return ['-p', `${c.dir}/`, '-c', `${c.dir}/nginx.conf`, '-e', `${c.dir}/error.log`];
}

/** Checks the configuration, then asks the running master to load it (graceful: old workers finish their connections). */
export function reloadNginx(c: NginxConfig): void {
  writeNginxConf(c);
  execFileSync('nginx', [...nginxArgs(c), '-t', '-q'], { stdio: 'pipe' });
  execFileSync('nginx', [...nginxArgs(c), '-s', 'reload'], { stdio: 'pipe' });
}

export function nginxVersion(): string {
  try {
    // nginx -v writes to stderr
    return execFileSync('nginx', ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim() || versionFromStderr();
  } catch {
    return 'missing';
  }
}

function versionFromStderr(): string {
  const out = execFileSync('sh', ['-c', 'nginx -v 2>&1'], { encoding: 'utf8' }).trim();
  return out.replace(/^nginx version:\s*/, '');
}
