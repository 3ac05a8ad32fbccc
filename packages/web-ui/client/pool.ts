/**
 * The warm pool as the UI says it, as pure functions (checked in Node by test/pool.test.ts): the
 * admin view's per-type grouping of unclaimed members, and how a launch's progress recognises a
 * claim and leaves out a previous run's replayed events.
 */

/** What the helpers read of a desktop (a subset of api.ts's Desktop). */
export interface PoolMember {
  id: string;
  type: string;
  state: string;
  createdAt?: string | null;
  readyAt?: string | null;
}

export interface PoolGroup<M extends PoolMember = PoolMember> {
  type: string;
  /** Members a create can claim now (`running`). */
  ready: number;
  /** Members on their way (`creating`, `starting`). */
  starting: number;
  /** Members the pool is about to replace (`failed`, `stopping`, `stopped`). */
  leaving: number;
  /** Ready ones first (oldest ready first: the next claimed), then the rest by age. */
  members: M[];
}

const STARTING = new Set(['creating', 'starting']);

function time(iso: string | null | undefined): number {
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isNaN(t) ? Number.MAX_SAFE_INTEGER : t;
}

/** Unclaimed members grouped per type (types in alphabetical order). */
export function poolGroups<M extends PoolMember>(members: readonly M[]): PoolGroup<M>[] {
  const byType = new Map<string, M[]>();
  for (const m of members) byType.set(m.type, [...(byType.get(m.type) ?? []), m]);
  return [...byType.keys()].sort().map((type) => {
    const list = byType.get(type)!;
    const ready = list.filter((m) => m.state === 'running').length;
    const starting = list.filter((m) => STARTING.has(m.state)).length;
    const order = (m: M) => (m.state === 'running' ? 0 : STARTING.has(m.state) ? 1 : 2);
    return {
      type,
      ready,
      starting,
      leaving: list.length - ready - starting,
      members: [...list].sort((a, b) => order(a) - order(b) || time(a.readyAt) - time(b.readyAt) || time(a.createdAt) - time(b.createdAt)),
    };
  });
}

/** "2 ready, 1 starting" ("none ready" when nothing can be claimed now). */
export function poolSummary(group: Pick<PoolGroup, 'ready' | 'starting' | 'leaving'>): string {
  const parts = [group.ready === 0 ? 'none ready' : `${group.ready} ready`];
  if (group.starting > 0) parts.push(`${group.starting} starting`);
  if (group.leaving > 0) parts.push(`${group.leaving} being replaced`);
  return parts.join(', ');
}

/** A member has no name and no address of its own: its id's first part tells members apart. */
export function memberLabel(member: Pick<PoolMember, 'id'>): string {
  return `Member ${member.id.slice(0, 8)}`;
}

/** The control plane's claim event: "Claimed a ready <Type> from the warm pool for /desktop/<path>/". */
export function claimMessage(event: { state?: string | null; message?: string }): string | null {
  return event.state === 'starting' && /^Claimed a ready .* from the warm pool\b/.test(event.message ?? '') ? event.message! : null;
}

/**
 * Of events that arrive together (the history an event stream replays on connect), the ones of
 * the latest run: from the last `creating`/`starting` state event on. So a previous run's Ready
 * (a restarted desktop's, or a warm pool member's own start before its claim) never flashes by.
 */
export function latestRun<E extends { state?: string | null }>(events: readonly E[]): E[] {
  let from = 0;
  events.forEach((e, i) => {
    if (e.state === 'creating' || e.state === 'starting') from = i;
  });
  return events.slice(from);
}
