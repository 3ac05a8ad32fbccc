/**
 * The failures the soak inflicts, one scenario each, on one running topology under steady desktop
 * traffic and open WebSockets. Each states what the design promises for it, does it, and
 * returns the counts; a count the promise says must be 0 and is not fails the scenario.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { settle, type Leftovers } from './checks.ts';
import { execIn, instanceContainers, restartDockerd, restoreDockerd } from './docker.ts';
import type { DesktopTraffic } from './traffic.ts';
import { waitFor, type Desktop, type Topology } from './topology.ts';

export interface Timings {
  /** Traffic before the failure, while it lasts, and after recovery, in ms. */
  beforeMs: number;
  downMs: number;
  afterMs: number;
  /** How long the system may take to converge (no stale route, no orphan, no wrong state). */
  settleMs: number;
  desktops: number;
  socketsPerDesktop: number;
}

export interface ScenarioContext {
  topology: Topology;
  traffic: DesktopTraffic;
  runId: string;
  timings: Timings;
  /** Proxy paths of desktops deleted during the run (must answer 404 everywhere). */
  gone: string[];
  log(message: string): void;
}

export interface ScenarioResult {
  name: string;
  promise: string;
  seconds: number;
  requests: number;
  /** Requests that failed where the design says none may. */
  lost: number;
  /** Requests that failed where the design expects it (through the killed replica, to a desktop that died). */
  lostExpected: number;
  websockets: number;
  dropped: number;
  droppedExpected: number;
  staleRoutes: number;
  orphanContainers: number;
  orphanProcesses: number;
  wrongStates: number;
  /** Seconds from recovery until nothing was left over (null: not within the settle time). */
  cleanAfterSeconds: number | null;
  /** What happened, in words (end states, downtime). */
  notes: string[];
  /** Everything counted against the promise, one line each. */
  problems: string[];
  pass: boolean;
}

export interface Scenario {
  name: string;
  /** Restarts the shared dockerd: only in the full run, never in the test suite. */
  restartsDocker: boolean;
  promise: string;
  run(ctx: ScenarioContext, result: ScenarioResult): Promise<void>;
}

/** Makes `timings.desktops` desktops run (deleting failed or stopped ones), sends traffic to them and opens fresh WebSockets. */
async function prepare(ctx: ScenarioContext): Promise<Desktop[]> {
  const { topology, traffic, timings } = ctx;
  traffic.closeAll();
  // What an earlier scenario (or an engine restart) left is reconciled first: a desktop still
  // `running` in the database whose container just died must not be taken as a live one.
  await settle(topology, ctx.runId, ctx.gone, timings.settleMs);
  let desktops = await topology.listDesktops();
  for (const d of desktops.filter((d) => d.state !== 'running')) await deleteDesktop(ctx, d);
  desktops = desktops.filter((d) => d.state === 'running');
  const created = await Promise.all(Array.from({ length: Math.max(0, timings.desktops - desktops.length) }, () => topology.createDesktop()));
  for (const d of created) desktops.push(await topology.waitRunning(d.id));
  const paths = desktops.map((d) => d.proxyPath);
  traffic.setDesktops(paths);
  await Promise.all([traffic.openSockets('A', paths, timings.socketsPerDesktop), traffic.openSockets('B', paths, timings.socketsPerDesktop)]);
  traffic.reset();
  traffic.start();
  return desktops;
}

async function deleteDesktop(ctx: ScenarioContext, d: Desktop): Promise<void> {
  await ctx.topology.api('DELETE', `/api/desktops/${d.id}`);
  ctx.gone.push(d.proxyPath);
}

function fill(result: ScenarioResult, left: Leftovers, cleanAfterMs: number | null): void {
  result.staleRoutes = left.staleRoutes;
  result.orphanContainers = left.orphanContainers;
  result.orphanProcesses = left.orphanProcesses;
  result.wrongStates = left.wrongStates;
  result.cleanAfterSeconds = cleanAfterMs === null ? null : Math.round(cleanAfterMs / 100) / 10;
  result.problems.push(...left.details);
}

