/**
 * Debian's nginx with deskhub's shipped site file (deploy/nginx/deskhub.conf), for tests and
 * measurements: the binary found, the shipped text with just the pieces a test must change
 * replaced (each checked to occur exactly once, so a drift of the shipped file breaks the test
 * instead of passing unnoticed), a main nginx.conf shaped like Debian's /etc/nginx/nginx.conf that
 * includes the site inside `http {}` as conf.d would, and a master process run in the foreground
 * (`daemon off`) as a child of the test, with everything it writes in its own folder.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { delimiter, join } from 'node:path';
import { repoRoot } from './service.ts';

/** The file operators copy to /etc/nginx/conf.d/. */
export const shippedNginxConf = join(repoRoot, 'deploy', 'nginx', 'deskhub.conf');

/** $NGINX, else `nginx` on PATH, else where Debian and source builds put it; null when there is none. */
export function findNginx(): string | null {
  const candidates = [
    ...(process.env.NGINX ? [process.env.NGINX] : []),
    ...(process.env.PATH ?? '').split(delimiter).filter(Boolean).map((dir) => join(dir, 'nginx')),
    '/usr/sbin/nginx',
    '/usr/local/sbin/nginx',
    '/usr/local/nginx/sbin/nginx',
  ];
  for (const file of candidates) {
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not there
    }
  }
  return null;
}

/** How often `piece` occurs in `text`. */
export function occurrences(text: string, piece: string): number {
  return text.split(piece).length - 1;
}

/**
 * `text` with each `[from, to]` replaced, after checking that every `from` occurs exactly once
 * (else it throws, naming the piece: the shipped file changed and the caller must follow).
 */
export function replaceEachOnce(text: string, pieces: Array<[from: string, to: string]>): string {
  for (const [from] of pieces) {
    const n = occurrences(text, from);
    if (n !== 1) throw new Error(`the shipped nginx file has ${JSON.stringify(from)} ${n} times, not once: it changed; update the caller`);
  }
  return pieces.reduce((out, [from, to]) => out.replace(from, () => to), text);
}

export interface NginxMainOptions {
  /** Folder for the pid file, logs and temp paths. */
  dir: string;
  /** The site file to include inside http {}. */
  site: string;
  /** Debian's nginx.conf says `auto` (one worker per core). */
  workerProcesses?: number | 'auto';
  /** Debian's says 768; each proxied WebSocket holds two (browser and replica). */
  workerConnections?: number;
  /** More main-context lines, e.g. `worker_shutdown_timeout 10s;`. */
  main?: string[];
  /** An access log in `dir` (access.log) with the upstream each request went to. */
  accessLog?: boolean;
}

/**
 * A main nginx.conf as Debian's /etc/nginx/nginx.conf has it (workers, events, http with the site
 * included as conf.d is), with everything nginx writes kept in `dir`. As root the workers stay root:
 * they would otherwise run as nobody, who cannot enter the test's private temp folder.
 */
export function nginxMainConf(o: NginxMainOptions): string {
  const asRoot = process.getuid?.() === 0;
  return [
    ...(asRoot ? ['user root root;'] : []),
    `worker_processes ${o.workerProcesses ?? 'auto'};`,
    `pid ${o.dir}/nginx.pid;`,
    `error_log ${o.dir}/error.log;`,
    ...(o.main ?? []),
    `events { worker_connections ${o.workerConnections ?? 768}; }`,
    'http {',
    o.accessLog
      ? `  log_format upstreams '$msec $pid $connection "$request" $status $body_bytes_sent up=$upstream_addr upstatus=$upstream_status t=$request_time';\n  access_log ${o.dir}/access.log upstreams;`
      : '  access_log off;',
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((name) => `  ${name}_temp_path ${o.dir}/${name};`),
    `  include ${o.site};`,
    '}',
    '',
  ].join('\n');
}

