/**
 * The warm pool as a policy (catalog `pool: { size, expireAfter }`): for each pooled type it keeps
 * `size` started, unowned, ready desktops for creates to claim (lifecycle/admission.ts claims
 * one in the create's transaction). Each pass, through the lifecycle's verbs only: members that
 * failed, stopped, were made from other settings (a new image or env: the type's settingsHash)
 * or waited longer than `expireAfter` are deleted; the pool is refilled (createPoolMember) or
 * shrunk back to its size; members of types no longer pooled are deleted. A claim wakes a pass
 * at once, so the refill starts right after. Members never have a route, are outside the idle
 * clocks until claimed, and count in the total quota. After a restart the members are the same
 * rows and containers: reconciliation finds them (by label) like any desktop.
 */
import { eq } from 'drizzle-orm';
import type { Catalog, CatalogEntry } from '../catalog.ts';
import type { Database } from '../db/client.ts';
import { activeStates, desktops } from '../db/schema.ts';
import type { DesktopLifecycle } from '../lifecycle/desktops.ts';
import { describeDuration } from '../durations.ts';
import { policyPlugin, TimedPolicy, type PolicyOptions } from './policy.ts';

export interface PoolPass {
  started: string[];
  recycled: string[];
}

type Member = Pick<typeof desktops.$inferSelect, 'id' | 'type' | 'state' | 'readyAt' | 'createdAt' | 'poolSettings'>;

const ALIVE = new Set<string>(activeStates);

/** Why a member should go, or null to keep it. */
export function recycleReason(member: Member, type: CatalogEntry | undefined, now: number): string | null {
  if (!type?.pool || type.pool.size === 0) return 'its type is no longer pooled';
  if (member.state === 'failed' || member.state === 'stopped') return `it is ${member.state}`;
  if (member.poolSettings !== type.settingsHash) return "the type's settings changed (image, env or limits)";
  if (member.state === 'running' && member.readyAt && now - member.readyAt.getTime() > type.pool.expireAfterMs) {
    return `unclaimed for ${describeDuration(type.pool.expireAfterMs)}`;
  }
  return null;
}

export class WarmPool extends TimedPolicy<PoolPass> {
  /** Types whose refill the quota refused, so that is logged once, not every pass. */
  private readonly refused = new Set<string>();

  constructor(
    private readonly deps: { db: Database; lifecycle: DesktopLifecycle; catalog: Catalog },
    options: PolicyOptions,
  ) {
    super(options);
  }

  protected async pass(): Promise<PoolPass> {
    const { db, lifecycle, catalog } = this.deps;
    const result: PoolPass = { started: [], recycled: [] };
    const members: Member[] = await db
      .select({ id: desktops.id, type: desktops.type, state: desktops.state, readyAt: desktops.readyAt, createdAt: desktops.createdAt, poolSettings: desktops.poolSettings })
      .from(desktops)
      .where(eq(desktops.pool, true));
    const free = new Set(lifecycle.notBusy(members.map((m) => m.id)));
    const now = Date.now();
    const alive = new Map<string, Member[]>();
    for (const member of members) {
      const why = recycleReason(member, catalog.get(member.type), now);
      if (why !== null) {
        if (!free.has(member.id)) continue; // being created or deleted right now: the next pass sees it
        await this.remove(member, why, result);
        continue;
      }
      if (ALIVE.has(member.state)) alive.set(member.type, [...(alive.get(member.type) ?? []), member]);
    }
    for (const type of catalog.entries) {
      if (!type.pool) continue;
      const mine = alive.get(type.id) ?? [];
      // Too many (the size was lowered): the ones not ready yet go first, then the oldest.
      const extra = mine.length - type.pool.size;
      if (extra > 0) {
        const order = [...mine].sort((a, b) => Number(a.state === 'running') - Number(b.state === 'running') || a.createdAt.getTime() - b.createdAt.getTime());
        for (const member of order.filter((m) => free.has(m.id)).slice(0, extra)) await this.remove(member, `the pool of "${type.id}" shrank to ${type.pool.size}`, result);
      }
      for (let i = mine.length; i < type.pool.size; i++) {
        try {
          result.started.push(await lifecycle.createPoolMember(type.id));
          this.refused.delete(type.id);
        } catch (err) {
          if (!this.refused.has(type.id)) this.logger.warn({ type: type.id, err: (err as Error).message }, 'could not refill the warm pool; trying again each pass');
          this.refused.add(type.id);
          break;
        }
      }
    }
    if (result.started.length > 0 || result.recycled.length > 0) this.logger.info({ started: result.started.length, recycled: result.recycled.length }, 'warm pool pass');
    return result;
  }

  private async remove(member: Member, why: string, result: PoolPass): Promise<void> {
    try {
      // Claimed since this pass read it: it is somebody's desktop now, not the pool's to remove.
      if (await this.deps.lifecycle.recyclePoolMember(member.id, why)) result.recycled.push(member.id);
    } catch (err) {
      this.logger.warn({ desktopId: member.id, err: (err as Error).message }, 'could not recycle a warm pool member; the next pass tries again');
    }
  }
}

export default policyPlugin('warm-pool', (app) => {
  // Always on: without a pooled type it still deletes members left from an earlier catalog.
  const policy = new WarmPool({ db: app.db, lifecycle: app.desktops, catalog: app.catalog }, { name: 'warm-pool', intervalMs: app.config.POOL_INTERVAL_MS, logger: app.logger });
  // A claim takes a member: refill at once (or right after a pass under way), not at the next tick.
  app.desktops.on('claimed', () => policy.wake());
  return policy;
});
