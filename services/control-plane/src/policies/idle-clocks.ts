/**
 * The idle clocks as a policy (README: Idle desktops): every CLOCKS_INTERVAL_MS it reads the
 * running desktops' stored times, derives their deadlines (lifecycle/clocks.ts, the same the API
 * shows) and, through the lifecycle's verbs only: records warnings as their windows begin,
 * disconnects a desktop's streams after its idle period, stops or deletes a desktop nobody has
 * been connected to, and stops one whose lifetime is over. Level-triggered: nothing lives in
 * memory, so a control plane restarted between a warning and its deadline still acts on time.
 */
import { eq } from 'drizzle-orm';
import type { Catalog } from '../catalog.ts';
import type { Database } from '../db/client.ts';
import { desktops } from '../db/schema.ts';
import { deadlines, due, warnings, type ClockName } from '../lifecycle/clocks.ts';
import type { DesktopLifecycle } from '../lifecycle/desktops.ts';
import { policyPlugin, TimedPolicy, type PolicyOptions } from './policy.ts';

/** What a pass did, for tests and logs. */
export interface ClockPass {
  disconnected: string[];
  stopped: string[];
  deleted: string[];
  warned: string[];
}

const SYSTEM = { admin: true } as const;

function sameWarnings(a: Partial<Record<ClockName, number>>, b: Partial<Record<ClockName, number>>): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]) as Set<ClockName>;
  for (const k of keys) if (a[k] !== b[k]) return false;
  return true;
}

export class IdleClocks extends TimedPolicy<ClockPass> {
  constructor(
    private readonly deps: { db: Database; lifecycle: DesktopLifecycle; catalog: Catalog },
    options: PolicyOptions,
  ) {
    super(options);
  }

  protected async pass(): Promise<ClockPass> {
    const { db, lifecycle, catalog } = this.deps;
    const result: ClockPass = { disconnected: [], stopped: [], deleted: [], warned: [] };
    const rows = await db.select().from(desktops).where(eq(desktops.state, 'running'));
    const free = new Set(lifecycle.notBusy(rows.map((r) => r.id)));
    const now = Date.now();
    for (const row of rows) {
      const settings = catalog.get(row.type)?.clocks;
      if (!settings || !free.has(row.id)) continue;
      const list = deadlines(row, settings, now, lifecycle.connectedWindowMs);
      const act = due(list, now);
      try {
        if (act?.action === 'disconnect') {
          if (await lifecycle.disconnect(row.id, act.why)) result.disconnected.push(row.id);
        } else if (act?.action === 'stop') {
          await lifecycle.stop(SYSTEM, row.id, act.why);
          result.stopped.push(row.id);
        } else if (act?.action === 'delete') {
          await lifecycle.delete(SYSTEM, row.id, act.why);
          result.deleted.push(row.id);
        } else if (!sameWarnings(warnings(list, now), row.clockWarnings ?? {})) {
          await lifecycle.warnClocks(row.id, list, now);
          result.warned.push(row.id);
        }
        if (act) this.logger.info({ desktopId: row.id, clock: act.clock, action: act.action, why: act.why }, 'idle clock ran out');
      } catch (err) {
        this.logger.warn({ desktopId: row.id, err: (err as Error).message }, 'could not apply an idle clock; the next pass tries again');
      }
    }
    return result;
  }
}

export default policyPlugin('idle-clocks', (app) => {
  const anyClock = app.catalog.entries.some((e) => e.clocks.idle || e.clocks.expire || e.clocks.lifetime);
  if (!anyClock) return null;
  return new IdleClocks(
    { db: app.db, lifecycle: app.desktops, catalog: app.catalog },
    { name: 'idle-clocks', intervalMs: app.config.CLOCKS_INTERVAL_MS, logger: app.logger },
  );
});
