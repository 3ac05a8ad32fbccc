/**
 * One of deskhub's services as its own process, the way `pnpm start:control-plane` and
 * `pnpm start:proxy` run it: `node --import tsx <main.ts>` with the environment given (and none
 * of deskhub's settings leaking in from the test's own environment), ready once the service logs
 * the line it prints when it listens (so it always logs at info or finer). Stderr is kept (its tail) for error messages.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

export interface ServiceProcess {
  readonly child: ChildProcess;
  /** The fields of the "listening" log line (url, metricsUrl, ...). */
  readonly ready: Record<string, unknown>;
  /** The last 8 KiB of stderr. */
  stderr(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL; resolves when the process is gone. */
  kill(): Promise<void>;
}

export interface StartServiceOptions {
  /** Path of the entry point, relative to the repository root (e.g. services/proxy/src/main.ts). */
  entry: string;
  env: NodeJS.ProcessEnv;
  /** The `msg` of the log line that says it is ready (e.g. "proxy listening"). */
  readyMessage: string;
  timeoutMs?: number;
  /** Appends everything the process prints (its pino lines and stderr) to this file. */
  logFile?: string;
}

/** Settings of any deskhub service; removed from the inherited environment so only `env` counts. */
const DESKHUB_SETTINGS = /^(PORT|HOST|PUBLIC_URL|DATA_DIR|DATABASE_URL|REDIS_URL|ROUTE_STREAM_PREFIX|RUNTIME|DOCKER_HOST|AUTH_MODE|CATALOG|SECRET_KEY|SESSION_TTL_HOURS|ACCESS_TOKEN_\w+|ADMIN_\w+|MAX_DESKTOPS_\w+|READY_TIMEOUT_S|REPLICA_WAIT_MS|RECONCILE_INTERVAL_MS|ACTIVITY_INTERVAL_MS|METRICS_\w+|LOG_LEVEL|CONTROL_PLANE_URL|BODY_LIMIT|UPSTREAM_TIMEOUT_MS|OIDC_\w+|PROXY_\w+)$/;

export function startService(options: StartServiceOptions): Promise<ServiceProcess> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !DESKHUB_SETTINGS.test(name)));
  // The ready line is logged at info: a quieter level in `env` would hide it.
  const level = options.env.LOG_LEVEL === 'debug' || options.env.LOG_LEVEL === 'trace' ? options.env.LOG_LEVEL : 'info';
  const child = spawn(process.execPath, ['--import', 'tsx', options.entry], {
    cwd: repoRoot,
    env: { ...inherited, ...options.env, LOG_LEVEL: level },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-8192)));
  if (options.logFile) {
    const log = createWriteStream(options.logFile, { flags: 'a' });
    child.stdout!.on('data', (chunk: Buffer) => log.write(chunk));
    child.stderr!.on('data', (chunk: Buffer) => log.write(chunk));
    child.once('exit', () => log.end());
  }
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${options.entry} did not log "${options.readyMessage}" within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    const onExit = (code: number | null, signal: string | null) => {
      clearTimeout(timer);
      reject(new Error(`${options.entry} exited (${code ?? signal}) before it was ready; stderr: ${stderr}`));
    };
    child.once('exit', onExit);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return; // not a log line
      }
      if (entry.msg !== options.readyMessage) return;
      clearTimeout(timer);
      child.off('exit', onExit);
      resolve({
        child,
        ready: entry,
        stderr: () => stderr,
        async stop(graceMs = 10_000) {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGTERM');
          const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
          await exited;
          clearTimeout(killer);
        },
        async kill() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
          await exited;
        },
      });
    });
  });
}