/** The arguments that point nginx at `dir`'s nginx.conf (for -t, -s reload, and the master itself). */
export function nginxArgs(dir: string): string[] {
  return ['-p', `${dir}/`, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')];
}

export function runNginx(nginx: string, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(nginx, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

export interface NginxWorker {
  pid: number;
  /** "nginx: worker process is shutting down": an old worker after a reload, serving what it holds. */
  shuttingDown: boolean;
}

export interface RunningNginx {
  readonly nginx: string;
  readonly dir: string;
  /** The master's pid. */
  readonly pid: number;
  /** The master's worker processes now, from /proc. */
  workers(): NginxWorker[];
  /**
   * `nginx -s reload` (after writing nginx.conf anew with `main` as its extra main-context lines,
   * when given); resolves once workers of the new configuration run and every old one still
   * alive is shutting down (no longer accepting).
   */
  reload(main?: string[]): Promise<void>;
  /** The error log so far (for failure messages). */
  errorLog(): string;
  /** Fast shutdown (SIGTERM: every connection closed at once), SIGKILL after 10 s; resolves when the master is gone. */
  stop(): Promise<void>;
}

function childrenOf(pid: number): NginxWorker[] {
  const found: NginxWorker[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) !== pid || fields[0] === 'Z') continue;
      const title = readFileSync(`/proc/${name}/cmdline`, 'utf8').replace(/\0+$/, '').replaceAll('\0', ' ');
      if (!title.includes('worker process')) continue; // the cache manager and loader are not workers
      found.push({ pid: Number(name), shuttingDown: title.includes('shutting down') });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Masters still running when the test process exits are killed with their workers. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) {
    for (const worker of child.pid ? childrenOf(child.pid) : []) {
      try {
        process.kill(worker.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    child.kill('SIGKILL');
  }
});

/**
 * Writes `dir`/nginx.conf (nginxMainConf) and starts the master in the foreground as a child
 * process; resolves once every port in `ports` accepts connections. Rejects with the error log
 * when nginx exits or the ports stay closed for 15 s.
 */
export async function startNginx(nginx: string, options: NginxMainOptions & { ports: number[] }): Promise<RunningNginx> {
  const { dir } = options;
  await writeFile(join(dir, 'nginx.conf'), nginxMainConf(options));
  const errorLog = (): string => {
    try {
      return readFileSync(join(dir, 'error.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const child = spawn(nginx, [...nginxArgs(dir), '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    running.delete(child);
    resolve();
  }));
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nginx exited at start (${child.exitCode ?? child.signalCode}): ${output}${errorLog()}`);
    if ((await Promise.all(options.ports.map(portOpen))).every(Boolean)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`nginx did not listen on ${options.ports.join(', ')} within 15 s: ${output}${errorLog()}`);
    }
    await sleep(50);
  }
  const pid = child.pid!;
  return {
    nginx,
    dir,
    pid,
    workers: () => childrenOf(pid),
    async reload(main) {
      if (main !== undefined) await writeFile(join(dir, 'nginx.conf'), nginxMainConf({ ...options, main }));
      const before = new Set(childrenOf(pid).map((w) => w.pid));
      const result = await runNginx(nginx, [...nginxArgs(dir), '-s', 'reload']);
      if (result.code !== 0) throw new Error(`nginx -s reload: ${result.output}`);
      // New workers start first; then the master tells the old ones to stop accepting and finish.
      const until = Date.now() + 15_000;
      const done = (now: NginxWorker[]) => now.some((w) => !before.has(w.pid)) && now.every((w) => !before.has(w.pid) || w.shuttingDown);
      while (!done(childrenOf(pid))) {
        if (Date.now() > until) throw new Error(`nginx -s reload: the new workers were not alone in accepting within 15 s: ${errorLog()}`);
        await sleep(20);
      }
    },
    errorLog,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => {
        for (const worker of childrenOf(pid)) process.kill(worker.pid, 'SIGKILL');
        child.kill('SIGKILL');
      }, 10_000);
      await exited;
      clearTimeout(killer);
    },
  };
}