/**
 * The common course of a scenario: desktops running with traffic and WebSockets (`setup` may
 * take some out first), traffic for a while, the failure and recovery (`inflict`), traffic for a
 * while again, traffic stopped. Resolves with the desktops it started from.
 */
async function underTraffic(ctx: ScenarioContext, result: ScenarioResult, inflict: (before: Desktop[]) => Promise<void>, setup?: (before: Desktop[]) => void): Promise<Desktop[]> {
  const before = await prepare(ctx);
  setup?.(before);
  result.websockets = ctx.traffic.held();
  await sleep(ctx.timings.beforeMs);
  await inflict(before);
  await sleep(ctx.timings.afterMs);
  await ctx.traffic.stop();
  return before;
}

/** Notes how long after `event` the system was first clean (the final counts come from finish()). */
async function convergence(ctx: ScenarioContext, result: ScenarioResult, event: string): Promise<void> {
  const { cleanAfterMs } = await settle(ctx.topology, ctx.runId, ctx.gone, ctx.timings.settleMs);
  result.notes.push(cleanAfterMs === null ? `not clean within ${ctx.timings.settleMs / 1000} s after ${event}` : `clean ${(cleanAfterMs / 1000).toFixed(1)} s after ${event}`);
}

/**
 * A load balancer takes a replica whose /readyz fails out of rotation: while a part the data path
 * does not need is down, every replica must stay ready.
 */
async function replicasStayReady(ctx: ScenarioContext, result: ScenarioResult, what: string): Promise<void> {
  for (const name of ['A', 'B'] as const) {
    const status = await fetch(`${ctx.topology.replicas[name].url}/readyz`, { signal: AbortSignal.timeout(5000) }).then((r) => r.status, () => 0);
    if (status !== 200) result.problems.push(`replica ${name} /readyz answered ${status} while ${what}`);
  }
}

/** Waits until the control plane answers /readyz again. */
function controlPlaneReady(topology: Topology, timeoutMs = 60_000): Promise<true> {
  return waitFor('control plane /readyz', async () => ((await fetch(`${topology.controlPlaneUrl}/readyz`)).status === 200 ? true : undefined), timeoutMs);
}

/** The traffic through both replicas so far: requests sent and failed, WebSockets dropped. */
function bothReplicas(traffic: DesktopTraffic): { requests: number; failed: number; dropped: number } {
  const { A, B } = traffic.counts;
  return { requests: A.requests + B.requests, failed: A.failed + B.failed, dropped: traffic.dropped('A') + traffic.dropped('B') };
}

/** Counts over both replicas: every request and socket counts as lost or dropped. */
function allCount(ctx: ScenarioContext, result: ScenarioResult): void {
  const { requests, failed, dropped } = bothReplicas(ctx.traffic);
  result.requests = requests;
  result.lost = failed;
  result.dropped = dropped;
  const { A, B } = ctx.traffic.counts;
  result.problems.push(...A.samples, ...B.samples);
}

/** For scenarios where nothing may be lost: count over both replicas, then finish. */
async function conclude(ctx: ScenarioContext, result: ScenarioResult): Promise<void> {
  allCount(ctx, result);
  await finish(ctx, result);
}

async function finish(ctx: ScenarioContext, result: ScenarioResult): Promise<void> {
  const silent = await ctx.traffic.silent();
  if (silent > 0) {
    result.dropped += silent;
    result.problems.push(`${silent} WebSockets open but no longer echoing`);
  }
  const { leftovers, cleanAfterMs } = await settle(ctx.topology, ctx.runId, ctx.gone, ctx.timings.settleMs);
  fill(result, leftovers, cleanAfterMs);
}

