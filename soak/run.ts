/**
 * `pnpm soak`: kills and restarts each part of deskhub in turn under steady desktop traffic and
 * open WebSockets, counts what was lost or left behind, and holds idle WebSockets through one
 * replica to a TLS upstream for a long time to see that its memory stays flat. Writes
 * soak/results/latest.{json,md}. See soak/README.md for what each scenario promises.
 *
 *   pnpm soak                  full: every scenario (two restart the shared dockerd), 10,000 idle WebSockets for 10 minutes
 *   pnpm soak --quick          short phases, no dockerd restart, 200 idle WebSockets for 9 s
 *   options: --scenarios a,b   --skip a,b   --sockets N   --minutes N   --out DIR
 *            (names: proxy-kill, control-plane-kill, control-plane-kill-mid-create, redis-data-loss,
 *             postgres-restart, docker-restart-live-restore, docker-restart, idle-websockets)
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openFileLimit } from '../bench/lib/machine.ts';
import { dockerCleanup, restoreDockerd } from './lib/docker.ts';
import { idleWebSockets, type IdleResult } from './lib/idle-websockets.ts';
import { orphanProcesses, RUN_MARK } from './lib/processes.ts';
import { updateReadme } from '../bench/lib/report.ts';
import { markdown, writeResults, type SoakResults } from './lib/report.ts';
import { runScenario, scenarioNames, scenarios, type ScenarioResult, type Timings } from './lib/scenarios.ts';
import { startTopology } from './lib/topology.ts';
import { DesktopTraffic } from './lib/traffic.ts';

const repoRoot = path.resolve(import.meta.dirname, '..');
const IDLE = 'idle-websockets';
const allNames = [...scenarioNames, IDLE];

function usage(message: string): never {
  process.stderr.write(`soak: ${message}\nusage: pnpm soak [--quick] [--scenarios ${allNames.join(',')}] [--skip ...] [--sockets N] [--minutes N] [--out DIR]\n`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      scenarios: { type: 'string' },
      skip: { type: 'string' },
      sockets: { type: 'string' },
      minutes: { type: 'string' },
      out: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
} catch (err) {
  usage((err as Error).message);
}
const args = parsed.values;
const quick = args.quick!;

function names(flag: string, value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const list = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (list.length === 0) usage(`--${flag}: expected a comma-separated list of scenarios`);
  for (const n of list) if (!allNames.includes(n)) usage(`--${flag}: unknown scenario "${n}" (known: ${allNames.join(', ')})`);
  return list;
}
function wholeNumber(flag: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) usage(`--${flag}: expected a whole number from ${min} to ${max}, got "${value}"`);
  return n;
}

const chosen = names('scenarios', args.scenarios);
const skipped = new Set(names('skip', args.skip) ?? []);
// --quick never restarts the shared dockerd unless a Docker scenario is named explicitly.
const selected = (chosen ?? allNames.filter((n) => !(quick && scenarios.find((s) => s.name === n)?.restartsDocker))).filter((n) => !skipped.has(n));
if (selected.length === 0) usage('no scenario left to run');
const sockets = wholeNumber('sockets', args.sockets, quick ? 200 : 10_000, 1, 100_000);
const minutes = wholeNumber('minutes', args.minutes, 10, 1, 600);
const outDir = path.resolve(args.out ?? path.join(repoRoot, 'soak/results'));

const timings: Timings = quick
  ? { beforeMs: 500, downMs: 1000, afterMs: 1000, settleMs: 30_000, desktops: 2, socketsPerDesktop: 2 }
  : { beforeMs: 10_000, downMs: 10_000, afterMs: 15_000, settleMs: 60_000, desktops: 3, socketsPerDesktop: 10 };
const RECONCILE_MS = 2000;

function log(message: string): void {
  process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

/**
 * The replica holds two descriptors per idle socket (browser side and upstream side) and this
 * process one. The open-file limit is inherited by every child: raise this process's own (soft
 * and hard) when it may (root with CAP_SYS_RESOURCE), else use (limit - 400) / 2 sockets, as
 * bench does, and say so.
 */
