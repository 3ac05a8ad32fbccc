/**
 * The `process` runtime: each desktop is a local process listening on a free loopback port
 * (the `demo` type, or any command a catalog entry names). Processes run in their own process
 * group, so stop and remove take their children along.
 *
 * Its bookkeeping lives on disk, one folder per desktop under <DATA_DIR>/processes/<runtimeId>
 * (record.json, mode 0600 because it holds the desktop's env, and output.log), so a restarted
 * control plane finds its still-running processes again. A pid is trusted only together with
 * the process start time recorded next to it (Linux /proc), so a reused pid is never mistaken
 * for a desktop; and every process carries DESKHUB_RUNTIME_ID in its environment, so one started
 * just before a crash, whose pid never reached the record, is still found and adopted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, openSync, closeSync, existsSync, readFileSync } from 'node:fs';
import { access, lstat, mkdir, open as openFile, readdir, readFile, rm, writeFile, rename } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import type { Logger } from '@deskhub/config';
import type { Upstream } from '@deskhub/route-stream';
import type { CatalogEntry } from '../catalog.ts';
import { substitute } from '../placeholders.ts';
import type { Availability, DesktopRuntime, DesktopSpec, HomeStatus, RuntimeEvent, RuntimeInstance, RuntimeStatus } from './types.ts';

export interface ProcessRuntimeOptions {
  /** Records live in <dataDir>/processes. */
  dataDir: string;
  logger: Logger;
  /** Loopback address the desktops listen on. */
  host?: string;
  /** Stop every desktop process on close() (the embedded start); otherwise they outlive a restart. */
  stopOnClose?: boolean;
  /** How often processes this instance did not start itself are checked for liveness. */
  pollIntervalMs?: number;
  /** SIGTERM, then SIGKILL after this long. */
  stopGraceMs?: number;
}

interface ProcessRecord {
  runtimeId: string;
  desktopId: string;
  proxyPath: string;
  typeId: string;
  /** argv and env with `{port}` still in them: filled anew at every start. */
  command: string[];
  env: Record<string, string>;
  cwd: string;
  scheme: Upstream['scheme'];
  verifyTls: boolean;
  host: string;
  port: number;
  pid: number | null;
  /** /proc/<pid>/stat field 22, as text; null where /proc is missing. */
  startTime: string | null;
  running: boolean;
  reason: string | null;
  createdAt: string;
  /** Its home's id (a directory under <dataDir>/homes), if it has one. */
  homeId?: string;
}

/** Environment a desktop process inherits; anything else (DATABASE_URL, SECRET_KEY...) stays with deskhub. */
const INHERITED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'USER', 'LOGNAME'];
const MARKER = 'DESKHUB_RUNTIME_ID';
/** A home's folder name (the control plane's home id, a UUID): nothing else under homes/ is one. */
const HOME_ID = /^[0-9a-f-]{36}$/;

/** Bytes in the files under `dir` (a home's size), not following links; null if unreadable. */
async function treeSize(dir: string): Promise<number | null> {
  try {
    let total = 0;
    const pending = [dir];
    while (pending.length > 0) {
      const current = pending.pop()!;
      for (const entry of await readdir(current, { withFileTypes: true })) {
        const full = path.join(current, entry.name);
        if (entry.isDirectory()) pending.push(full);
        else if (entry.isFile()) total += (await lstat(full)).size;
      }
    }
    return total;
  } catch {
    return null;
  }
}

function procStat(pid: number): { state: string; startTime: string } | null {
  const text = readFileSyncSafe(`/proc/${pid}/stat`);
  if (text === null) return null;
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '?', startTime: fields[19] ?? '' };
}

