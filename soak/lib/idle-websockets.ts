/**
 * Idle WebSockets held for a long time through one replica to a TLS upstream (the Kasm case):
 * the demo desktop with TLS=true behind a replica of its own (bench/lib/tls-memory.ts), `count`
 * sockets opened, then the replica's RSS and open descriptors (/proc/<pid>/status and fd) and its
 * JS heap (the replica's /metrics, prom-client's nodejs_heap_size_used_bytes) sampled every
 * interval. Judged flat from the first interval on; the tolerances are in `FLAT`.
 */
import { openFds, rssBytes } from '../../bench/lib/proc.ts';
import { startDeskhubStream } from '../../bench/lib/deskhub.ts';
import { tlsDesktopReplica } from '../../bench/lib/tls-memory.ts';
import { idleSockets } from '../../bench/lib/ws-load.ts';

export interface IdleSample {
  /** Seconds since the sockets were open. */
  atSeconds: number;
  rssBytes: number;
  heapUsedBytes: number;
  openFds: number;
}

export interface IdleResult {
  count: number;
  intervalSeconds: number;
  samples: IdleSample[];
  /** Sockets that closed on their own, and sockets that did not echo at the end. */
  closed: number;
  silent: number;
  /** (max - first) / first over the samples from the first interval on (first: the sample at the first interval). */
  rssGrowth: number;
  heapGrowth: number;
  /** Largest difference in open descriptors from the first interval's. */
  fdChange: number;
  flat: boolean;
  problems: string[];
}

/**
 * Growth allowed over the first interval's value (a drop is memory given back, not a leak).
 * RSS: 5%. Idle sockets allocate nothing, so real growth is a leak; 5% of the RSS at 10,000
 * sockets (several hundred MiB) is a few KiB per socket, well under one socket's own cost, and
 * above the allocator's and V8's page-level noise between samples.
 * Heap used: 20%. V8 collects its young generation (up to 16 MiB per semispace on Node 20) when
 * it likes, so a sample can carry that much garbage; a leak grows past it.
 * Descriptors: 2, either way. Every socket is one descriptor per side, so any change is a socket
 * gained or lost; 2 leaves room for the replica's own Redis connections reconnecting.
 */
export const FLAT = { rss: 0.05, heap: 0.2, fds: 2 };

async function heapUsed(metricsUrl: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  const m = /^deskhub_proxy_nodejs_heap_size_used_bytes (\S+)$/m.exec(text);
  if (!m) throw new Error(`${metricsUrl} does not report deskhub_proxy_nodejs_heap_size_used_bytes`);
  return Number(m[1]);
}


export async function idleWebSockets(
  repoRoot: string,
  runDir: string,
  options: { count: number; intervals: number; intervalSeconds: number; log: (m: string) => void },
): Promise<IdleResult> {
  const deskhub = await startDeskhubStream(repoRoot, runDir);
  const sockets = idleSockets();
  try {
    const desktop = await tlsDesktopReplica(deskhub, repoRoot, runDir, 'soak-tls');
    try {
      const pid = desktop.replica.pid;
      await sockets.open(desktop.socketUrl, options.count, 100);
      options.log(`${options.count} idle WebSockets open through the replica to the TLS desktop`);
      const samples: IdleSample[] = [];
      const started = Date.now();
      const sample = async () => {
        samples.push({ atSeconds: Math.round((Date.now() - started) / 1000), rssBytes: rssBytes(pid), heapUsedBytes: await heapUsed(desktop.metricsUrl), openFds: openFds(pid) });
        const s = samples[samples.length - 1]!;
        options.log(`t=${s.atSeconds}s RSS ${(s.rssBytes / 2 ** 20).toFixed(1)} MiB, heap ${(s.heapUsedBytes / 2 ** 20).toFixed(1)} MiB, ${s.openFds} fds`);
      };
      await sample();
      for (let i = 1; i <= options.intervals; i++) {
        await new Promise((r) => setTimeout(r, started + i * options.intervalSeconds * 1000 - Date.now()));
        await sample();
      }
      const judged = samples.slice(1);
      const first = judged[0]!;
      const rssGrowth = Math.max(...judged.map((s) => s.rssBytes)) / first.rssBytes - 1;
      const heapGrowth = Math.max(...judged.map((s) => s.heapUsedBytes)) / first.heapUsedBytes - 1;
      const fdChange = Math.max(...judged.map((s) => Math.abs(s.openFds - first.openFds)));
      const closed = sockets.closes;
      const answered = await sockets.echoAll(30_000);
      const silent = options.count - closed - answered;
      const problems: string[] = [];
      if (rssGrowth > FLAT.rss) problems.push(`RSS grew ${(rssGrowth * 100).toFixed(1)}% (tolerance ${FLAT.rss * 100}%)`);
      if (heapGrowth > FLAT.heap) problems.push(`heap grew ${(heapGrowth * 100).toFixed(1)}% (tolerance ${FLAT.heap * 100}%)`);
      if (fdChange > FLAT.fds) problems.push(`open descriptors changed by ${fdChange} (tolerance ${FLAT.fds})`);
      if (closed > 0) problems.push(`${closed} WebSockets closed on their own`);
      if (silent > 0) problems.push(`${silent} WebSockets did not echo at the end`);
      return { count: options.count, intervalSeconds: options.intervalSeconds, samples, closed, silent, rssGrowth, heapGrowth, fdChange, flat: problems.length === 0, problems };
    } finally {
      await sockets.closeAll();
      await desktop.stop();
    }
  } finally {
    await deskhub.close();
  }
}
