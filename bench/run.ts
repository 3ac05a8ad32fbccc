/**
 * `pnpm bench`: the same traffic six ways (direct, nginx, HAProxy, configurable-http-proxy, deskhub's
 * proxy without and with access control), interleaved in rounds, plus the route-stream and
 * access-token figures only deskhub has. Writes
 * bench/results/latest.{json,md} and timestamped copies. See bench/README.md for each figure.
 *
 *   pnpm bench                 full run: 3 rounds, 8 s per run, 1,000 and 10,000 idle WebSockets
 *   pnpm bench --quick         every figure briefly (1 round, 2 s runs): proves the harness works
 *   pnpm bench --only pool     the warm pool's figures alone (lib/pool.ts; no proxy targets started)
 *   pnpm bench --only pool,fleet,first-frame   the control plane's and the desktop's figures alone
 *   options: --rounds N  --seconds S  --targets direct,nginx,haproxy,chp,deskhub,deskhub+auth  --out DIR  --cpu-prof
 *            --skip small,mib,rtt,frames,memory,hold,tls-memory,change,propagation,snapshot,verify,pool,fleet,first-frame  --only (the same names)
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnService, type Service } from './lib/child.ts';
import { replicaAllocator, startDeskhubStream, type DeskhubStream } from './lib/deskhub.ts';
import {
  idleHold, idleSocketMemory, mibBodies, routeChangeWithOpenSockets, settledRss, smallRequests, wsFrames, wsRoundTrips, type Settings,
} from './lib/figures.ts';
import { describeMachine, openFileLimit } from './lib/machine.ts';
import { summarizeProfiles } from './lib/profile.ts';
import { checkRoundTwo, checkTargets, markdown, medians, ratios, updateReadme, type RoundResult, type RunResults } from './lib/report.ts';
import { standingChart } from './lib/chart.ts';
import { lookupFigures, routePropagation, snapshotLoad, type LoadedSnapshot } from './lib/route-figures.ts';
import { allTargets, authFigures, startTarget, targetLabels, type Target, type TargetName } from './lib/targets.ts';
import { benchAccessToken } from '../packages/access-token/bench.ts';
import { poolFigures, poolMarkdown, type PoolSettings } from './lib/pool.ts';
import { fleetFigures, fleetMarkdown, type FleetSettings } from './lib/fleet.ts';
import { firstFrameFigures, firstFrameMarkdown, type FirstFrameSettings } from './lib/first-frame.ts';
import { tlsIdleMemory } from './lib/tls-memory.ts';
import { checkWrk, runWrk } from './lib/wrk.ts';

const figureNames = ['small', 'mib', 'rtt', 'frames', 'memory', 'hold', 'tls-memory', 'change', 'propagation', 'snapshot', 'verify', 'pool', 'fleet', 'first-frame'] as const;
type FigureName = (typeof figureNames)[number];
/** Figures measured through the targets: without any of them no target is started. */
const targetFigures: FigureName[] = ['small', 'mib', 'rtt', 'frames', 'memory', 'hold', 'change'];
/** The control plane's and the desktop's cases, each on a deployed topology of its own. */
const controlFigures: FigureName[] = ['pool', 'fleet', 'first-frame'];

const repoRoot = path.resolve(import.meta.dirname, '..');

function usage(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    targets: { type: 'string' },
    skip: { type: 'string' },
    only: { type: 'string' },
    out: { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
  },
  strict: true,
});