export const scenarios: Scenario[] = [
  {
    name: 'proxy-kill',
    restartsDocker: false,
    promise: "kill -9 of replica A drops A's own requests and WebSockets (expected, counted apart); nothing through replica B is lost; A restarted on its port serves every route again",
    async run(ctx, result) {
      const { topology, traffic, timings } = ctx;
      let failedAtRestart = 0;
      await underTraffic(ctx, result, async () => {
        await topology.killReplica('A');
        await sleep(timings.downMs);
        await topology.startReplica('A');
        failedAtRestart = traffic.counts.A.failed;
      });
      const { A, B } = traffic.counts;
      result.requests = bothReplicas(traffic).requests;
      result.lostExpected = failedAtRestart;
      result.lost = B.failed + (A.failed - failedAtRestart);
      result.problems.push(...B.samples);
      if (A.failed > failedAtRestart) result.problems.push(`${A.failed - failedAtRestart} requests failed through A after it was back`);
      result.droppedExpected = traffic.dropped('A');
      result.dropped = traffic.dropped('B');
      result.notes.push(`A's ${traffic.held('A')} WebSockets: ${result.droppedExpected} closed with it`);
      if (result.droppedExpected !== traffic.held('A')) result.problems.push(`only ${result.droppedExpected} of A's ${traffic.held('A')} WebSockets closed when A died`);
      traffic.letGo((s) => s.replica === 'A');
      await finish(ctx, result);
    },
  },
  {
    name: 'control-plane-kill',
    restartsDocker: false,
    promise: 'kill -9 of the control plane loses no desktop request and no WebSocket; after its restart every desktop is as before',
    async run(ctx, result) {
      const { topology, timings } = ctx;
      const before = await underTraffic(ctx, result, async () => {
        await topology.killControlPlane();
        await sleep(timings.downMs);
        await replicasStayReady(ctx, result, 'the control plane was down');
        await topology.startControlPlane();
      });
      allCount(ctx, result);
      const after = await topology.listDesktops();
      for (const d of before) {
        const now = after.find((a) => a.id === d.id);
        if (now?.state !== 'running') result.problems.push(`${d.proxyPath} was running and is now ${now?.state ?? 'gone'}`);
      }
      await finish(ctx, result);
    },
  },
  {
    name: 'control-plane-kill-mid-create',
    restartsDocker: false,
    promise: 'kill -9 of the control plane while desktops are being created: after its restart each ends running or failed (never stuck), no orphan container; other desktops lose no request and no WebSocket',
    async run(ctx, result) {
      const { topology, timings } = ctx;
      let fresh: Desktop[] = [];
      await underTraffic(ctx, result, async (before) => {
        // Two kills: one as soon as a create is accepted (the desktop is `creating`, its container
        // may or may not exist yet), one once a new desktop is `starting` (its container runs, the
        // readiness probe is under way).
        for (const moment of ['creating', 'starting'] as const) {
          const d = await topology.createDesktop();
          if (moment === 'starting') {
            const now = await waitFor('a new desktop past creating', async () => {
              const seen = await topology.api<Desktop>('GET', `/api/desktops/${d.id}`);
              return seen.state === 'creating' ? undefined : seen;
            }, 30_000, 10);
            result.notes.push(`second kill with the new desktop ${now.state}`);
          }
          await topology.killControlPlane();
          await sleep(timings.downMs);
          await topology.startControlPlane();
        }
        const isNew = (d: Desktop) => !before.some((b) => b.id === d.id);
        fresh = await waitFor(
          'the interrupted creates to end',
          async () => {
            const list = (await topology.listDesktops()).filter(isNew);
            return list.every((d) => d.state === 'running' || d.state === 'failed') ? list : undefined;
          },
          timings.settleMs,
          500,
        ).catch(async () => (await topology.listDesktops()).filter(isNew));
      });
      result.notes.push(`interrupted creates ended: ${fresh.map((d) => d.state).join(', ') || 'none recorded'}`);
      for (const d of fresh) if (d.state !== 'running' && d.state !== 'failed') result.problems.push(`${d.proxyPath} ended ${d.state}`);
      allCount(ctx, result);
      // Whatever ended running must be routed and whatever failed must have no container: settle
      // checks both before the interrupted desktops are deleted again.
      const { leftovers } = await settle(topology, ctx.runId, ctx.gone, timings.settleMs);
      result.problems.push(...leftovers.details.map((d) => `before deleting the interrupted desktops: ${d}`));
      for (const d of fresh) await deleteDesktop(ctx, d);
      await finish(ctx, result);
      result.orphanContainers += leftovers.orphanContainers;
      result.wrongStates += leftovers.wrongStates;
      result.staleRoutes += leftovers.staleRoutes;
    },
  },
  {
    name: 'redis-data-loss',
    restartsDocker: false,
    promise: 'kill -9 of Redis, which comes back empty, loses no desktop request and no WebSocket; a desktop deleted while Redis was down is unrouted everywhere and the replicas converge with no stale route',
    async run(ctx, result) {
      const { topology, traffic, timings } = ctx;
      let victim: Desktop | undefined;
      await underTraffic(
        ctx,
        result,
        async () => {
          await topology.redis.kill({ loseData: true });
          const started = Date.now();
          const deleted = topology.api('DELETE', `/api/desktops/${victim!.id}`, undefined, 60_000).then(() => null, (err: Error) => err);
          await sleep(Math.max(timings.downMs, 2000));
          await replicasStayReady(ctx, result, 'Redis was down');
          await topology.redis.start();
          const err = await deleted;
          if (err) result.problems.push(`deleting ${victim!.proxyPath} while Redis was down: ${err.message}`);
          else result.notes.push(`the delete sent while Redis was down answered after ${((Date.now() - started) / 1000).toFixed(1)} s`);
          ctx.gone.push(victim!.proxyPath);
          await convergence(ctx, result, 'Redis came back empty and the delete answered');
        },
        (before) => {
          victim = before[before.length - 1]!;
          traffic.setDesktops(before.filter((d) => d !== victim).map((d) => d.proxyPath));
          traffic.letGo((s) => s.desktop === victim!.proxyPath);
        },
      );
      await conclude(ctx, result);
    },
  },
  {
    name: 'postgres-restart',
    restartsDocker: false,
    promise: 'Postgres stopped at once (immediate shutdown, crash recovery at start) and started again loses no desktop request and no WebSocket; the control plane is ready again and creates desktops',
    async run(ctx, result) {
      const { topology, timings } = ctx;
      await underTraffic(ctx, result, async () => {
        await topology.postgres.crash();
        const down = Date.now();
        await sleep(timings.downMs);
        await replicasStayReady(ctx, result, 'Postgres was down');
        await topology.postgres.start();
        await controlPlaneReady(topology);
        result.notes.push(`control plane ready ${((Date.now() - down) / 1000).toFixed(1)} s after Postgres went down`);
        const probe = await topology.createDesktop();
        const ran = await topology.waitRunning(probe.id).then(() => true, (err: Error) => (result.problems.push(`a desktop created after the restart: ${err.message}`), false));
        result.notes.push(ran ? 'a desktop created after the restart runs' : 'a desktop created after the restart did not run');
        await deleteDesktop(ctx, probe);
      });
      await conclude(ctx, result);
    },
  },
  {
    name: 'docker-restart-live-restore',
    restartsDocker: true,
    promise: 'dockerd restarted (SIGTERM, start) with live-restore on: desktops stay running and reachable, no desktop request or WebSocket is lost',
    async run(ctx, result) {
      const { topology, traffic } = ctx;
      try {
        // The daemon that stops must be the one with live-restore on.
        result.notes.push(`dockerd switched to --live-restore first (down ${((await restartDockerd({ liveRestore: true })) / 1000).toFixed(1)} s)`);
        await controlPlaneReady(topology);
        await underTraffic(ctx, result, async () => {
          const downMs = await restartDockerd({ liveRestore: true });
          result.notes.push(`engine did not answer for ${(downMs / 1000).toFixed(1)} s`);
          await replicasStayReady(ctx, result, 'the engine had just restarted');
        });
        await conclude(ctx, result);
      } finally {
        await traffic.stop();
        traffic.closeAll();
        await restoreDockerd();
        result.notes.push('dockerd restarted without live-restore afterwards, as ensure-services.sh starts it');
      }
    },
  },
  {
    name: 'docker-restart',
    restartsDocker: true,
    promise: "dockerd restarted with live-restore off stops every desktop container: their traffic and WebSockets end (expected); reconciliation gives each desktop its end state and no route points at a dead container; a home's files are there when its desktop starts again",
    async run(ctx, result) {
      const { topology, traffic, timings } = ctx;
      try {
        await restoreDockerd();
        const homed = await homeFile(ctx, result);
        await underTraffic(ctx, result, async () => {
          const downMs = await restartDockerd({ liveRestore: false });
          result.notes.push(`engine did not answer for ${(downMs / 1000).toFixed(1)} s`);
          await convergence(ctx, result, 'the engine answered again');
        });
        const { requests, failed, dropped } = bothReplicas(traffic);
        result.requests = requests;
        result.lostExpected = failed;
        result.droppedExpected = dropped;
        traffic.closeAll();
        const { leftovers, cleanAfterMs } = await settle(topology, ctx.runId, ctx.gone, timings.settleMs);
        fill(result, leftovers, cleanAfterMs);
        const states = (await topology.listDesktops()).map((d) => `${d.proxyPath}: ${d.state}${d.reason ? ` (${d.reason.split('\n')[0]})` : ''}`);
        result.notes.push(`desktops after reconciliation: ${states.join('; ')}`);
        await homed.check();
      } finally {
        await restoreDockerd();
      }
    },
  },
];

