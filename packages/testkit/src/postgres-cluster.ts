/**
 * A private PostgreSQL server for a test that must crash or restart Postgres without touching the
 * shared one on 5432: `initdb` into a temp folder, `postgres` on a free 127.0.0.1 port, trust
 * authentication for the `deskhub` role, one database `deskhub`. Postgres refuses to run as root,
 * so as root it runs as the `postgres` user (runuser), which owns the folder.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './net.ts';

const run = promisify(execFile);

export interface PostgresCluster {
  /** postgres://deskhub@127.0.0.1:<port>/deskhub */
  readonly url: string;
  readonly port: number;
  /** True while the server process runs. */
  readonly running: boolean;
  /** `pg_ctl stop -m immediate`: every backend ends at once, no checkpoint; the next start recovers from the WAL, as after a crash. */
  crash(): Promise<void>;
  /** Starts it again on the same port and data folder; resolves once it accepts connections. */
  start(): Promise<void>;
  /** Stops it (fast) and removes its folder. */
  close(): Promise<void>;
}

/** The newest installed server's bin folder (Debian: /usr/lib/postgresql/<major>/bin). */
function binDir(): string {
  const root = '/usr/lib/postgresql';
  const majors = existsSync(root) ? readdirSync(root).filter((d) => existsSync(join(root, d, 'bin/initdb'))).sort((a, b) => Number(b) - Number(a)) : [];
  if (majors.length === 0) throw new Error(`no PostgreSQL server under ${root} (Debian package postgresql; scripts/ensure-services.sh installs it)`);
  return join(root, majors[0]!, 'bin');
}

export async function startPostgresCluster(): Promise<PostgresCluster> {
  const bin = binDir();
  const asRoot = process.getuid?.() === 0;
  const dir = mkdtempSync(join(tmpdir(), 'deskhub-pg-'));
  const data = join(dir, 'data');
  const owner = asRoot ? await run('id', ['-u', 'postgres']).then((r) => Number(r.stdout.trim())) : undefined;
  if (owner !== undefined) chownSync(dir, owner, owner);
  // Every Postgres command runs as the folder's owner.
  const as = (command: string, args: string[]): [string, string[]] => (asRoot ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args]);
  const exec = (command: string, args: string[]) => run(...as(join(bin, command), args), { timeout: 60_000 });
  await exec('initdb', ['-D', data, '-U', 'deskhub', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C.UTF-8']);
  const port = await freePort();
  let child: ChildProcess | null = null;
  let output = '';

  async function start(): Promise<void> {
    const [command, args] = as(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=50']);
    const proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    proc.stderr!.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
    proc.stdout!.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
    proc.once('exit', () => {
      if (child === proc) child = null;
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (!child) throw new Error(`postgres exited during start-up:\n${output}`);
      const ready = await exec('pg_isready', ['-h', '127.0.0.1', '-p', String(port), '-U', 'deskhub', '-d', 'postgres']).then(() => true, () => false);
      if (ready) return;
      if (Date.now() > deadline) throw new Error(`postgres did not accept connections within 30 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async function stop(mode: 'immediate' | 'fast'): Promise<void> {
    if (!child) return;
    const exited = new Promise<void>((resolve) => child!.once('exit', () => resolve()));
    await exec('pg_ctl', ['stop', '-D', data, '-m', mode, '-w', '-t', '30']).catch(() => child?.kill('SIGKILL'));
    await exited;
  }

  await start();
  await run(...as(join(bin, 'psql'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'deskhub', '-d', 'postgres', '-qc', 'CREATE DATABASE deskhub']));
  const cleanupOnExit = () => child?.kill('SIGKILL');
  process.once('exit', cleanupOnExit);
  return {
    url: `postgres://deskhub@127.0.0.1:${port}/deskhub`,
    port,
    get running() {
      return child !== null;
    },
    crash: () => stop('immediate'),
    start,
    async close() {
      process.off('exit', cleanupOnExit);
      await stop('fast');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
