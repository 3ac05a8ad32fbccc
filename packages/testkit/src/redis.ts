/**
 * A real, private Redis server for a test: `redis-server` on a free 127.0.0.1 port with its own
 * data directory, which the test can stop, start again on the same port, or restart without its
 * data (the failures the route stream must survive). Never the shared 6379.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { freePort } from './net.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RedisServer {
  /** redis://127.0.0.1:<port> */
  readonly url: string;
  readonly port: number;
  /** Shuts the server down, writing its data to the data directory first (SHUTDOWN SAVE). */
  stop(): Promise<void>;
  /** Starts it again on the same port with the data directory as it is. */
  start(): Promise<void>;
  /** stop() then start(); with loseData the server is killed and comes back empty. */
  restart(options?: { loseData?: boolean }): Promise<void>;
  /** SIGKILL, and with loseData its data directory emptied: it stays down until start(). */
  kill(options?: { loseData?: boolean }): Promise<void>;
  /** Kills the server and removes its data directory. */
  close(): Promise<void>;
}

export interface StartRedisOptions {
  /** Append-only file on (fsync every second); default off, and no RDB save points either. */
  appendonly?: boolean;
  /** Path of redis-server; default $REDIS_SERVER or /usr/bin/redis-server. */
  binary?: string;
}

const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;

/** Servers still running when the test process exits are killed, so none outlives its test. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});


/** Sends one inline command and resolves with the first reply line (or rejects on error/timeout). */
function command(port: number, line: string, timeoutMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`redis ${line}: no reply within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${line}\r\n`));
    socket.on('data', (chunk: string) => {
      reply += chunk;
      const end = reply.indexOf('\r\n');
      if (end >= 0) {
        clearTimeout(timer);
        socket.end();
        resolve(reply.slice(0, end));
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`redis ${line}: connection closed without a reply`));
    });
  });
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  const binary = options.binary ?? process.env.REDIS_SERVER ?? '/usr/bin/redis-server';
  const dir = await mkdtemp(join(tmpdir(), 'deskhub-redis-'));
  const port = await freePort();
  let child: ChildProcess | null = null;
  let output = '';

  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--save', '',
    '--appendonly', options.appendonly ? 'yes' : 'no',
    '--daemonize', 'no',
    '--logfile', '',
    '--databases', '1',
  ];

  async function start(): Promise<void> {
    if (child) return;
    output = '';
    const proc = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    running.add(proc);
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString()).slice(-4000);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    let exited = false;
    proc.once('exit', () => {
      exited = true;
      running.delete(proc);
      if (child === proc) child = null;
    });
    const spawnError = new Promise<never>((_, reject) => proc.once('error', reject));
    spawnError.catch(() => undefined);
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (exited) throw new Error(`redis-server exited during start-up:\n${output}`);
      try {
        const reply = await Promise.race([command(port, 'PING', 500), spawnError]);
        if (reply === '+PONG') return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && (err as NodeJS.ErrnoException).path === binary) {
          throw new Error(`redis-server not found at ${binary} (set REDIS_SERVER)`);
        }
      }
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`redis-server did not answer PING within ${READY_TIMEOUT_MS} ms:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async function waitForExit(proc: ChildProcess): Promise<void> {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
      }, STOP_TIMEOUT_MS);
      proc.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  async function stop(): Promise<void> {
    const proc = child;
    if (!proc) return;
    // SHUTDOWN SAVE writes the data even without save points; the connection just closes.
    await command(port, 'SHUTDOWN SAVE', 2000).catch(() => undefined);
    await waitForExit(proc);
    child = null;
  }

  async function kill(): Promise<void> {
    const proc = child;
    if (!proc) return;
    proc.kill('SIGKILL');
    await waitForExit(proc);
    child = null;
  }

  async function wipe(): Promise<void> {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
  }

  await start();

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop,
    start,
    async kill(killOptions = {}) {
      await kill();
      if (killOptions.loseData) await wipe();
    },
    async restart(restartOptions = {}) {
      if (restartOptions.loseData) {
        await kill();
        await wipe();
      } else {
        await stop();
      }
      await start();
    },
    async close() {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
