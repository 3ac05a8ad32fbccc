/**
 * One function per figure the benchmark reports, each measuring one target once. The proxy's CPU
 * and memory come from /proc for its process tree; the load generators' own CPU is reported too
 * because on a 2-core machine they compete with the proxy.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { processAgeMs, treeCpuSeconds, treeRssBytes } from './proc.ts';
import { median, percentile } from './stats.ts';
import type { Target } from './targets.ts';
import { runWrk, type WrkResult } from './wrk.ts';
import { frameStream, idleSockets, roundTrips } from './ws-load.ts';

export interface Settings {
  /** Seconds per wrk run and per frame stream. */
  seconds: number;
  smallThreads: number;
  smallConnections: number;
  mibThreads: number;
  mibConnections: number;
  rttCount: number;
  rttWarmup: number;
  frameWindow: number;
  /** Open idle WebSockets for the memory figure, smaller then larger. */
  socketCounts: [number, number];
  routeChangeSockets: number;
  propagationChanges: number;
  propagationReplicas: number;
  snapshotSizes: number[];
  /** Open-and-close rounds of idle WebSockets to a TLS upstream. */
  tlsMemoryRounds: number;
  /** How long RSS is left to fall after the TLS sockets close before it may count as settled, ms. */
  tlsMemoryReleaseMs: number;
  /** Idle WebSockets held through one deskhub replica, for how long, sampled how often. */
  holdSockets: number;
  holdMs: number;
  holdSampleMs: number;
}

function wrkErrors(r: WrkResult): number {
  const e = r.errors;
  return e.connect + e.read + e.write + e.status + e.timeout;
}

/** Runs wrk against a target and reads the proxy's CPU over the same interval. */
async function wrkWithCpu(target: Target, url: string, threads: number, connections: number, seconds: number, runDir: string) {
  const cpu0 = target.pid ? treeCpuSeconds(target.pid) : 0;
  const r = await runWrk({ url, threads, connections, seconds, runDir, headers: target.headers });
  // With access control on, a non-2xx answer means the cookie stopped working (expired, refused):
  // the figure would then measure refusals, not authorized requests.
  if (Object.keys(target.headers).length > 0 && r.errors.status > 0) {
    throw new Error(`${r.errors.status} of ${r.requests} requests to ${url} were not 2xx/3xx with the access cookie: not measuring refusals`);
  }
  const proxyCpu = target.pid ? treeCpuSeconds(target.pid) - cpu0 : NaN;
  return { r, proxyCpu };
}

export interface SmallResult {
  requestsPerSecond: number;
  p50Us: number;
  p99Us: number;
  /** Proxy CPU (user + system) per request, microseconds. */
  cpuPerRequestUs: number;
  /** Cores the proxy used on average during the run. */
  proxyCores: number;
  /** Cores wrk used on average during the run. */
  loadGeneratorCores: number;
  errors: number;
  requests: number;
}

export async function smallRequests(target: Target, s: Settings, runDir: string): Promise<SmallResult> {
  const { r, proxyCpu } = await wrkWithCpu(target, `${target.httpBase}small`, s.smallThreads, s.smallConnections, s.seconds, runDir);
  return {
    requestsPerSecond: r.requests / r.durationSeconds,
    p50Us: r.p50Us,
    p99Us: r.p99Us,
    cpuPerRequestUs: (proxyCpu / r.requests) * 1e6,
    proxyCores: proxyCpu / r.durationSeconds,
    loadGeneratorCores: r.wrkCpuSeconds / r.durationSeconds,
    errors: wrkErrors(r),
    requests: r.requests,
  };
}

export interface MibResult {
  /** Response bytes per second through the proxy, in 10^6 bytes. */
  megabytesPerSecond: number;
  requestsPerSecond: number;
  /** Proxy CPU per MiB body, milliseconds. */
  cpuPerMibMs: number;
  proxyCores: number;
  loadGeneratorCores: number;
  errors: number;
}

export async function mibBodies(target: Target, s: Settings, runDir: string): Promise<MibResult> {
  const { r, proxyCpu } = await wrkWithCpu(target, `${target.httpBase}mib`, s.mibThreads, s.mibConnections, s.seconds, runDir);
  return {
    megabytesPerSecond: r.bytes / r.durationSeconds / 1e6,
    requestsPerSecond: r.requests / r.durationSeconds,
    cpuPerMibMs: (proxyCpu / r.requests) * 1e3,
    proxyCores: proxyCpu / r.durationSeconds,
    loadGeneratorCores: r.wrkCpuSeconds / r.durationSeconds,
    errors: wrkErrors(r),
  };
}