const quick = args.quick;
const rounds = args.rounds ? Number(args.rounds) : quick ? 1 : 3;
if (!Number.isInteger(rounds) || rounds < 1) usage(`--rounds: expected a whole number >= 1, got "${args.rounds}"`);
const seconds = args.seconds ? Number(args.seconds) : quick ? 2 : 8;
if (!Number.isInteger(seconds) || seconds < 1) usage(`--seconds: expected a whole number >= 1, got "${args.seconds}"`);
const requestedTargets = (args.targets ? args.targets.split(',') : allTargets) as TargetName[];
for (const t of requestedTargets) if (!allTargets.includes(t)) usage(`--targets: unknown target "${t}" (known: ${allTargets.join(', ')})`);
if (args.skip && args.only) usage('--skip and --only: give one of them');
const only = (args.only ? args.only.split(',') : []) as FigureName[];
for (const f of only) if (!figureNames.includes(f)) usage(`--only: unknown figure "${f}" (known: ${figureNames.join(', ')})`);
const skip = new Set((args.skip ? args.skip.split(',') : figureNames.filter((f) => only.length && !only.includes(f))) as FigureName[]);
for (const f of skip) if (!figureNames.includes(f)) usage(`--skip: unknown figure "${f}" (known: ${figureNames.join(', ')})`);
const targets = targetFigures.some((f) => !skip.has(f)) ? requestedTargets : [];
const outDir = path.resolve(args.out ?? path.join(repoRoot, 'bench/results'));

// A proxy holds two descriptors per WebSocket (client and upstream), and the limit is inherited by
// every child: above (limit - headroom) / 2 sockets the proxy would fail for a reason that is not its own.
const fdLimit = openFileLimit();
const maxSocketsByFds = Math.floor((fdLimit - 400) / 2);
const largeCount = Math.min(quick ? 1000 : 10_000, maxSocketsByFds);
const settings: Settings = {
  seconds,
  smallThreads: 2,
  smallConnections: 50,
  mibThreads: 1,
  mibConnections: 8,
  rttCount: quick ? 1000 : 5000,
  rttWarmup: quick ? 200 : 500,
  frameWindow: 8,
  socketCounts: [Math.min(quick ? 100 : 1000, largeCount), largeCount],
  routeChangeSockets: Math.min(1000, maxSocketsByFds),
  propagationChanges: quick ? 50 : 300,
  propagationReplicas: 3,
  snapshotSizes: [10, 100_000],
  tlsMemoryRounds: 3,
  tlsMemoryReleaseMs: quick ? 2000 : 12_000,
  holdSockets: largeCount,
  holdMs: quick ? 20_000 : 10 * 60_000,
  holdSampleMs: quick ? 5000 : 60_000,
};
// Deployed topology with two proxy replicas, as the soak runs it; the pool interval left at its default.
const poolSettings: PoolSettings = { claims: quick ? 3 : 20, poolSize: quick ? 3 : 10, replicas: 2, poolIntervalMs: 5000 };
// 1,000 desktops across 100 users (issue 31), RECONCILE_INTERVAL_MS at its default in a full run.
const fleetSettings: FleetSettings = quick
  ? { users: 10, perUser: 5, concurrency: 10, replicas: 2, listRequests: 50, reconcileIntervalMs: 1000, settleMs: 4000, resyncs: 3 }
  : { users: 100, perUser: 10, concurrency: 20, replicas: 2, listRequests: 500, reconcileIntervalMs: 5000, settleMs: 30_000, resyncs: 10 };
const firstFrameSettings: FirstFrameSettings = { launches: quick ? 1 : 5, replicas: 2 };

function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

