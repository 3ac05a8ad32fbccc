/**
 * The repairs reconciliation asks for: what to do about a desktop whose row and runtime instance
 * disagree (decideRepair, a pure function the reconciler also uses to find work), and doing it
 * inside the desktop's queue with the row and the instance read again.
 */
import { eq } from 'drizzle-orm';
import type { Logger } from '@deskhub/config';
import { desktops } from '../db/schema.ts';
import type { DesktopRuntime, RuntimeStatus } from '../runtime/types.ts';
import { sameUpstream, type BringUp } from './bring-up.ts';
import type { DesktopRoutes } from './desktop-routes.ts';
import type { DesktopJournal } from './journal.ts';
import type { LifecycleOptions } from './options.ts';
import { lastLines } from './readiness.ts';
import { loadDesktop, type DesktopRow } from './views.ts';

/** What reconciliation found wrong with one desktop, and will repair. */
export type Repair =
  | { kind: 'remove-orphan'; runtime: DesktopRuntime['name']; runtimeId: string }
  | { kind: 'fail-interrupted-create' }
  | { kind: 'resume' }
  | { kind: 'fail-interrupted-start' }
  | { kind: 'finish-stop' }
  | { kind: 'vanished' }
  | { kind: 'exited'; reason: string | null }
  | { kind: 'withdraw-stale-route' }
  | { kind: 'stop-instance' }
  | { kind: 'forget-instance' };

/** An instance in a runtime that no desktop row names. */
export interface Orphan {
  runtime: DesktopRuntime['name'];
  runtimeId: string;
}

/** What to do about one desktop, given its row and what its runtime reports (null: no instance). */
export function decideRepair(row: Pick<DesktopRow, 'state' | 'runtimeId' | 'route' | 'upstream'> & Partial<Pick<DesktopRow, 'ownerId'>>, status: RuntimeStatus | null): Repair | null {
  switch (row.state) {
    case 'creating':
      // Nobody in this process is creating it (the caller checked): its creator died.
      return { kind: 'fail-interrupted-create' };
    case 'starting':
      return status?.running ? { kind: 'resume' } : { kind: 'fail-interrupted-start' };
    case 'stopping':
      return { kind: 'finish-stop' };
    case 'running':
      if (!status) return { kind: 'vanished' };
      if (!status.running) return { kind: 'exited', reason: status.reason ?? null };
      // An unclaimed warm pool member (no owner) has no route by design.
      if ((!row.route && row.ownerId !== null) || (status.upstream && !sameUpstream(status.upstream, row.upstream))) return { kind: 'resume' };
      return null;
    case 'stopped':
    case 'failed':
      if (row.route) return { kind: 'withdraw-stale-route' };
      if (status?.running) return { kind: 'stop-instance' };
      if (row.runtimeId && !status) return { kind: 'forget-instance' };
      return null;
  }
}

export interface RepairSteps {
  bringUp: BringUp;
  routes: DesktopRoutes;
  journal: DesktopJournal;
  /** The second half of a stop: the instance stopped, the desktop `stopped` (or `failed`). */
  finishStop(id: string): Promise<void>;
}

export class Repairs {
  constructor(
    private readonly options: LifecycleOptions,
    private readonly steps: RepairSteps,
    private readonly logger: Logger,
  ) {}

  /** Re-reads the desktop and its instance and repairs what is still wrong. Runs inside the queue. */
  async run(id: string, orphan: Orphan | undefined, signal: AbortSignal): Promise<Repair | null> {
    const { bringUp, routes, journal } = this.steps;
    const metrics = this.options.metrics;
    const row = await loadDesktop(this.options.db, id);
    if (orphan) {
      if (row && row.runtime === orphan.runtime && row.runtimeId === orphan.runtimeId) return null;
      const runtime = this.options.runtimes.get(orphan.runtime);
      if (!runtime) return null;
      this.logger.warn({ desktopId: id, runtime: orphan.runtime, runtimeId: orphan.runtimeId }, 'removing a desktop deskhub does not know');
      await runtime.remove(orphan.runtimeId);
      return { kind: 'remove-orphan', ...orphan } satisfies Repair;
    }
    if (!row) return null;
    const runtime = this.options.runtimes.get(row.runtime);
    if (!runtime) return null;
    const status = row.runtimeId ? await runtime.inspect(row.runtimeId) : null;
    const repair = decideRepair(row, status);
    if (!repair) return null;
    this.logger.info({ desktopId: id, proxyPath: row.proxyPath, state: row.state, repair: repair.kind }, 'repairing desktop');
    await journal.note(id, 'info', `reconciliation: ${repair.kind}`);
    switch (repair.kind) {
      case 'fail-interrupted-create': {
        await routes.withdraw(id);
        // Leftovers are this row's instance, or one whose id never reached the row.
        const leftovers = new Set<string>(row.runtimeId ? [row.runtimeId] : []);
        for (const s of await runtime.list().catch(() => [] as RuntimeStatus[])) if (s.desktopId === id) leftovers.add(s.runtimeId);
        for (const runtimeId of leftovers) await runtime.remove(runtimeId);
        await journal.setState(id, 'failed', 'deskhub stopped while this desktop was being created; delete it and create it again', { runtimeId: null, upstream: null });
        metrics?.failures.inc({ type: row.type });
        break;
      }
      case 'resume':
        await bringUp.run(id, 'resume', signal);
        break;
      case 'fail-interrupted-start':
        await bringUp.fail(id, `deskhub stopped while this desktop was starting${status?.reason ? ` (${status.reason})` : ''}`, 'stop', row.type);
        break;
      case 'finish-stop':
        await this.steps.finishStop(id);
        break;
      case 'vanished':
        await routes.withdraw(id);
        await journal.setState(id, 'failed', `the desktop no longer exists in the ${runtime.name} runtime (removed outside deskhub)`, { runtimeId: null, upstream: null });
        metrics?.failures.inc({ type: row.type });
        break;
      case 'exited': {
        await routes.withdraw(id);
        if (!repair.reason || repair.reason === 'stopped') {
          await journal.setState(id, 'stopped', 'stopped outside deskhub');
        } else {
          await journal.setState(id, 'failed', `${repair.reason}${await lastLines(runtime, row.runtimeId!)}`);
          metrics?.failures.inc({ type: row.type });
        }
        break;
      }
      case 'withdraw-stale-route':
        await routes.withdraw(id);
        break;
      case 'stop-instance':
        await runtime.stop(row.runtimeId!);
        break;
      case 'forget-instance':
        await this.options.db.update(desktops).set({ runtimeId: null, upstream: null, updatedAt: new Date() }).where(eq(desktops.id, id));
        await journal.note(id, 'info', 'its instance is gone; the next start creates a new one');
        break;
    }
    return repair;
  }
}
