/**
 * Homes (catalog `home`): storage kept across its desktops' lives. A create finds its home (or
 * makes the row, under the per-user quota) inside the admission transaction; at most one desktop
 * per home is active (creating, starting, running or stopping) — a Kasm container rewrites
 * $HOME/.kasmpasswd with its own password at start, so a second one would lock the first out —
 * checked under one advisory lock by create and start alike. Homes are deleted only on request,
 * and only when no desktop uses them. The runtime holds the storage (a volume, a directory).
 */
import { and, asc, eq, inArray, ne, sql } from 'drizzle-orm';
import type { CatalogEntry } from '../catalog.ts';
import type { Queryable, Transaction } from '../db/client.ts';
import { activeStates, desktops, homes, users } from '../db/schema.ts';
import { conflict, notFound } from '../errors.ts';
import type { HomeStatus, NodeView } from '../runtime/types.ts';
import type { LifecycleOptions } from './options.ts';
import { isUuid, type Owner, type Scope } from './views.ts';

/** Advisory lock key held while a desktop takes its home ("deskhome" in ASCII). */
export const HOME_LOCK = 0x6465736b686f6d65n;

export type HomeRow = typeof homes.$inferSelect;

export interface HomeView {
  id: string;
  owner: string;
  name: string;
  scope: 'user' | 'desktop';
  /** The desktop name it belongs to (scope desktop), else null. */
  desktopName: string | null;
  runtime: string;
  createdAt: string;
  lastUsedAt: string | null;
  /** Bytes used, when the runtime can tell. */
  sizeBytes: number | null;
  /** Swarm: the node that holds it. */
  node: { id: string; name: string } | null;
  /** The desktops that mount it (any state): it cannot be deleted while there are any. */
  usedBy: Array<{ id: string; proxyPath: string; state: string }>;
}

