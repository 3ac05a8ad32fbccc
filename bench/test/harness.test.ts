/**
 * Proves the benchmark harness works end to end in quick mode: every target starts, every figure
 * is measured (deskhub+auth: the small, 1 MiB and round-trip figures) and written as JSON and Markdown. Speeds are never asserted (the machine is shared).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { nginxConf } from '../lib/nginx.ts';
import { haproxyConf, haproxyMaxconn } from '../lib/haproxy.ts';
import { median, percentile } from '../lib/stats.ts';
import { buildImage } from '../../services/control-plane/test/docker-helpers.ts';

const repoRoot = path.resolve(import.meta.dirname, '../..');
// Quick mode still settles every target's memory, holds idle WebSockets for 20 s, and starts the
// control plane's topologies three times (pool, fleet, first frame): past tap's 300 s under CI load.
t.setTimeout(1_500_000);

t.test('percentiles are nearest-rank and medians ignore non-finite values', async (t) => {
  const samples = Array.from({ length: 100 }, (_, i) => i + 1);
  t.equal(percentile(samples, 50), 50);
  t.equal(percentile(samples, 99), 99);
  t.equal(percentile([7], 99), 7);
  t.equal(median([3, NaN, 1, 2]), 2);
  t.equal(median([4, 1, 3, 2]), 2.5);
  t.ok(Number.isNaN(median([])));
});

t.test('nginx is configured like a desktop proxy', async (t) => {
  const conf = nginxConf({ dir: '/tmp/x', port: 1234, workerConnections: 2512, fileLimit: 20000, locations: [{ prefix: '/desktop/bench/', upstreamPort: 4321 }] });
  t.match(conf, /map \$http_upgrade \$connection_upgrade \{\s*default upgrade;\s*'' '';/, 'keep-alive-friendly upgrade map');
  t.match(conf, /worker_processes 1;/);
  t.match(conf, /keepalive 64;/, 'upstream keep-alive pool');
  t.match(conf, /proxy_buffering off;/);
  t.match(conf, /proxy_read_timeout 3600s;/);
  t.match(conf, /pid \/tmp\/x\/nginx\.pid;/);
});

t.test('HAProxy is configured like a desktop proxy, within the open-file limit', async (t) => {
  const conf = haproxyConf({ dir: '/tmp/x', port: 1234, connections: 10_512, fileLimit: 20_000, locations: [{ prefix: '/desktop/bench/', upstreamPort: 4321 }] });
  t.match(conf, /nbthread 1\n/, 'one thread, as nginx has one worker');
  t.match(conf, /http-reuse always/, 'upstream connections reused');
  t.match(conf, /http-request replace-path \^\/desktop\/bench\/\(\.\*\) \/\\1/, 'the prefix stripped in the backend');
  t.match(conf, /timeout tunnel 3600s/, 'WebSockets (tunnels) outlive the run');
  t.match(conf, /use_backend b0 if \{ path_beg \/desktop\/bench\/ \}/);
  t.equal(haproxyMaxconn({ connections: 10_512, fileLimit: 20_000 }), 9872, 'maxconn: two descriptors per connection under the hard limit');
  t.equal(haproxyMaxconn({ connections: 1_000, fileLimit: 20_000 }), 1000, 'or what the run needs');
});

t.test('pnpm bench --quick measures every figure for every target', { timeout: 1_200_000 }, async (t) => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'deskhub-bench-test-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  // tap's process-info hook adds itself to NODE_OPTIONS of every process spawned from here; through
  // the harness it would reach the proxies (and break CHP's start). A shell drops it before node starts.
  // The Docker cases (the pool's kasm-test, first frame's X desktop) measure only images that are
  // here: built first (or found up to date), so CI always runs them.
  await buildImage('kasm-test');
  await buildImage('desktop');
  const command = `unset NODE_OPTIONS; exec "${process.execPath}" --import tsx bench/run.ts --quick --seconds 1 --out "${out}"`;
  const child = spawn('sh', ['-c', command], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout.resume();
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  t.equal(code, 0, `harness exits 0\n${stderr.split('\n').slice(-15).join('\n')}`);

  const r = JSON.parse(readFileSync(path.join(out, 'latest.json'), 'utf8'));
  t.same(r.errors, [], 'no figure failed');
  t.equal(r.mode, 'quick');
  t.ok(r.machine.nproc >= 1 && r.machine.node === process.version && r.machine.nginx !== 'missing', 'machine described');
  t.same(r.targets, ['direct', 'nginx', 'haproxy', 'chp', 'deskhub', 'deskhub+auth']);
  t.ok(r.machine.haproxy !== 'missing', 'HAProxy described');
  // deskhub+auth measures only what authorization can change, each figure with the cookie (the
  // harness refuses to start it unless a request without the cookie is refused).
  const auth = r.medians['deskhub+auth'];
  for (const key of ['smallRequestsPerSecond', 'smallP50Us', 'smallP99Us', 'cpuPerRequestUs', 'mibMegabytesPerSecond', 'mibCpuMs', 'wsRttP50Us', 'wsRttP99Us']) {
    t.ok(auth[key] > 0, `deskhub+auth: ${key} measured`);
    t.ok(r.ratios['deskhub+auth'].deskhub[key] > 0, `deskhub+auth ÷ deskhub: ${key}`);
  }
  for (const key of ['wsFramesPerSecond', 'rssIdleMiB', 'rssN2MiB']) t.equal(auth[key], undefined, `deskhub+auth: ${key} not measured (same process as deskhub)`);
  t.equal(r.routeChange['deskhub+auth'], undefined, 'deskhub+auth: no route-change figure');
  const verify = r.accessToken as { case: string; nsPerOp: number; cpuNsPerOp: number; ops: number }[];
  t.ok(verify.some((v) => /cold/.test(v.case)) && verify.some((v) => /cached/.test(v.case)), 'access-token verify cost, cold and cached');
  t.ok(verify.every((v) => v.nsPerOp > 0 && v.ops > 0), 'access-token rows measured');
  for (const target of (r.targets as string[]).filter((x) => x !== 'deskhub+auth')) {
    const m = r.medians[target];
    for (const key of ['smallRequestsPerSecond', 'smallP99Us', 'mibMegabytesPerSecond', 'wsRttP99Us', 'wsFramesPerSecond']) {
      t.ok(m[key] > 0, `${target}: ${key} measured`);
    }
    if (target === 'direct') continue;
    for (const key of ['cpuPerRequestUs', 'rssIdleMiB', 'rssN2MiB']) t.ok(m[key] > 0, `${target}: ${key} measured`);
    t.ok(Number.isFinite(m.perSocketN2KiB), `${target}: memory per socket measured`);
    t.ok(r.memory[target].baselineRssBytes === r.idleRssBytes[target], `${target}: memory measured from the fresh process`);
    const change = r.routeChange[target];
    t.equal(change.sockets, 1000, `${target}: route change measured with 1000 sockets open`);
    t.ok(change.dropped + change.echoedAfter >= 0 && change.echoedAfter <= change.sockets, `${target}: route change counted`);
  }
  t.equal(r.propagation.replicas, 3);
  t.equal(r.propagation.changes, 50);
  t.ok(r.propagation.allP99Ms > 0 && r.propagation.streamP99Ms > 0, 'propagation measured');
  t.same(r.snapshot.map((s: { routes: number }) => s.routes), [10, 100_000]);
  t.ok(r.snapshot.every((s: { loadMs: number; hotLookupNs: number }) => s.loadMs > 0 && s.hotLookupNs > 0), 'snapshot load and lookup measured');
  t.equal(r.tlsMemory.rounds, 3, 'TLS-upstream memory: three rounds');
  t.ok(r.tlsMemory.perSocketBytes > 0 && r.tlsMemory.closedRssBytes.length === 3, 'TLS-upstream memory measured per socket and after each round');
  t.equal(r.tlsMemory.allocator, 'jemalloc', 'the replica ran as deployed, on jemalloc (deploy/allocator.env)');
  t.equal(r.deskhubAllocator, 'jemalloc', "deskhub's replicas ran on jemalloc");
  t.ok(r.targetChecks.length >= 12, 'the targets checked, the TLS-upstream memory ones included');
  t.ok(r.roundTwoChecks.length >= 10 && r.roundTwoChecks.every((c: { measured: string }) => c.measured !== 'not measured'), "round two's targets checked, every one measured");
  t.ok(r.hold.samples.length >= 4 && r.hold.closed === 0 && r.hold.samples.every((s: { heapBytes?: number }) => s.heapBytes! > 0), 'idle WebSockets held, RSS and heap sampled');
  const svg = readFileSync(path.join(out, 'latest.svg'), 'utf8');
  t.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/, 'the standing chart is drawn');
  for (const label of ['HAProxy (1 thread)', 'configurable-http-proxy', 'deskhub proxy', 'small requests/s', 'memory per idle WebSocket']) t.match(svg, label);
  // The warm pool (lib/pool.ts): the process runtime always, Docker when the engine and image are here.
  type PoolRuntime = { runtime: string; pooled: { samplesMs: number[]; p99Ms: number }; cold: { samplesMs: number[] }; coldBurst: { samplesMs: number[]; p99Ms: number }; burst: { claims: number; fromPool: number; refillFromFirstPostMs: number }; pooledNotClaimed: number };
  const pool = r.pool as { runtimes: PoolRuntime[]; notMeasured: string[] };
  t.ok(pool.runtimes.some((p) => p.runtime === 'process'), 'warm pool measured on the process runtime');
  t.same(pool.notMeasured, [], 'Docker measured too (the image was built first)');
  t.equal(pool.runtimes.length, 2);
  for (const p of pool.runtimes) {
    t.equal(p.pooled.samplesMs.length, 3, `${p.runtime}: 3 pooled creates`);
    t.equal(p.cold.samplesMs.length, 3, `${p.runtime}: 3 cold creates`);
    t.equal(p.pooledNotClaimed, 0, `${p.runtime}: every pooled create was a claim`);
    t.equal(p.burst.fromPool, p.burst.claims, `${p.runtime}: the burst claimed from the pool`);
    t.ok(p.coldBurst.samplesMs.length === 3 && p.coldBurst.p99Ms > 0, `${p.runtime}: 3 cold creates at once measured`);
    t.ok(p.pooled.p99Ms > 0 && p.burst.refillFromFirstPostMs > 0, `${p.runtime}: create→running and refill measured`);
  }

  // The fleet (lib/fleet.ts): 50 desktops across 10 users in quick mode.
  const fleet = r.fleet;
  t.equal(fleet.desktops, 50, 'fleet: 50 desktops made');
  t.same(fleet.replicaRoutes, [50, 50], 'fleet: every replica held every route');
  t.ok(fleet.create.samplesMs.length === 50 && fleet.create.p99Ms > 0, 'fleet: create→running of each desktop');
  t.equal(fleet.userList.desktops, 5, "fleet: a user's list holds that user's desktops");
  t.equal(fleet.adminList.desktops, 50, "fleet: the admin's list holds all of them");
  t.ok(fleet.userList.p99Ms > 0 && fleet.adminList.p99Ms > 0, 'fleet: list latency measured');
  t.ok(fleet.reconcileFleet.passes > 0 && fleet.reconcileFleet.meanMs > 0 && fleet.reconcileEmpty.meanMs > 0, 'fleet: reconciliation passes timed');
  t.ok(fleet.resync.replicaMs.length === 3 && fleet.resync.replicaMs.every((round: number[]) => round.length === 2 && round.every((v) => v > 0)), 'fleet: 3 resyncs timed at both replicas');
  t.ok(fleet.resync.allMaxMs > 0, 'fleet: resync wall time measured');
  // Click to first frame (lib/first-frame.ts): the X desktop in Chromium, cold and from the pool.
  const frame = r.firstFrame;
  t.equal(frame.notMeasured, undefined, 'first frame measured (Docker and the desktop image are here)');
  for (const kind of ['cold', 'pooled']) {
    const sample = frame[kind].samples[0];
    t.ok(frame[kind].samples.length === 1 && sample.clickToFrameMs > 0 && sample.socketToFrameMs > 0, `first frame, ${kind}: measured`);
    t.equal(sample.clickToFrameMs, sample.launchToRunningMs + sample.openToFrameMs, `first frame, ${kind}: click to frame is the sum of its parts`);
    t.equal(sample.networkChanges, 0, `first frame, ${kind}: Chromium, in its own network namespace, saw no network change`);
  }

  const md = readFileSync(path.join(out, 'latest.md'), 'utf8');
  t.match(md, '| figure | direct | nginx (1 worker) | HAProxy (1 thread) | configurable-http-proxy | deskhub proxy | deskhub proxy + auth |');
  t.match(md, 'Targets of round two (issue 31)');
  t.match(md, /Memory per idle WebSocket: once per target, from its fresh process/);
  t.match(md, '| figure | deskhub proxy | deskhub proxy + auth | + auth ÷ without |');
  t.match(md, /\| verify, cold [^|]*\| [\d,]+ \|/);
  t.match(md, /Machine: \d+ cores/);
  t.match(md, /Idle WebSockets to a TLS upstream \(\d+, 3 rounds/);
  t.match(md, 'Targets from the proxy issue');
  t.match(md, '| runtime | figure | from the pool | cold start | cold ÷ pool |');
  t.match(md, /The control plane with 50 desktops across 10 users/);
  t.match(md, '| figure | from the pool | cold |');
  const control = JSON.parse(readFileSync(path.join(out, 'control-latest.json'), 'utf8'));
  t.ok(control.pool && control.fleet && control.firstFrame, 'the control plane\'s cases also in control-latest.json');
});