function fitSockets(wanted: number): number {
  const need = 2 * wanted + 400;
  if (openFileLimit() < need) {
    try {
      execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${need}:${Math.max(need, openFileLimit('hard'))}`], { stdio: 'ignore' });
      log(`open-file limit raised to ${openFileLimit()}`);
    } catch {
      // not permitted here: fewer sockets below
    }
  }
  const limit = openFileLimit();
  const fit = Math.min(wanted, Math.floor((limit - 400) / 2));
  if (fit < wanted) log(`open-file limit ${limit} (raising it was not permitted): ${fit} idle WebSockets instead of ${wanted}`);
  return fit;
}

function git(...a: string[]): string {
  try {
    return execFileSync('git', ['-C', repoRoot, ...a], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<number> {
  const runId = randomBytes(4).toString('hex');
  process.env[RUN_MARK] = runId;
  mkdirSync(outDir, { recursive: true });
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'deskhub-soak-'));
  const argv = process.argv.slice(2).join(' ');
  const results: SoakResults = {
    mode: quick ? 'quick' : 'full',
    command: `pnpm soak${argv ? ` ${argv}` : ''}`,
    startedAt: new Date().toISOString(),
    finishedAt: '',
    machine: { nproc: os.availableParallelism(), loadAverageStart: Math.round(os.loadavg()[0]! * 100) / 100, loadAverageEnd: 0, gitCommit: git('rev-parse', '--short', 'HEAD'), openFileLimit: openFileLimit(), node: process.version },
    settings: { ...timings, reconcileMs: RECONCILE_MS, idleSockets: sockets, idleIntervals: quick ? 3 : minutes, idleIntervalSeconds: quick ? 3 : 60 },
    scenarios: [],
    idle: null,
    errors: [],
    pass: false,
  };
  log(`${results.mode} run ${runId}: ${selected.join(', ')}; logs in ${runDir}`);

  const chaos = scenarios.filter((s) => selected.includes(s.name));
  if (chaos.length > 0) {
    let topology;
    try {
      topology = await startTopology({ runDir, runId, reconcileMs: RECONCILE_MS });
    } catch (err) {
      results.errors.push(`the topology did not start: ${(err as Error).message}`);
    }
    if (topology) {
      const traffic = new DesktopTraffic(topology);
      const ctx = { topology, traffic, runId, timings, gone: [] as string[], log };
      try {
        for (const s of chaos) {
          log(`scenario ${s.name}`);
          const r: ScenarioResult = await runScenario(s, ctx);
          log(`  ${r.pass ? 'pass' : 'FAIL'}: ${r.requests} requests, ${r.lost} lost (${r.lostExpected} expected), ${r.dropped} WebSockets dropped (${r.droppedExpected} expected), stale ${r.staleRoutes}, orphan containers ${r.orphanContainers}, orphan processes ${r.orphanProcesses}, wrong states ${r.wrongStates}${r.problems.length ? `\n    ${r.problems.slice(0, 5).join('\n    ')}` : ''}`);
          results.scenarios.push(r);
        }
      } finally {
        traffic.closeAll();
        await traffic.stop();
        await topology.close().catch((err: Error) => results.errors.push(`teardown: ${err.message}`));
        if (chaos.some((s) => s.restartsDocker)) await restoreDockerd().catch((err: Error) => results.errors.push(`dockerd not restored: ${err.message}`));
        await dockerCleanup(topology.instance, `deskhub-${topology.instance}`);
      }
    }
  }

  if (selected.includes(IDLE)) {
    const count = fitSockets(sockets);
    log(`idle WebSockets: ${count} for ${quick ? '9 s' : `${minutes} min`}`);
    try {
      const idle: IdleResult = await idleWebSockets(repoRoot, runDir, { count, intervals: quick ? 3 : minutes, intervalSeconds: quick ? 3 : 60, log });
      results.idle = idle;
    } catch (err) {
      results.errors.push(`idle WebSockets: ${(err as Error).message}`);
    }
  }

  const strays = orphanProcesses(runId);
  if (strays.length > 0) {
    results.errors.push(`${strays.length} processes of the run outlived it (killed now): ${strays.join(', ')}`);
    for (const pid of strays) process.kill(pid, 'SIGKILL');
  }
  results.finishedAt = new Date().toISOString();
  results.machine.loadAverageEnd = Math.round(os.loadavg()[0]! * 100) / 100;
  results.pass = results.errors.length === 0 && results.scenarios.every((s) => s.pass) && (results.idle?.flat ?? true);
  writeResults(outDir, results);
  const text = markdown(results);
  process.stdout.write(text);
  // A full run of everything into soak/results/ is the one the READMEs quote.
  if (!quick && outDir === path.join(repoRoot, 'soak/results') && selected.length === allNames.length) {
    for (const readme of ['README.md', 'soak/README.md']) updateReadme(path.join(repoRoot, readme), text, 'soak:latest');
  }
  log(`${results.pass ? 'every count as promised' : 'NOT every count as promised'}; results in ${outDir}/latest.{md,json}`);
  return results.pass ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`soak: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