function readFileSyncSafe(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

const hasProc = existsSync('/proc/self/stat');

/** Whether the process recorded as (pid, startTime) still runs. */
function isAlive(pid: number, startTime: string | null): boolean {
  if (!hasProc) {
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
  const stat = procStat(pid);
  if (!stat || stat.state === 'Z' || stat.state === 'X') return false;
  return startTime === null || stat.startTime === startTime;
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Finds a process by the DESKHUB_RUNTIME_ID in its environment (the pid never made it to the record). */
async function findByMarker(runtimeId: string): Promise<number | null> {
  if (!hasProc) return null;
  const needle = `${MARKER}=${runtimeId}\0`;
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const environ = await readFile(`/proc/${name}/environ`, 'latin1').catch(() => '');
    if (environ.includes(needle)) return Number(name);
  }
  return null;
}

async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `process was killed by ${signal}` : `process exited with code ${code}`;
}

async function executableOnPath(command: string): Promise<boolean> {
  const candidates = command.includes('/') ? [command] : (process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, command));
  for (const candidate of candidates) {
    try {
      await access(candidate, fsConstants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

export class ProcessRuntime implements DesktopRuntime {
  readonly name = 'process' as const;
  private readonly dir: string;
  /** Homes live in <dataDir>/homes/<id>, kept after their desktops are removed. */
  private readonly homesDir: string;
  private readonly host: string;
  private readonly logger: Logger;
  private readonly records = new Map<string, ProcessRecord>();
  private readonly children = new Map<string, ChildProcess>();
  /** Runtime ids being stopped on purpose: their exit is not news for watchers. */
  private readonly stopping = new Set<string>();
  /** Runtime ids being spawned: recorded as running, not yet known as our children. */
  private readonly spawning = new Set<string>();
  private readonly saves = new Map<string, Promise<void>>();
  private readonly watchers = new Set<(status: RuntimeStatus) => void>();
  private readonly pollTimer: NodeJS.Timeout;
  private readonly loaded: Promise<void>;
  private closed = false;

  constructor(private readonly options: ProcessRuntimeOptions) {
    this.dir = path.join(options.dataDir, 'processes');
    this.homesDir = path.join(options.dataDir, 'homes');
    this.host = options.host ?? '127.0.0.1';
    this.logger = options.logger.child({ runtime: 'process' });
    this.loaded = this.load().catch((err: Error) => {
      throw new Error(`the process runtime cannot keep its desktop records in ${this.dir}: ${err.message}`);
    });
    // Reported where it is awaited (available, create, list...): not an unhandled rejection that ends deskhub.
    this.loaded.catch(() => {});
    this.pollTimer = setInterval(() => void this.pollAdopted(), options.pollIntervalMs ?? 1000);
    this.pollTimer.unref();
  }

  /** Reads the records left by earlier runs and adopts their live processes. */
  private async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const runtimeId of await readdir(this.dir)) {
      const folder = path.join(this.dir, runtimeId);
      const text = await readFile(path.join(folder, 'record.json'), 'utf8').catch(() => null);
      if (text === null) {
        // Killed between mkdir and the first record write: nothing was started yet.
        await rm(folder, { recursive: true, force: true });
        continue;
      }
      const record = JSON.parse(text) as ProcessRecord;
      if (record.running) {
        if (record.pid === null) {
          const pid = await findByMarker(record.runtimeId);
          if (pid !== null) {
            record.pid = pid;
            record.startTime = procStat(pid)?.startTime ?? null;
          }
        }
        this.records.set(record.runtimeId, record);
        if (record.pid === null || !isAlive(record.pid, record.startTime)) {
          record.running = false;
          record.reason = 'process ended while deskhub was not running (exit status unknown)';
        } else {
          this.logger.info({ runtimeId: record.runtimeId, pid: record.pid, desktopId: record.desktopId }, 'found running desktop process from an earlier run');
        }
        await this.save(record);
      }
      this.records.set(record.runtimeId, record);
    }
  }

  /** Writes the record as it is now; writes of one record happen one after another, each atomically. */
  private save(record: ProcessRecord): Promise<void> {
    const previous = this.saves.get(record.runtimeId) ?? Promise.resolve();
    const next = previous.then(async () => {
      if (!this.records.has(record.runtimeId)) return; // removed meanwhile
      const folder = path.join(this.dir, record.runtimeId);
      // A name no other writer uses: two runtimes in one process (a restart inside the tests, the
      // old one still saving) shared `record.json.<pid>.tmp` and interleaved their writes into it.
      const tmp = path.join(folder, `record.json.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
      await writeFile(tmp, JSON.stringify(record, null, 2), { mode: 0o600 });
      await rename(tmp, path.join(folder, 'record.json'));
    });
    const settled = next.catch(() => {});
    this.saves.set(record.runtimeId, settled);
    void settled.then(() => {
      if (this.saves.get(record.runtimeId) === settled) this.saves.delete(record.runtimeId);
    });
    return next;
  }

  private status(record: ProcessRecord): RuntimeStatus {
    const status: RuntimeStatus = { runtimeId: record.runtimeId, desktopId: record.desktopId, running: record.running };
    if (record.reason && !record.running) status.reason = record.reason;
    if (record.running) status.upstream = this.upstream(record);
    return status;
  }

  private upstream(record: ProcessRecord): Upstream {
    return { scheme: record.scheme, host: record.host, port: record.port, verifyTls: record.verifyTls };
  }

  private async markExited(record: ProcessRecord, reason: string, notify: boolean): Promise<void> {
    if (!record.running) return;
    record.running = false;
    record.reason = reason;
    this.children.delete(record.runtimeId);
    await this.save(record).catch(() => {});
    if (notify) for (const watcher of this.watchers) watcher(this.status(record));
  }

  /** Processes adopted from an earlier run are not our children: nobody tells us when they end. */
  private async pollAdopted(): Promise<void> {
    if (this.closed) return;
    await this.loaded.catch(() => {});
    for (const record of this.records.values()) {
      const id = record.runtimeId;
      if (!record.running || this.children.has(id) || this.stopping.has(id) || this.spawning.has(id)) continue;
      if (record.pid === null || !isAlive(record.pid, record.startTime)) {
        this.logger.warn({ runtimeId: record.runtimeId, desktopId: record.desktopId }, 'desktop process ended');
        await this.markExited(record, 'process ended (exit status unknown: started by an earlier run of deskhub)', true);
      }
    }
  }

  async available(): Promise<Availability> {
    try {
      await this.loaded;
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
    return { ok: true };
  }

  async availableFor(type: CatalogEntry): Promise<Availability> {
    const command = type.command?.[0];
    if (!command) return { ok: false, reason: 'the catalog entry has no command' };
    if (!(await executableOnPath(command))) return { ok: false, reason: `command not found or not executable: ${command}` };
    return { ok: true };
  }

  async create(spec: DesktopSpec, onEvent?: (event: RuntimeEvent) => void): Promise<RuntimeInstance> {
    await this.loaded;
    if (!spec.type.command) throw new Error(`desktop type ${spec.type.id} has no command`);
    const runtimeId = `proc-${randomBytes(6).toString('hex')}`;
    let env = spec.env;
    if (spec.home) {
      // A process has no mount namespace: its home is a directory, and HOME says where.
      const home = this.homeDir(spec.home.id);
      await mkdir(home, { recursive: true, mode: 0o700 });
      env = { ...env, HOME: home };
    }
    const record: ProcessRecord = {
      runtimeId,
      desktopId: spec.desktopId,
      proxyPath: spec.proxyPath,
      typeId: spec.type.id,
      command: spec.type.command,
      env,
      cwd: spec.type.workingDir ?? this.dir,
      scheme: spec.type.scheme,
      verifyTls: spec.type.verifyTls,
      host: this.host,
      port: 0,
      pid: null,
      startTime: null,
      running: false,
      reason: null,
      createdAt: new Date().toISOString(),
      ...(spec.home ? { homeId: spec.home.id } : {}),
    };
    await mkdir(path.join(this.dir, runtimeId), { recursive: true, mode: 0o700 });
    this.records.set(runtimeId, record);
    await this.save(record);
    try {
      await this.spawn(record, onEvent);
    } catch (err) {
      // Nothing runs: leave no record behind for a create that never happened.
      this.records.delete(runtimeId);
      await this.saves.get(runtimeId);
      await rm(path.join(this.dir, runtimeId), { recursive: true, force: true });
      throw err;
    }
    return { runtimeId, upstream: this.upstream(record) };
  }

  private async spawn(record: ProcessRecord, onEvent?: (event: RuntimeEvent) => void): Promise<void> {
    this.spawning.add(record.runtimeId);
    try {
      await this.spawnProcess(record, onEvent);
    } finally {
      this.spawning.delete(record.runtimeId);
    }
  }

  /**
   * A port the kernel says is free and no desktop of ours holds. Checked against the records after
   * each probe, not before: with many desktops starting at once, two probes can get the same port
   * back (it is free again once the probe closes), and the one that binds second exits with
   * "Address already in use". The caller claims the port (record.port, running) before it awaits
   * anything, so the next allocation sees it.
   */
  private async allocatePort(): Promise<number> {
    for (let i = 0; i < 50; i++) {
      const port = await freePort(this.host);
      let held = false;
      for (const r of this.records.values()) if (r.running && r.port === port) held = true;
      if (!held) return port;
    }
    throw new Error(`no free port on ${this.host} that no desktop process holds`);
  }

  private async spawnProcess(record: ProcessRecord, onEvent?: (event: RuntimeEvent) => void): Promise<void> {
    const port = await this.allocatePort();
    const values = { port: String(port) };
    const argv = record.command.map((arg) => substitute(arg, values));
    const env: Record<string, string> = {};
    for (const name of INHERITED_ENV) if (process.env[name] !== undefined) env[name] = process.env[name]!;
    for (const [name, value] of Object.entries(record.env)) env[name] = substitute(value, values);
    env[MARKER] = record.runtimeId;

    record.port = port;
    record.pid = null;
    record.startTime = null;
    record.running = true; // before spawn: a crash right after it must leave a record that says "look for me"
    record.reason = null;
    await this.save(record);

    const output = openSync(path.join(this.dir, record.runtimeId, 'output.log'), 'a', 0o600);
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { cwd: record.cwd, env, detached: true, stdio: ['ignore', output, output] });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
    } catch (err) {
      record.running = false;
      record.reason = `could not start ${argv[0]}: ${(err as Error).message}`;
      await this.save(record);
      throw new Error(record.reason);
    } finally {
      closeSync(output);
    }
    child.unref();
    record.pid = child.pid!;
    record.startTime = procStat(record.pid)?.startTime ?? null;
    this.children.set(record.runtimeId, child);
    child.once('exit', (code, signal) => {
      const intended = this.stopping.has(record.runtimeId);
      if (!intended) this.logger.warn({ runtimeId: record.runtimeId, desktopId: record.desktopId, code, signal }, 'desktop process exited');
      void this.markExited(record, intended ? 'stopped' : describeExit(code, signal), !intended);
    });
    await this.save(record);
    onEvent?.({ kind: 'start', message: `process ${record.pid} started, listening on ${record.host}:${port}` });
  }

  async start(runtimeId: string): Promise<RuntimeInstance> {
    await this.loaded;
    const record = this.records.get(runtimeId);
    if (!record) throw new Error(`no desktop process ${runtimeId}`);
    if (record.running && record.pid !== null && isAlive(record.pid, record.startTime)) return { runtimeId, upstream: this.upstream(record) };
    await this.spawn(record);
    return { runtimeId, upstream: this.upstream(record) };
  }

  async stop(runtimeId: string): Promise<void> {
    await this.loaded;
    const record = this.records.get(runtimeId);
    if (!record || !record.running) return;
    this.stopping.add(runtimeId);
    try {
      const pid = record.pid;
      if (pid !== null && isAlive(pid, record.startTime)) {
        signalGroup(pid, 'SIGTERM');
        if (!(await this.waitForExit(record, pid, this.options.stopGraceMs ?? 5000))) {
          this.logger.warn({ runtimeId, pid }, 'desktop process ignored SIGTERM; killing it');
        }
        // The leader may be gone while others in its group linger.
        signalGroup(pid, 'SIGKILL');
        await this.waitForExit(record, pid, 5000);
      }
      await this.markExited(record, 'stopped', false);
    } finally {
      this.stopping.delete(runtimeId);
    }
  }

  private async waitForExit(record: ProcessRecord, pid: number, timeoutMs: number): Promise<boolean> {
    const child = this.children.get(record.runtimeId);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      // A child of ours is dead only once Node has reaped it (its exit event); /proc still shows a zombie until then.
      if (child ? child.exitCode !== null || child.signalCode !== null : !isAlive(pid, record.startTime)) return true;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return false;
  }

  async remove(runtimeId: string): Promise<void> {
    await this.loaded;
    if (!this.records.has(runtimeId)) return;
    await this.stop(runtimeId);
    this.records.delete(runtimeId);
    await this.saves.get(runtimeId);
    await rm(path.join(this.dir, runtimeId), { recursive: true, force: true });
  }

  private homeDir(homeId: string): string {
    if (!HOME_ID.test(homeId)) throw new Error(`not a home id: ${homeId}`);
    return path.join(this.homesDir, homeId);
  }

  async listHomes(): Promise<HomeStatus[]> {
    const ids = await readdir(this.homesDir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    return Promise.all(ids.filter((id) => HOME_ID.test(id)).map(async (homeId) => ({ homeId, sizeBytes: await treeSize(path.join(this.homesDir, homeId)) })));
  }

  async removeHome(homeId: string): Promise<void> {
    await this.loaded;
    const user = [...this.records.values()].find((r) => r.homeId === homeId);
    if (user) throw new Error(`home ${homeId} is in use by the desktop at ${user.proxyPath}`);
    await rm(this.homeDir(homeId), { recursive: true, force: true });
  }

  async inspect(runtimeId: string): Promise<RuntimeStatus | null> {
    await this.loaded;
    const record = this.records.get(runtimeId);
    return record ? this.status(record) : null;
  }

  async list(): Promise<RuntimeStatus[]> {
    await this.loaded;
    await this.pollAdopted();
    return [...this.records.values()].map((record) => this.status(record));
  }

  watch(onExit: (status: RuntimeStatus) => void): () => void {
    this.watchers.add(onExit);
    return () => this.watchers.delete(onExit);
  }

  async logs(runtimeId: string, lines: number): Promise<string> {
    const file = path.join(this.dir, runtimeId, 'output.log');
    const handle = await openFile(file, 'r').catch(() => null);
    if (!handle) return '';
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, 64 * 1024);
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, size - length);
      return buffer.toString('utf8').split('\n').filter((line) => line.length > 0).slice(-lines).join('\n');
    } finally {
      await handle.close();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pollTimer);
    await this.loaded.catch(() => {});
    if (this.options.stopOnClose) {
      await Promise.all([...this.records.values()].filter((r) => r.running).map((r) => this.stop(r.runtimeId).catch(() => {})));
    }
    this.watchers.clear();
  }
}