/**
 * A kasm-home desktop with a file written in its home; `check` (after the engine restarted)
 * starts it again, reads the file, and deletes the desktop.
 */
async function homeFile(ctx: ScenarioContext, result: ScenarioResult): Promise<{ check(): Promise<void> }> {
  const { topology } = ctx;
  const text = `written before the engine restart ${ctx.runId}`;
  const container = async (id: string) => (await instanceContainers(topology.instance)).find((c) => c.desktopId === id && c.state === 'running');
  const d = await topology.createDesktop('kasm-home');
  await topology.waitRunning(d.id, 120_000);
  await execIn((await container(d.id))!.id, ['node', '-e', `require('fs').writeFileSync('/home/kasm-user/soak.txt', ${JSON.stringify(text)})`]);
  return {
    async check() {
      const after = await topology.api<Desktop>('GET', `/api/desktops/${d.id}`);
      if (after.state !== 'running') {
        await topology.api('POST', `/api/desktops/${d.id}/start`);
        await topology.waitRunning(d.id, 120_000);
      }
      const read = await execIn((await container(d.id))!.id, ['node', '-e', "process.stdout.write(require('fs').readFileSync('/home/kasm-user/soak.txt','utf8'))"]).catch((err: Error) => `(not readable: ${err.message})`);
      if (read === text) result.notes.push(`a home's file written before the restart was there when its desktop ran again (${after.state} after the restart)`);
      else result.problems.push(`a home's file written before the engine restart read back as ${JSON.stringify(read.slice(0, 200))}`);
      await deleteDesktop(ctx, d);
    },
  };
}

export const scenarioNames = scenarios.map((s) => s.name);

export function emptyResult(s: Scenario): ScenarioResult {
  return {
    name: s.name, promise: s.promise, seconds: 0, requests: 0, lost: 0, lostExpected: 0, websockets: 0, dropped: 0, droppedExpected: 0,
    staleRoutes: 0, orphanContainers: 0, orphanProcesses: 0, wrongStates: 0, cleanAfterSeconds: null, notes: [], problems: [], pass: false,
  };
}

/** Runs one scenario; a scenario that throws fails with the error among its problems. */
export async function runScenario(s: Scenario, ctx: ScenarioContext): Promise<ScenarioResult> {
  const result = emptyResult(s);
  const start = Date.now();
  try {
    await s.run(ctx, result);
  } catch (err) {
    result.problems.push(`scenario failed: ${(err as Error).message}`);
  } finally {
    await ctx.traffic.stop();
  }
  result.seconds = Math.round((Date.now() - start) / 1000);
  result.pass = result.lost === 0 && result.dropped === 0 && result.staleRoutes === 0 && result.orphanContainers === 0 && result.orphanProcesses === 0 && result.wrongStates === 0 && result.problems.length === 0;
  return result;
}
