/**
 * Starting and stopping the processes a benchmark run measures (upstream, proxies, Redis):
 * each writes its output to a log file under the run's temp directory, start-up waits for a
 * readiness check, and an early exit fails with the tail of that log instead of a hang.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Service {
  name: string;
  pid: number;
  child: ChildProcess;
  logFile: string;
  /** Resolves with the first stdout line that parses as JSON (when the service prints one). */
  firstJsonLine: Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

export interface SpawnOptions {
  name: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  logDir: string;
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export function spawnService(opts: SpawnOptions): Service {
  const logFile = `${opts.logDir}/${opts.name}.log`;
  const log = createWriteStream(logFile);
  const child = spawn(opts.command, opts.args, {
    env: { ...process.env, ...opts.env },
    cwd: opts.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => { exited = true; resolve(); }));
  const firstJsonLine = new Promise<Record<string, unknown>>((resolve, reject) => {
    let buffered = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      log.write(chunk);
      buffered += chunk.toString('utf8');
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const parsed: unknown = JSON.parse(line);
          if (parsed && typeof parsed === 'object') resolve(parsed as Record<string, unknown>);
        } catch {
          // not a JSON line: plain output
        }
      }
    });
    child.once('exit', (code, signal) =>
      reject(new Error(`${opts.name} exited (code ${code}, signal ${signal}) before it was ready:\n${tail(logFile)}`)),
    );
  });
  firstJsonLine.catch(() => {}); // callers that never wait for it must not get an unhandled rejection
  child.stderr!.on('data', (chunk: Buffer) => log.write(chunk));
  child.once('error', (err) => log.write(`spawn error: ${err.message}\n`));
  if (child.pid === undefined) throw new Error(`${opts.name}: could not start ${opts.command}`);
  return {
    name: opts.name,
    pid: child.pid,
    child,
    logFile,
    firstJsonLine,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const killed = await Promise.race([exit.then(() => true), sleep(5000).then(() => false)]);
      if (!killed) {
        child.kill('SIGKILL');
        await exit;
      }
      log.end();
    },
  };
}

/** Waits until `check` resolves true, failing after `timeoutMs` or when the service exits. */
export async function waitUntil(service: Service, what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (service.child.exitCode !== null || service.child.signalCode !== null) {
      throw new Error(`${service.name} exited while waiting for ${what}:\n${tail(service.logFile)}`);
    }
    if (await check().catch(() => false)) return;
    await sleep(50);
  }
  throw new Error(`${service.name}: ${what} not reached within ${timeoutMs} ms:\n${tail(service.logFile)}`);
}

/** A free TCP port on 127.0.0.1, for programs that cannot listen on port 0 and report it (Redis, nginx, CHP). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** True when something accepts TCP connections on the port. */
export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

/** GET a URL on loopback and return the status (and body, small responses only). */
export async function httpGet(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { headers, redirect: 'manual' });
  return { status: res.status, body: await res.text() };
}
