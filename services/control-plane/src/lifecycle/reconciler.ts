/**
 * Reconciliation, level-triggered: at start and every RECONCILE_INTERVAL_MS (and soon after a
 * runtime reports a desktop gone), compare the desktops table with what every runtime reports,
 * and repair the difference through the lifecycle: instances nobody knows are removed, desktops
 * whose instance died or vanished lose their route and say so, and desktops left half-created or
 * half-stopped by a control plane that died are finished or failed. It never trusts that an
 * earlier event arrived; a crash at any line leaves a state the next pass repairs.
 *
 * It also copies the proxies' activity and presence into the desktops table every
 * ACTIVITY_INTERVAL_MS (lifecycle/activity.ts).
 */
import { StandingCondition, type Logger } from '@deskhub/config';
import type { RoutePublisher } from '@deskhub/route-stream';
import type { Database } from '../db/client.ts';
import { desktops, desktopStates } from '../db/schema.ts';
import type { Metrics } from '../metrics.ts';
import type { RuntimeName, RuntimeRegistry } from '../runtime/index.ts';
import type { RuntimeStatus } from '../runtime/types.ts';
import type { DesktopLifecycle } from './desktops.ts';
import { decideRepair, type Repair } from './repairs.ts';

export interface ReconcilerOptions {
  db: Database;
  lifecycle: DesktopLifecycle;
  runtimes: RuntimeRegistry;
  publisher: RoutePublisher;
  logger: Logger;
  metrics?: Metrics;
  intervalMs: number;
  activityIntervalMs: number;
}

export interface PassResult {
  repairs: Repair[];
  /** Runtimes whose list() failed: their desktops were left alone this time. */
  skippedRuntimes: string[];
}

export class Reconciler {
  private readonly logger: Logger;
  /** Runtimes that cannot list (a Swarm runtime on an engine that is no swarm manager): said once, not every pass. */
  private readonly listing: StandingCondition;
  private timer: NodeJS.Timeout | null = null;
  private activityTimer: NodeJS.Timeout | null = null;
  private soonTimer: NodeJS.Timeout | null = null;
  private running: Promise<PassResult> | null = null;
  private readonly unwatch: (() => void)[] = [];
  private closed = false;
  /** Passes completed; /readyz waits for the first. */
  passes = 0;

  constructor(private readonly options: ReconcilerOptions) {
    this.logger = options.logger.child({ component: 'reconciler' });
    this.listing = new StandingCondition(this.logger);
  }

  /** Runs the first pass, then keeps going on a timer and on runtime exit events. */
  async start(): Promise<PassResult> {
    for (const runtime of this.options.runtimes.all) {
      this.unwatch.push(runtime.watch((status) => {
        this.logger.info({ runtime: runtime.name, desktopId: status.desktopId, reason: status.reason }, 'runtime reports a desktop ended');
        this.soon();
      }));
    }
    const first = await this.pass();
    this.timer = setInterval(() => void this.pass().catch(() => {}), this.options.intervalMs);
    this.timer.unref();
    this.activityTimer = setInterval(() => void this.copyActivity(), this.options.activityIntervalMs);
    this.activityTimer.unref();
    return first;
  }

  /** A pass shortly (coalescing bursts of exit events). */
  soon(): void {
    if (this.soonTimer || this.closed) return;
    this.soonTimer = setTimeout(() => {
      this.soonTimer = null;
      void this.pass().catch(() => {});
    }, 100);
    this.soonTimer.unref();
  }

  /** One comparison of database and runtimes; concurrent calls share the pass under way. */
  pass(): Promise<PassResult> {
    if (this.closed) return Promise.resolve({ repairs: [], skippedRuntimes: [] });
    if (!this.running) {
      this.running = this.runPass().finally(() => {
        this.running = null;
      });
    }
    return this.running;
  }

  private async runPass(): Promise<PassResult> {
    const { db, lifecycle, runtimes, metrics } = this.options;
    const startedAt = performance.now();
    // Listed before the rows are read: an instance made after the read cannot look like an orphan
    // (and each repair re-reads both anyway, inside the desktop's queue).
    const listed = new Map<RuntimeName, RuntimeStatus[]>();
    const skippedRuntimes: string[] = [];
    for (const runtime of runtimes.all) {
      try {
        listed.set(runtime.name, await runtime.list());
        this.listing.ok(runtime.name, { runtime: runtime.name }, 'runtime lists its desktops again');
      } catch (err) {
        skippedRuntimes.push(runtime.name);
        this.listing.failing(runtime.name, (err as Error).message, { runtime: runtime.name }, 'runtime did not list its desktops; leaving them alone while it does not');
      }
    }
    const rows = await db
      .select({ id: desktops.id, state: desktops.state, runtime: desktops.runtime, runtimeId: desktops.runtimeId, route: desktops.route, upstream: desktops.upstream })
      .from(desktops);
    const byId = new Map(rows.map((row) => [row.id, row]));
    // Each runtime's instances by runtime id: one lookup per row, not a scan of the list per row.
    const instances = new Map([...listed].map(([name, statuses]) => [name, new Map(statuses.map((s) => [s.runtimeId, s]))]));

    const work: Promise<Repair | null>[] = [];
    for (const [runtimeName, statuses] of listed) {
      for (const status of statuses) {
        const row = byId.get(status.desktopId);
        if (row && row.runtime === runtimeName && row.runtimeId === status.runtimeId) continue;
        if (lifecycle.queue.busy(status.desktopId)) continue;
        work.push(lifecycle.repair(status.desktopId, { runtime: runtimeName, runtimeId: status.runtimeId }));
      }
    }
    const counts = new Map<string, number>(desktopStates.map((s) => [s, 0]));
    for (const row of rows) {
      counts.set(row.state, (counts.get(row.state) ?? 0) + 1);
      const byRuntimeId = instances.get(row.runtime);
      if (!byRuntimeId || lifecycle.queue.busy(row.id)) continue;
      const status = (row.runtimeId && byRuntimeId.get(row.runtimeId)) || null;
      if (decideRepair(row, status)) work.push(lifecycle.repair(row.id));
    }
    for (const [state, n] of counts) metrics?.desktops.set({ state }, n);

    const repairs: Repair[] = [];
    for (const outcome of await Promise.allSettled(work)) {
      if (outcome.status === 'rejected') this.logger.error({ err: outcome.reason }, 'repair failed; next pass tries again');
      else if (outcome.value) {
        repairs.push(outcome.value);
        metrics?.reconcileActions.inc({ action: outcome.value.kind });
      }
    }
    this.passes++;
    metrics?.reconcilePasses.inc();
    metrics?.reconcilePassSeconds.observe((performance.now() - startedAt) / 1000);
    if (repairs.length > 0) this.logger.info({ repairs: repairs.map((r) => r.kind) }, 'reconciliation repaired desktops');
    return { repairs, skippedRuntimes };
  }

  /** Copies the proxies' activity and presence into the desktops table. */
  async copyActivity(): Promise<void> {
    try {
      const publisher = this.options.publisher;
      const [activity, presence] = await Promise.all([publisher.readActivity(), publisher.readPresence()]);
      if (activity.size > 0 || presence.size > 0) await this.options.lifecycle.recordActivity({ activity, presence });
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'could not read activity from the route store');
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.activityTimer) clearInterval(this.activityTimer);
    if (this.soonTimer) clearTimeout(this.soonTimer);
    for (const unwatch of this.unwatch) unwatch();
    await this.running?.catch(() => {});
  }
}