export interface RttResult {
  p50Us: number;
  p99Us: number;
  samples: number;
}

export async function wsRoundTrips(target: Target, s: Settings): Promise<RttResult> {
  const samples = await roundTrips(`${target.wsBase}rtt`, s.rttCount, s.rttWarmup, 100, target.headers);
  return { p50Us: percentile(samples, 50), p99Us: percentile(samples, 99), samples: samples.length };
}

export interface FramesResult {
  framesPerSecond: number;
  megabytesPerSecond: number;
  proxyCores: number;
  loadGeneratorCores: number;
}

export async function wsFrames(target: Target, s: Settings): Promise<FramesResult> {
  const cpu0 = target.pid ? treeCpuSeconds(target.pid) : 0;
  const r = await frameStream(`${target.wsBase}frames`, s.seconds, s.frameWindow);
  const proxyCpu = target.pid ? treeCpuSeconds(target.pid) - cpu0 : NaN;
  return {
    framesPerSecond: r.framesPerSecond,
    megabytesPerSecond: r.megabytesPerSecond,
    proxyCores: proxyCpu / r.seconds,
    loadGeneratorCores: r.clientCpuSeconds / r.seconds,
  };
}

export interface MemoryResult {
  /** RSS of the fresh process (started, its route set up, no traffic yet), settled, bytes. */
  baselineRssBytes: number;
  rssBytes: [number, number];
  /** (RSS with n open - fresh RSS) / n, bytes. */
  perSocketBytes: [number, number];
  counts: [number, number];
  /** deskhub's replicas: V8's used heap at the same three points (its /metrics), bytes. */
  heapBytes?: [number, number, number];
  /** How long each of the three readings waited for RSS to settle, ms. */
  settleMs: [number, number, number];
}

const SETTLE_STEP_MS = 500;
const SETTLE_READINGS = 6;

/**
 * RSS once it has stopped moving: after `minWaitMs`, read every 0.5 s until the last six
 * readings (3 s) all lie within 1% of their median, or `maxWaitMs` passed; that median. A GC,
 * an allocator returning pages or a burst of allocations moves single readings; a heap still
 * settling moves the whole window.
 */
export async function settledRss(pid: number, minWaitMs = 500, maxWaitMs = 30_000): Promise<number> {
  return (await settle(pid, minWaitMs, maxWaitMs)).rss;
}

async function settle(pid: number, minWaitMs: number, maxWaitMs: number): Promise<{ rss: number; waitedMs: number }> {
  const started = Date.now();
  await sleep(minWaitMs);
  const readings: number[] = [];
  for (;;) {
    readings.push(treeRssBytes(pid));
    const window = readings.slice(-SETTLE_READINGS);
    const mid = median(window);
    const steady = window.length === SETTLE_READINGS && window.every((r) => Math.abs(r - mid) <= 0.01 * mid);
    if (steady || Date.now() - started >= maxWaitMs) return { rss: mid, waitedMs: Date.now() - started };
    await sleep(SETTLE_STEP_MS);
  }
}

/**
 * Memory per idle WebSocket, measured once per target from its fresh process: RSS settled before
 * any traffic, then with n1 and n2 idle WebSockets open, each settled (settle above). Measured
 * between two steps of a process that had already carried traffic, the figure read the heap
 * shrinking in between (deskhub: -94 KiB per socket at 1,000).
 */
/** The youngest a process is when its fresh memory is read (untilSettledAge). */
export const FRESH_MIN_AGE_MS = 30_000;

/**
 * Waits until the process is FRESH_MIN_AGE_MS old. V8 collects its start-up garbage only once
 * the process has been idle a while (its memory reducer): a deskhub replica read 80 MiB when
 * measured a few seconds after start, 61 MiB from 30 s on, and a fresh reading taken before that
 * made "memory per socket" negative when the collection came while the sockets were open (the
 * TLS-upstream figure with 200 sockets, in CI). Every fresh reading waits, however long the
 * start took.
 */
export async function untilSettledAge(pid: number): Promise<void> {
  await sleep(Math.max(0, FRESH_MIN_AGE_MS - processAgeMs(pid)));
}

