/** The machine a run came from, written into both result files: absolute numbers mean little without it. */
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { haproxyVersion } from './haproxy.ts';

export interface Machine {
  nproc: number;
  cpuModel: string;
  memoryGiB: number;
  kernel: string;
  node: string;
  nginx: string;
  haproxy: string;
  wrk: string;
  chp: string;
  redis: string;
  /** Open-file limit the proxies inherit: it caps how many WebSockets one proxy can hold (two descriptors each). */
  openFileLimit: number;
  /** 1-minute load average at the start and end: a busy machine makes every number noisier. */
  loadAverageStart: number;
  loadAverageEnd?: number;
  gitCommit: string;
  /** Measured code that differs from that commit (uncommitted changes), so a result is not pinned on the wrong code. */
  uncommitted: string[];
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch {
    return 'missing';
  }
}

/** The soft open-file limit of this process (inherited by every child), or the hard one. */
export function openFileLimit(which: 'soft' | 'hard' = 'soft'): number {
  try {
    const m = /^Max open files\s+(\d+)\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!m) return 1024;
    const v = which === 'soft' ? m[1]! : m[2]!;
    return v === 'unlimited' ? 1_048_576 : Number(v);
  } catch {
    return 1024;
  }
}

/** The code a run measures. */
const measuredPaths = ['services/proxy', 'services/control-plane', 'packages/route-stream', 'packages/config', 'bench'];

export function describeMachine(repoRoot: string): Machine {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1]!.trim();
  } catch {
    // keep os.cpus()'s answer
  }
  let chp = 'missing';
  try {
    const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'node_modules/configurable-http-proxy/package.json'), 'utf8')) as { version: string };
    chp = pkg.version;
  } catch {
    // reported as missing
  }
  return {
    nproc: os.availableParallelism(),
    cpuModel,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    nginx: run('sh', ['-c', 'nginx -v 2>&1']).replace(/^nginx version:\s*/, ''),
    haproxy: haproxyVersion(),
    wrk: (/wrk\s+(\S+)/.exec(run('sh', ['-c', 'wrk -v 2>&1 || true'])) ?? [])[1] ?? 'missing',
    chp,
    redis: (/v=(\S+)/.exec(run('redis-server', ['--version'])) ?? [])[1] ?? 'missing',
    openFileLimit: openFileLimit(),
    loadAverageStart: Math.round(os.loadavg()[0]! * 100) / 100,
    gitCommit: run('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']),
    uncommitted: measuredPaths.filter((p) => run('git', ['-C', repoRoot, 'status', '--porcelain', '--', p, ':!bench/results']) !== ''),
  };
}