/** Holds the home lock for the rest of the transaction. */
export async function lockHomes(tx: Transaction): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock(${HOME_LOCK})`);
}

/** The active desktop (other than `except`) that holds the home, if any. */
export async function homeHolder(q: Queryable, homeId: string, except?: string): Promise<{ id: string; proxyPath: string } | undefined> {
  const [holder] = await q
    .select({ id: desktops.id, proxyPath: desktops.proxyPath })
    .from(desktops)
    .where(and(eq(desktops.homeId, homeId), inArray(desktops.state, [...activeStates]), except ? ne(desktops.id, except) : undefined))
    .limit(1);
  return holder;
}

export function inUse(name: string, holder: { proxyPath: string }): Error {
  return conflict(`the home "${name}" is in use by the desktop at /desktop/${holder.proxyPath}/: stop that desktop first (one desktop per home)`);
}

/**
 * Finds the create's home, or makes its row (409 over MAX_HOMES_PER_USER), and refuses it when an
 * active desktop holds it. Call under lockHomes.
 */
export async function takeHome(tx: Transaction, options: LifecycleOptions, owner: Owner, type: CatalogEntry, desktopName: string): Promise<string> {
  const home = type.home!;
  const key = { ownerId: owner.id, runtime: type.runtime, name: home.name, desktopName: home.scope === 'desktop' ? desktopName : '' };
  return (await findOrMakeHome(tx, options, owner, key, home.scope)).id;
}

/**
 * The home of this identity (owner, runtime, name, desktop name), its row made when missing (409
 * over MAX_HOMES_PER_USER); 409 when an active desktop other than `except` holds it. Marked used.
 */
async function findOrMakeHome(
  tx: Transaction,
  options: LifecycleOptions,
  owner: Owner,
  key: Pick<HomeRow, 'ownerId' | 'runtime' | 'name' | 'desktopName'>,
  scope: HomeRow['scope'],
  except?: string,
): Promise<HomeRow> {
  let [row] = await tx.select().from(homes).where(and(eq(homes.ownerId, key.ownerId), eq(homes.runtime, key.runtime), eq(homes.name, key.name), eq(homes.desktopName, key.desktopName)));
  if (!row) {
    await checkHomeQuota(tx, options, owner);
    [row] = await tx.insert(homes).values({ ...key, scope }).returning();
  }
  const holder = await homeHolder(tx, row!.id, except);
  if (holder) throw inUse(key.name, holder);
  await tx.update(homes).set({ lastUsedAt: new Date() }).where(eq(homes.id, row!.id));
  return row!;
}

/** 409 when the owner has MAX_HOMES_PER_USER homes already. */
async function checkHomeQuota(tx: Transaction, options: LifecycleOptions, owner: Owner): Promise<void> {
  const limit = options.homesPerUser;
  if (limit <= 0) return;
  const [counted] = await tx.select({ n: sql<number>`count(*)`.mapWith(Number) }).from(homes).where(eq(homes.ownerId, owner.id));
  if ((counted?.n ?? 0) >= limit) {
    throw conflict(`quota reached: at most ${limit} homes per user (MAX_HOMES_PER_USER); ${owner.username} has ${counted!.n}. Delete one under Homes first.`);
  }
}

/**
 * Gives the desktop a stand-in home in place of one whose node is lost (HOME_NODE_LOST=
 * offer-new-home, after its owner confirmed): "home (stand-in for node abc123def456)", new and
 * empty the first time, the same one again if an earlier desktop used it. The home itself keeps
 * its name and its files on its node, so new desktops take it again once that node is back; this
 * desktop keeps its stand-in. A new stand-in counts against MAX_HOMES_PER_USER. Call under lockHomes.
 */
export async function standInHome(tx: Transaction, options: LifecycleOptions, owner: Owner, desktopId: string, homeId: string): Promise<{ name: string; standIn: string; location: string | null }> {
  const [home] = await tx.select().from(homes).where(eq(homes.id, homeId));
  if (!home) throw notFound(`no home ${homeId}`);
  const key = { ownerId: home.ownerId, runtime: home.runtime, name: `${home.name} (stand-in for node ${home.location?.slice(0, 12) ?? 'unknown'})`, desktopName: home.desktopName };
  const standIn = await findOrMakeHome(tx, options, owner, key, home.scope, desktopId);
  await tx.update(desktops).set({ homeId: standIn.id }).where(eq(desktops.id, desktopId));
  return { name: home.name, standIn: standIn.name, location: home.location };
}

/** Homes in scope, with who uses them and their sizes (from the runtimes). */
export class Homes {
  constructor(private readonly options: LifecycleOptions) {}

  async list(scope: Scope): Promise<HomeView[]> {
    const rows = await this.options.db
      .select({ home: homes, ownerName: users.username })
      .from(homes)
      .innerJoin(users, eq(users.id, homes.ownerId))
      .where('admin' in scope ? undefined : eq(homes.ownerId, scope.id))
      .orderBy(asc(homes.createdAt));
    if (rows.length === 0) return [];
    const mounting = await this.options.db
      .select({ id: desktops.id, proxyPath: desktops.proxyPath, state: desktops.state, homeId: desktops.homeId })
      .from(desktops)
      .where(inArray(desktops.homeId, rows.map((r) => r.home.id)));
    const stored = new Map<string, HomeStatus>();
    for (const runtime of new Set(rows.map((r) => r.home.runtime))) {
      const listed = await this.options.runtimes.get(runtime)?.listHomes().catch(() => []);
      for (const h of listed ?? []) stored.set(h.homeId, h);
    }
    return rows.map(({ home, ownerName }) => ({
      id: home.id,
      owner: ownerName,
      name: home.name,
      scope: home.scope,
      desktopName: home.scope === 'desktop' ? home.desktopName : null,
      runtime: home.runtime,
      createdAt: home.createdAt.toISOString(),
      lastUsedAt: home.lastUsedAt?.toISOString() ?? null,
      sizeBytes: stored.get(home.id)?.sizeBytes ?? null,
      node: stored.get(home.id)?.node ?? null,
      usedBy: mounting.filter((d) => d.homeId === home.id).map(({ id, proxyPath, state }) => ({ id, proxyPath, state })),
    }));
  }

  /**
   * Moves a home to another node (Swarm; 409 on a runtime whose homes every desktop sees): while
   * no desktop runs with it, under the home lock, so none takes it meanwhile. The new node is
   * recorded: the home's desktops, started again, run there.
   */
  async move(id: string, node: string, by: string): Promise<HomeView> {
    const { db } = this.options;
    const row = await db.transaction(async (tx) => {
      await lockHomes(tx);
      const [home] = isUuid(id) ? await tx.select().from(homes).where(eq(homes.id, id)) : [];
      if (!home) throw notFound(`no home ${id}`);
      const holder = await homeHolder(tx, home.id);
      if (holder) throw conflict(`the home "${home.name}" is in use by the desktop at /desktop/${holder.proxyPath}/: stop it first, then move the home`);
      const runtime = this.options.runtimes.get(home.runtime);
      if (!runtime?.moveHome) throw conflict(`the home "${home.name}" is on the ${home.runtime} runtime, whose homes do not live on one node: nothing to move`);
      let location: string;
      try {
        location = await runtime.moveHome(home.id, node);
      } catch (err) {
        throw conflict(`could not move the home "${home.name}": ${(err as Error).message}`);
      }
      await tx.update(homes).set({ location }).where(eq(homes.id, home.id));
      return home;
    });
    this.options.logger.info({ homeId: row.id, owner: row.ownerId, name: row.name, node, by }, 'home moved');
    const [view] = (await this.list({ admin: true })).filter((h) => h.id === row.id);
    return view!;
  }

  /** The nodes of every runtime whose homes live on one node (Swarm), for the admin's move control. */
  async nodes(): Promise<Array<NodeView & { runtime: string }>> {
    const listed = await Promise.all(
      this.options.runtimes.all.map(async (runtime) => {
        if (!runtime.homeNodes) return [];
        const nodes = await runtime.homeNodes().catch((err: unknown) => {
          throw conflict(`the ${runtime.name} runtime did not list its nodes: ${(err as Error).message}`);
        });
        return nodes.map((n) => ({ ...n, runtime: runtime.name }));
      }),
    );
    return listed.flat();
  }

  /** Deletes the home and its storage; 409 while any desktop (in any state) mounts it. */
  async delete(scope: Scope, id: string): Promise<void> {
    const { db } = this.options;
    const row = await db.transaction(async (tx) => {
      await lockHomes(tx);
      const [home] = isUuid(id) ? await tx.select().from(homes).where('admin' in scope ? eq(homes.id, id) : and(eq(homes.id, id), eq(homes.ownerId, scope.id))) : [];
      if (!home) throw notFound(`no home ${id}`);
      const used = await tx.select({ proxyPath: desktops.proxyPath }).from(desktops).where(eq(desktops.homeId, id));
      if (used.length > 0) {
        throw conflict(`the home "${home.name}" is used by ${used.map((d) => `/desktop/${d.proxyPath}/`).join(', ')}: delete ${used.length === 1 ? 'that desktop' : 'those desktops'} first (stopping is not enough: a stopped desktop keeps its home)`);
      }
      // The storage first, then the row: if the runtime refuses, the home is still listed and the caller is told why.
      const runtime = this.options.runtimes.get(home.runtime);
      if (!runtime) throw conflict(`the home "${home.name}" is on the ${home.runtime} runtime, which is not enabled here`);
      try {
        await runtime.removeHome(home.id);
      } catch (err) {
        throw conflict(`could not delete the home "${home.name}": ${(err as Error).message}`);
      }
      await tx.delete(homes).where(eq(homes.id, id));
      return home;
    });
    this.options.logger.info({ homeId: row.id, owner: row.ownerId, name: row.name }, 'home deleted');
  }
}