export async function idleSocketMemory(target: Target, s: Settings): Promise<MemoryResult | null> {
  if (!target.pid) return null;
  const pid = target.pid;
  const [n1, n2] = s.socketCounts;
  const sockets = idleSockets();
  try {
    const heap = async () => (target.heapBytes ? target.heapBytes() : undefined);
    await untilSettledAge(pid);
    const fresh = await settle(pid, 1000, 30_000);
    const heap0 = await heap();
    await sockets.open(`${target.wsBase}idle`, n1);
    const one = await settle(pid, 1000, 30_000);
    const heap1 = await heap();
    await sockets.open(`${target.wsBase}idle`, n2 - n1);
    const two = await settle(pid, 1000, 60_000);
    const heap2 = await heap();
    if (sockets.closes > 0) throw new Error(`${sockets.closes} idle sockets closed while open`);
    return {
      baselineRssBytes: fresh.rss,
      rssBytes: [one.rss, two.rss],
      perSocketBytes: [(one.rss - fresh.rss) / n1, (two.rss - fresh.rss) / n2],
      counts: [n1, n2],
      ...(heap0 !== undefined && heap1 !== undefined && heap2 !== undefined ? { heapBytes: [heap0, heap1, heap2] as [number, number, number] } : {}),
      settleMs: [fresh.waitedMs, one.waitedMs, two.waitedMs],
    };
  } finally {
    await sockets.closeAll();
    // Let the proxy tear down its upstream side before the next figure.
    await sleep(500);
  }
}

export interface RouteChangeResult {
  sockets: number;
  /** Sockets closed between the change and the check (the point: should be 0). */
  dropped: number;
  /** Sockets that still echoed a message after the change. */
  echoedAfter: number;
  /** From asking for the change until the new route answered, milliseconds. */
  changeMs: number;
  how: string;
}

const changeHow: Record<string, string> = {
  nginx: 'new location + nginx -s reload',
  haproxy: 'new backend + reload (SIGUSR2 to the master)',
  chp: 'POST /api/routes',
  deskhub: 'route stream publish (put)',
};

export async function routeChangeWithOpenSockets(target: Target, n: number, changeNumber: number): Promise<RouteChangeResult | null> {
  if (!target.pid) return null;
  const sockets = idleSockets();
  try {
    await sockets.open(`${target.wsBase}change`, n);
    const t0 = process.hrtime.bigint();
    await target.changeRoute(changeNumber);
    const changeMs = Number(process.hrtime.bigint() - t0) / 1e6;
    // Sockets a reload would cut go within moments; give them a second to show it.
    await sleep(1000);
    const echoedAfter = await sockets.echoAll();
    return { sockets: n, dropped: sockets.closes, echoedAfter, changeMs, how: changeHow[target.name] ?? '' };
  } finally {
    await sockets.closeAll();
    await sleep(300);
  }
}

export interface HoldResult {
  sockets: number;
  /** How long they were held, ms. */
  heldMs: number;
  /** One sample per interval from the moment all were open: ms since then, RSS and (deskhub) used heap, bytes. */
  samples: Array<{ atMs: number; rssBytes: number; heapBytes?: number }>;
  /** Last RSS sample over the one at the end of the first interval, minus 1 (0.03: grew 3%). */
  rssGrowth: number;
  heapGrowth?: number;
  /** Sockets the proxy closed while they were held (should be 0). */
  closed: number;
  /** Those closes by code and reason, and when (ms since the first socket opened): the first and the last. */
  closeCodes?: Record<string, number>;
  closedBetweenMs?: [number, number];
}

/**
 * Idle WebSockets held open through one replica for a long while (the full run: 10,000 for 10
 * minutes), RSS and heap sampled each interval: memory must stay flat once they are open. Growth
 * is read from the end of the first interval, by when every socket's buffers exist, to the end.
 */
export async function idleHold(target: Target, count: number, durationMs: number, sampleMs: number): Promise<HoldResult | null> {
  if (!target.pid) return null;
  const pid = target.pid;
  const sockets = idleSockets();
  try {
    await sockets.open(`${target.wsBase}hold`, count);
    const start = Date.now();
    const sample = async () => ({ atMs: Date.now() - start, rssBytes: treeRssBytes(pid), ...(target.heapBytes ? { heapBytes: await target.heapBytes() } : {}) });
    const samples = [await sample()];
    while (Date.now() - start < durationMs) {
      await sleep(Math.min(sampleMs, durationMs - (Date.now() - start)));
      samples.push(await sample());
    }
    const from = samples[1] ?? samples[0]!;
    const to = samples.at(-1)!;
    return {
      sockets: count,
      heldMs: Date.now() - start,
      samples,
      rssGrowth: to.rssBytes / from.rssBytes - 1,
      ...(from.heapBytes && to.heapBytes ? { heapGrowth: to.heapBytes / from.heapBytes - 1 } : {}),
      closed: sockets.closes,
      ...(sockets.closes > 0 ? { closeCodes: sockets.closeCodes, closedBetweenMs: [Math.min(...sockets.closedAtMs), Math.max(...sockets.closedAtMs)] as [number, number] } : {}),
    };
  } finally {
    await sockets.closeAll();
    await sleep(500);
  }
}
