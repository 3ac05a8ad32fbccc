/**
 * The soak's side of Docker Engine: this run's containers (by their deskhub.instance label, never
 * anyone else's), removing them and their network afterwards, and restarting the shared dockerd
 * the way an operator does (SIGTERM, wait for it to exit, start it again), always leaving it
 * running as scripts/ensure-services.sh starts it.
 */
import { execFile, spawn } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { removeHostGuard } from '../../services/control-plane/src/runtime/docker/host-guard.ts';
import { RUN_MARK } from './processes.ts';

const run = promisify(execFile);

export interface Container {
  id: string;
  desktopId: string;
  /** running, exited, created, ... */
  state: string;
}

/** Containers carrying this instance's label, running or not. */
export async function instanceContainers(instance: string): Promise<Container[]> {
  const { stdout } = await run('docker', ['ps', '-a', '--no-trunc', '--filter', `label=deskhub.instance=${instance}`, '--format', '{{.ID}} {{.Label "deskhub.desktop"}} {{.State}}'], { timeout: 30_000 });
  return stdout.trim().split('\n').filter(Boolean).map((line) => {
    const [id = '', desktopId = '', state = ''] = line.split(' ');
    return { id, desktopId, state };
  });
}

/** Runs `cmd` in a container (docker exec), returning its output. */
export async function execIn(containerId: string, cmd: string[]): Promise<string> {
  const { stdout } = await run('docker', ['exec', containerId, ...cmd], { timeout: 30_000 });
  return stdout;
}

/** Removes this instance's containers, its network and the network's host guard. */
export async function dockerCleanup(instance: string, network: string): Promise<void> {
  const containers = await instanceContainers(instance).catch(() => []);
  if (containers.length > 0) await run('docker', ['rm', '-f', ...containers.map((c) => c.id)], { timeout: 60_000 }).catch(() => undefined);
  // deskhub keeps homes on purpose; the run's own go with it.
  const volumes = await run('docker', ['volume', 'ls', '-q', '--filter', `label=deskhub.instance=${instance}`]).catch(() => null);
  const names = volumes?.stdout.trim().split('\n').filter(Boolean) ?? [];
  if (names.length > 0) await run('docker', ['volume', 'rm', '-f', ...names], { timeout: 60_000 }).catch(() => undefined);
  const info = await run('docker', ['network', 'inspect', network, '--format', '{{.Id}} {{index .Options "com.docker.network.bridge.name"}}']).catch(() => null);
  if (!info) return;
  const [id = '', name = ''] = info.stdout.trim().split(' ');
  await run('docker', ['network', 'rm', network]).catch(() => undefined);
  await removeHostGuard(name && name !== '<no value>' ? name : `br-${id.slice(0, 12)}`).catch(() => undefined);
}

/** The shared engine's log, as scripts/ensure-services.sh names it. */
const DOCKERD_LOG = '/var/log/deskhub-dockerd.log';

function dockerdPid(): number | null {
  try {
    const pid = Number(readFileSync('/var/run/docker.pid', 'utf8').trim());
    return isAlive(pid) ? pid : null;
  } catch {
    return null;
  }
}

export async function dockerAnswers(): Promise<boolean> {
  return run('docker', ['info', '--format', '{{.ServerVersion}}'], { timeout: 10_000 }).then(() => true, () => false);
}

export async function liveRestoreEnabled(): Promise<boolean> {
  const { stdout } = await run('docker', ['info', '--format', '{{.LiveRestoreEnabled}}'], { timeout: 10_000 });
  return stdout.trim() === 'true';
}

/**
 * SIGTERM to dockerd, wait until it has exited, start it again (with `--live-restore` when asked,
 * on the command line only: /etc/docker/daemon.json is never edited) and wait until it answers.
 * Resolves with how long the engine did not answer, in ms.
 */
export async function restartDockerd(options: { liveRestore: boolean }): Promise<number> {
  const pid = dockerdPid();
  if (pid === null) throw new Error('dockerd is not running (no live pid in /var/run/docker.pid): run scripts/ensure-services.sh');
  const down = Date.now();
  process.kill(pid, 'SIGTERM');
  // dockerd gives each container its stop timeout (10 s by default) before it exits.
  const deadline = Date.now() + 120_000;
  while (isAlive(pid)) {
    if (Date.now() > deadline) throw new Error(`dockerd (pid ${pid}) did not exit within 120 s of SIGTERM`);
    await new Promise((r) => setTimeout(r, 200));
  }
  startDockerd(options.liveRestore);
  const upDeadline = Date.now() + 120_000;
  while (!(await dockerAnswers())) {
    if (Date.now() > upDeadline) throw new Error(`dockerd did not answer within 120 s of its start (log: ${DOCKERD_LOG})`);
    await new Promise((r) => setTimeout(r, 250));
  }
  return Date.now() - down;
}

/** Alive and not a zombie waiting to be reaped. */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** `nohup dockerd >>LOG 2>&1 &` as ensure-services.sh does (appending, so the earlier log stays), detached from the soak. */
function startDockerd(liveRestore: boolean): void {
  const log = openSync(DOCKERD_LOG, 'a');
  const env = { ...process.env };
  delete env[RUN_MARK]; // dockerd outlives the run: it is not one of its processes
  delete env.NODE_OPTIONS;
  const child = spawn('dockerd', liveRestore ? ['--live-restore'] : [], { detached: true, stdio: ['ignore', log, log], env });
  child.unref();
}

/** Leaves dockerd running exactly as ensure-services.sh starts it: answering, and without live-restore. */
export async function restoreDockerd(): Promise<void> {
  if (dockerdPid() === null || !(await dockerAnswers())) {
    if (dockerdPid() === null) startDockerd(false);
    const deadline = Date.now() + 120_000;
    while (!(await dockerAnswers())) {
      if (Date.now() > deadline) throw new Error(`dockerd does not answer; see ${DOCKERD_LOG}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  if (await liveRestoreEnabled()) await restartDockerd({ liveRestore: false });
}