async function main(): Promise<number> {
  const wrkVersion = targets.length ? checkWrk() : 'not used';
  const machine = describeMachine(repoRoot);
  if (targets.includes('nginx') && machine.nginx === 'missing') {
    throw new Error('nginx is not installed: run scripts/ensure-services.sh (Debian package nginx-light)');
  }
  if (targets.includes('haproxy') && machine.haproxy === 'missing') {
    throw new Error('haproxy is not installed: run scripts/ensure-services.sh (Debian package haproxy)');
  }
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'deskhub-bench-'));
  const profileDir = path.join(runDir, 'profiles');
  log(`${quick ? 'quick' : 'full'} run, ${rounds} round(s) of ${seconds} s, targets ${targets.join(', ') || 'none'}; logs in ${runDir}`);
  if (largeCount < (quick ? 1000 : 10_000)) log(`open-file limit ${fdLimit}: the large idle-WebSocket figure uses ${largeCount} sockets`);

  const results: RunResults = {
    mode: quick ? 'quick' : 'full',
    startedAt: new Date().toISOString(),
    finishedAt: '',
    machine,
    loadGenerators: {
      http: `wrk ${wrkVersion} (small: -t${settings.smallThreads} -c${settings.smallConnections}; 1 MiB: -t${settings.mibThreads} -c${settings.mibConnections})`,
      websocket: `ws ${await wsVersion()} client in the harness process (Node ${process.version})`,
    },
    settings,
    targets,
    idleRssBytes: {},
    memory: {},
    rounds: [],
    routeChange: {},
    snapshot: [],
    errors: [],
  };

  const services: Service[] = [];
  const running = new Map<TargetName, Target>();
  let deskhub: DeskhubStream | undefined;
  const needDeskhub = targets.includes('deskhub') || targets.includes('deskhub+auth') || !skip.has('propagation') || !skip.has('snapshot');
  // What a case started outside `running` and `services` (the warm pool's topology).
  const cleanups: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const c of cleanups) await c().catch(() => {});
    for (const t of running.values()) await t.stop().catch(() => {});
    if (deskhub) await deskhub.close().catch(() => {});
    for (const s of services) await s.stop().catch(() => {});
  };
  const interrupted = () => {
    log('interrupted: stopping everything started');
    void stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);

  try {
    const upstream = spawnService({
      name: 'upstream',
      command: process.execPath,
      args: ['--import', 'tsx', path.join(repoRoot, 'bench/upstream.ts')],
      cwd: repoRoot,
      logDir: runDir,
    });
    services.push(upstream);
    const upstreamPort = Number((await upstream.firstJsonLine).port);

    if (needDeskhub) {
      try {
        deskhub = await startDeskhubStream(repoRoot, runDir, args['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []);
      } catch (err) {
        if (targets.includes('deskhub') || targets.includes('deskhub+auth')) throw err;
        results.errors.push(`route-stream figures: ${(err as Error).message}`);
      }
    }

    const ctx = {
      repoRoot,
      runDir,
      upstreamPort,
      maxSockets: Math.max(settings.socketCounts[1], settings.routeChangeSockets),
      deskhub: async () => {
        if (!deskhub) throw new Error('deskhub route stream not started');
        return deskhub;
      },
    };
    for (const name of targets) {
      log(`starting ${targetLabels[name]}`);
      running.set(name, await startTarget(name, ctx));
    }
    const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await fn();
      } catch (err) {
        const message = `${what}: ${(err as Error).message}`;
        log(`FAILED ${message}`);
        results.errors.push(message);
        return undefined;
      }
    };

    // Memory first, from each fresh process: RSS settled before any traffic, then with idle
    // WebSockets open (figures.ts idleSocketMemory). deskhub+auth is the same process as deskhub:
    // its memory is not a separate question.
    for (const [name, t] of running) {
      if (!t.pid || name === 'deskhub+auth') continue;
      if (skip.has('memory')) {
        results.idleRssBytes[name] = await settledRss(t.pid, 1000);
        continue;
      }
      log(`memory: ${targetLabels[name]} fresh, then ${settings.socketCounts.join(' and ')} idle WebSockets`);
      const m = await attempt(`memory via ${name}`, () => idleSocketMemory(t, settings));
      if (m) {
        results.memory[name] = m;
        results.idleRssBytes[name] = m.baselineRssBytes;
      }
    }
    const deskhubPid = running.get('deskhub')?.pid ?? running.get('deskhub+auth')?.pid;
    if (deskhubPid) results.deskhubAllocator = replicaAllocator(deskhubPid);

    // Node proxies compile their hot paths in the first seconds; every target gets the same warm-up.
    for (const t of running.values()) {
      await runWrk({ url: `${t.httpBase}small`, threads: 1, connections: 10, seconds: quick ? 1 : 2, runDir, headers: t.headers });
    }

    for (let round = 1; targets.length && round <= rounds; round++) {
      // Rotating the order each round spreads slow drift of the machine (other load, heat) over every target.
      const order = targets.map((_, i) => targets[(i + round - 1) % targets.length]!);
      const perTarget: Partial<Record<TargetName, RoundResult>> = {};
      for (const t of order) perTarget[t] = {};
      const each = async (figure: FigureName, fn: (t: Target, r: RoundResult) => Promise<void>) => {
        if (skip.has(figure)) return;
        for (const name of order) {
          if (name === 'deskhub+auth' && !(authFigures as readonly string[]).includes(figure)) continue;
          log(`round ${round}/${rounds}: ${figure} via ${targetLabels[name]}`);
          await attempt(`${figure} via ${name} (round ${round})`, () => fn(running.get(name)!, perTarget[name]!));
        }
      };
      await each('small', async (t, r) => void (r.small = await smallRequests(t, settings, runDir)));
      await each('mib', async (t, r) => void (r.mib = await mibBodies(t, settings, runDir)));
      await each('rtt', async (t, r) => void (r.rtt = await wsRoundTrips(t, settings)));
      await each('frames', async (t, r) => void (r.frames = await wsFrames(t, settings)));
      results.rounds.push({ round, order, results: perTarget });
    }

    const held = running.get('deskhub');
    if (held && !skip.has('hold')) {
      log(`${settings.holdSockets} idle WebSockets held through one deskhub replica for ${settings.holdMs / 1000} s, sampled every ${settings.holdSampleMs / 1000} s`);
      const h = await attempt('idle WebSockets held', () => idleHold(held, settings.holdSockets, settings.holdMs, settings.holdSampleMs));
      if (h) results.hold = h;
    }
    if (!skip.has('change')) {
      let n = 0;
      for (const [name, t] of running) {
        if (!t.pid || name === 'deskhub+auth') continue;
        log(`route change with ${settings.routeChangeSockets} WebSockets open via ${targetLabels[name]}`);
        const r = await attempt(`route change via ${name}`, () => routeChangeWithOpenSockets(t, settings.routeChangeSockets, ++n));
        if (r) results.routeChange[name] = r;
      }
    }
    if (deskhub && !skip.has('propagation')) {
      log(`route propagation to ${settings.propagationReplicas} replicas, ${settings.propagationChanges} changes`);
      const p = await attempt('route propagation', () =>
        routePropagation(deskhub!, upstreamPort, settings.propagationReplicas, settings.propagationChanges));
      if (p) results.propagation = p;
    }
    if (deskhub && !skip.has('snapshot')) {
      const loaded: LoadedSnapshot[] = [];
      try {
        for (const size of settings.snapshotSizes) {
          log(`snapshot of ${size} routes`);
          const s = await attempt(`snapshot of ${size} routes`, () => snapshotLoad(deskhub!, size));
          if (s) loaded.push(s);
        }
        log(`lookups in the ${loaded.map((l) => l.routes).join(' and ')}-route tables, interleaved`);
        const figures = await attempt('route lookups', () => lookupFigures(loaded));
        if (figures) results.snapshot.push(...figures);
      } finally {
        for (const l of loaded) await l.close().catch(() => {});
      }
    }
    if (deskhub && !skip.has('tls-memory')) {
      const count = Math.min(quick ? 200 : 2000, maxSocketsByFds);
      log(`idle WebSockets to a TLS upstream: ${count}, opened and closed ${settings.tlsMemoryRounds} times`);
      const m = await attempt('TLS-upstream memory', () => tlsIdleMemory(deskhub!, repoRoot, runDir, count, settings.tlsMemoryRounds, settings.tlsMemoryReleaseMs));
      if (m) results.tlsMemory = m;
    }
    if (!skip.has('verify')) {
      // In the harness process, after every proxy has stopped its load: what one authorization costs a proxy.
      const iterations = quick ? 2000 : 20_000;
      log(`access-token verification, cold and cached (${iterations} tokens)`);
      const rows = await attempt('access-token verification', async () => benchAccessToken(iterations));
      if (rows) results.accessToken = rows;
    }
    // Last: its containers and control plane must not share the machine with any other figure.
    if (!skip.has('pool')) {
      log(`warm pool: ${poolSettings.claims} creates pooled and cold, a burst of ${poolSettings.poolSize}`);
      const p = await attempt('warm pool', () => poolFigures(runDir, poolSettings, log, results.errors, (c) => cleanups.push(c)));
      if (p) results.pool = p;
    }
    if (!skip.has('fleet')) {
      const f = await attempt('fleet', () => fleetFigures(runDir, fleetSettings, log, (c) => cleanups.push(c)));
      if (f) results.fleet = f;
    }
    if (!skip.has('first-frame')) {
      log(`click to first frame: ${firstFrameSettings.launches} launches of the X desktop, cold and from the pool`);
      const f = await attempt('click to first frame', () => firstFrameFigures(runDir, firstFrameSettings, log, (c) => cleanups.push(c)));
      if (f) results.firstFrame = f;
    }
  } finally {
    await stopAll();
  }

  results.finishedAt = new Date().toISOString();
  results.machine.loadAverageEnd = Math.round(os.loadavg()[0]! * 100) / 100;
  const med = medians(results);
  const checks = targets.includes('deskhub') ? checkTargets(results, med) : [];
  const roundTwo = targets.includes('deskhub') ? checkRoundTwo(results, med) : [];
  const md = markdown(results, med, checks, { roundTwo });
  mkdirSync(outDir, { recursive: true });
  const json = JSON.stringify({ ...results, medians: med, ratios: ratios(med), targetChecks: checks, roundTwoChecks: roundTwo }, null, 2) + '\n';
  // A run of the control plane's cases alone keeps its own files: latest.* stays the last run of the proxy figures.
  const controlOnly = figureNames.every((f) => controlFigures.includes(f) || skip.has(f));
  const controlRan = Boolean(results.pool || results.fleet || results.firstFrame);
  const stamp = `${results.startedAt.slice(0, 19).replace(/:/g, '-')}-${results.mode}${controlOnly ? '-control' : ''}`;
  const names = [controlOnly ? null : 'latest', controlRan ? 'control-latest' : null, stamp].filter((n): n is string => n !== null);
  // The standing at a glance: each target against nginx (lib/chart.ts), beside the tables.
  const chart = med.nginx ? standingChart(med, targets, `deskhub against nginx, HAProxy and CHP: ${results.mode} run ${results.startedAt.slice(0, 16).replace('T', ' ')} UTC`) : null;
  for (const name of names) {
    writeFileSync(path.join(outDir, `${name}.json`), json);
    writeFileSync(path.join(outDir, `${name}.md`), md + '\n');
    if (chart && name !== 'control-latest') writeFileSync(path.join(outDir, `${name}.svg`), chart);
  }
  if (results.mode === 'full' && outDir === path.join(repoRoot, 'bench/results')) {
    const readme = path.join(repoRoot, 'bench/README.md');
    if (targets.length) updateReadme(readme, markdown(results, med, checks, { pool: false, roundTwo }));
    if (results.pool) updateReadme(readme, poolMarkdown(results.pool), 'bench:pool');
    if (results.fleet) updateReadme(readme, fleetMarkdown(results.fleet), 'bench:fleet');
    if (results.firstFrame) updateReadme(readme, firstFrameMarkdown(results.firstFrame), 'bench:first-frame');
  }
  process.stdout.write(md + '\n');
  log(`results written to ${names.map((n) => `${path.relative(process.cwd(), outDir) || '.'}/${n}.{json,md}`).join(', ')}`);
  if (args['cpu-prof']) {
    const summary = summarizeProfiles(profileDir);
    writeFileSync(path.join(outDir, `${stamp}-deskhub-profile.txt`), summary + '\n');
    process.stdout.write(`\ndeskhub proxy CPU profile (${profileDir}):\n${summary}\n`);
  } else if (results.errors.length === 0) {
    rmSync(runDir, { recursive: true, force: true });
  }
  if (results.errors.length) {
    log(`${results.errors.length} figure(s) failed; logs kept in ${runDir}`);
    return 1;
  }
  return 0;
}

async function wsVersion(): Promise<string> {
  try {
    const { readFileSync } = await import('node:fs');
    return (JSON.parse(readFileSync(path.join(repoRoot, 'node_modules/ws/package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`bench: ${err.message}\n`);
    process.exit(1);
  },
);
