/**
 * Desktop traffic during a scenario: steady HTTP requests to every live desktop through every
 * replica (two sequential workers per replica, a request every ~25 ms each), and WebSockets held
 * open through every replica to every desktop. Each failure and each close is counted per
 * replica and per desktop, so a scenario can tell expected losses (the killed replica's own
 * connections, a deleted desktop's sockets) from lost ones.
 */
import type WebSocket from 'ws';
import { openSocket } from '../../bench/lib/ws-load.ts';
import type { ReplicaName, Topology } from './topology.ts';

export interface TrafficCounts {
  requests: number;
  failed: number;
  /** A few failures as text, for the report. */
  samples: string[];
}

interface HeldSocket {
  ws: WebSocket;
  replica: ReplicaName;
  desktop: string;
  /** Closed by the harness itself: not a drop. */
  letGo: boolean;
  closedAt: number | null;
}

const REQUEST_TIMEOUT_MS = 5000;
const PAUSE_MS = 25;

export class DesktopTraffic {
  readonly counts: Record<ReplicaName, TrafficCounts> = { A: fresh(), B: fresh() };
  private readonly sockets: HeldSocket[] = [];
  private paths: string[] = [];
  private running = false;
  private workers: Promise<void>[] = [];
  private turn = 0;

  constructor(private readonly topology: Topology) {}

  /** The desktops traffic goes to (proxy paths). */
  setDesktops(paths: string[]): void {
    this.paths = [...paths];
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    for (const replica of ['A', 'B'] as const) for (let i = 0; i < 2; i++) this.workers.push(this.worker(replica));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
    this.workers = [];
  }

  /** Zeroes the request counts (each scenario reports its own). */
  reset(): void {
    for (const name of ['A', 'B'] as const) this.counts[name] = fresh();
  }

  private async worker(replica: ReplicaName): Promise<void> {
    while (this.running) {
      const paths = this.paths;
      if (paths.length > 0) {
        const p = paths[this.turn++ % paths.length]!;
        const counts = this.counts[replica];
        const url = `${this.topology.replicas[replica].url}/desktop/${p}/?path=desktop/${p}/websockify`;
        try {
          const res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
          await res.arrayBuffer();
          // Counted after the answer: a desktop taken out of the traffic meanwhile is not a loss.
          if (this.paths.includes(p)) {
            counts.requests++;
            if (res.status >= 400) fail(counts, `${replica} ${p}: HTTP ${res.status}`);
          }
        } catch (err) {
          if (this.paths.includes(p)) {
            counts.requests++;
            fail(counts, `${replica} ${p}: ${(err as Error).cause ? ((err as Error).cause as Error).message : (err as Error).message}`);
          }
        }
      }
      await new Promise((r) => setTimeout(r, PAUSE_MS));
    }
  }

  /** Opens `perDesktop` WebSockets to each desktop through the replica. */
  async openSockets(replica: ReplicaName, paths: string[], perDesktop: number): Promise<void> {
    const base = this.topology.replicas[replica].url.replace(/^http/, 'ws');
    await Promise.all(
      paths.flatMap((p) =>
        Array.from({ length: perDesktop }, async () => {
          const ws = await openSocket(`${base}/desktop/${p}/websockify`, 15_000);
          const held: HeldSocket = { ws, replica, desktop: p, letGo: false, closedAt: null };
          ws.once('close', () => (held.closedAt = Date.now()));
          this.sockets.push(held);
        }),
      ),
    );
  }

  /** Sockets that closed without the harness closing them, by replica (and optionally one desktop). */
  dropped(replica: ReplicaName): number {
    return this.sockets.filter((s) => s.replica === replica && s.closedAt !== null && !s.letGo).length;
  }

  /** Sockets held (open or dropped, not let go), through one replica. */
  held(replica?: ReplicaName): number {
    return this.sockets.filter((s) => (replica === undefined || s.replica === replica) && !s.letGo).length;
  }

  /** Sends a message on every open socket; resolves with how many did not echo it within the time. */
  async silent(timeoutMs = 10_000): Promise<number> {
    const open = this.sockets.filter((s) => s.closedAt === null && !s.letGo);
    const answers = await Promise.all(
      open.map(
        (s) =>
          new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => resolve(false), timeoutMs);
            s.ws.once('message', () => {
              clearTimeout(timer);
              resolve(true);
            });
            s.ws.send('still there?', (err) => err && resolve(false));
          }),
      ),
    );
    return answers.filter((ok) => !ok).length;
  }

  /** Closes (and forgets) the sockets matching, without counting them as dropped. */
  letGo(match: (s: { replica: ReplicaName; desktop: string; closed: boolean }) => boolean): number {
    let n = 0;
    for (let i = this.sockets.length - 1; i >= 0; i--) {
      const s = this.sockets[i]!;
      if (!match({ replica: s.replica, desktop: s.desktop, closed: s.closedAt !== null })) continue;
      s.letGo = true;
      s.ws.terminate();
      this.sockets.splice(i, 1);
      n++;
    }
    return n;
  }

  closeAll(): void {
    this.letGo(() => true);
  }
}

function fresh(): TrafficCounts {
  return { requests: 0, failed: 0, samples: [] };
}

function fail(counts: TrafficCounts, text: string): void {
  counts.failed++;
  if (counts.samples.length < 5) counts.samples.push(text);
}
