/**
 * Idle WebSockets to a TLS upstream, the Kasm case (every Kasm desktop serves HTTPS on 6901):
 * a replica of its own in front of the demo desktop over TLS, `count` idle WebSockets opened and
 * closed `rounds` times. Per socket: the RSS with them open over the fresh RSS, in the first round.
 * After each round the RSS once they are closed and it stopped falling, to see whether memory
 * comes back. The replica runs as deployed (deploy/allocator.env: jemalloc, whose background
 * thread hands freed pages back over about ten seconds); the allocator it really ran on is read
 * from its memory map and reported.
 */
import path from 'node:path';
import { freePort, httpGet, spawnService, waitUntil, type Service } from './child.ts';
import type { Allocator } from '../../packages/config/src/index.ts';
import { benchRoute, replicaAllocator, type DeskhubStream } from './deskhub.ts';
import { settledRss, untilSettledAge } from './figures.ts';
import { treeRssBytes } from './proc.ts';
import { idleSockets } from './ws-load.ts';

export interface TlsMemoryResult {
  count: number;
  rounds: number;
  freshRssBytes: number;
  /** Per round: RSS with the sockets open, and after they were closed, bytes. */
  openRssBytes: number[];
  closedRssBytes: number[];
  /** (open RSS - fresh RSS) / count, first round. */
  perSocketBytes: number;
  allocator: Allocator;
}

/** RSS with the sockets open is read 2 s after the last one opened. */
const SETTLE_MS = 2000;
/**
 * After closing, RSS is read each second from `minMs` on (a full run waits 12 s: jemalloc's
 * dirty_decay_ms is 10 s, and it hands pages back slowly at first, so an early reading looks
 * settled when it is not) until three readings agree within 1%, or at RELEASE_MAX_MS.
 */
const RELEASE_MAX_MS = 30_000;

async function releasedRss(pid: number, minMs: number): Promise<number> {
  const readings: number[] = [];
  const start = Date.now();
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    readings.push(treeRssBytes(pid));
    const last = readings.slice(-3);
    const settled = last.length === 3 && Math.max(...last) - Math.min(...last) <= 0.01 * Math.max(...last);
    if ((settled && Date.now() - start >= minMs) || Date.now() - start >= RELEASE_MAX_MS) return last[last.length - 1]!;
  }
}

export interface TlsDesktopReplica {
  /** ws:// URL of a path on the TLS desktop through the replica. */
  socketUrl: string;
  replica: Service;
  /** The replica's Prometheus metrics. */
  metricsUrl: string;
  stop(): Promise<void>;
}

/** The demo desktop serving TLS (its own process) and a replica of its own routing `/desktop/<name>/` to it. */
export async function tlsDesktopReplica(deskhub: DeskhubStream, repoRoot: string, runDir: string, name: string): Promise<TlsDesktopReplica> {
  const upstreamPort = await freePort();
  const upstream = spawnService({
    name: 'tls-desktop',
    command: process.execPath,
    args: ['--import', 'tsx', path.join(repoRoot, 'packages/demo-desktop/src/main.ts')],
    cwd: repoRoot,
    env: { PORT: String(upstreamPort), TLS: 'true', DESKTOP_NAME: name },
    logDir: runDir,
  });
  const port = await freePort();
  const metricsPort = await freePort();
  const replica = deskhub.startReplica({ name: `deskhub-${name}`, port, metricsPort, upstreamPort });
  const stop = async () => {
    await replica.stop();
    await upstream.stop();
  };
  try {
    const route = benchRoute(name, upstreamPort);
    route.upstream = { ...route.upstream, scheme: 'https', verifyTls: false };
    await deskhub.publisher.publish({ version: ++deskhub.version, op: 'put', route });
    await waitUntil(replica, 'the TLS desktop served through the replica', async () => (await httpGet(`http://127.0.0.1:${port}/desktop/${name}/`)).status === 200, 60_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { socketUrl: `ws://127.0.0.1:${port}/desktop/${name}/idle`, replica, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`, stop };
}

export async function tlsIdleMemory(deskhub: DeskhubStream, repoRoot: string, runDir: string, count: number, rounds: number, releaseMinMs: number): Promise<TlsMemoryResult> {
  const desktop = await tlsDesktopReplica(deskhub, repoRoot, runDir, 'bench-tls');
  const sockets = idleSockets();
  try {
    const pid = desktop.replica.pid!;
    await untilSettledAge(pid);
    const fresh = await settledRss(pid, SETTLE_MS);
    const openRss: number[] = [];
    const closedRss: number[] = [];
    for (let round = 0; round < rounds; round++) {
      await sockets.open(desktop.socketUrl, count, 100);
      openRss.push(await settledRss(pid, SETTLE_MS));
      if (sockets.closes > 0) throw new Error(`${sockets.closes} idle TLS-upstream sockets closed while open`);
      await sockets.closeAll();
      closedRss.push(await releasedRss(pid, releaseMinMs));
    }
    return { count, rounds, freshRssBytes: fresh, openRssBytes: openRss, closedRssBytes: closedRss, perSocketBytes: (openRss[0]! - fresh) / count, allocator: replicaAllocator(pid) };
  } finally {
    await sockets.closeAll();
    await desktop.stop();
  }
}
