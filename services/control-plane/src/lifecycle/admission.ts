/**
 * Admission of a new desktop: the request checked (type, whether it can run here, its name),
 * then, in one transaction under an advisory lock, the quotas counted and a collision-safe proxy
 * path taken, with credentials generated for it, and its home (homes.ts) found or made.
 */
import { and, asc, eq, like, or, sql } from 'drizzle-orm';
import type { Catalog, CatalogEntry } from '../catalog.ts';
import { substitute } from '../placeholders.ts';
import type { Queryable } from '../db/client.ts';
import { desktopEvents, desktops, type DesktopCredentials } from '../db/schema.ts';
import { badRequest, conflict } from '../errors.ts';
import { hasHiddenCharacters } from '../names.ts';
import { makePathSafe, pathCandidates } from '../proxy-path.ts';
import { generatePassword } from '../secrets.ts';
import { lockHomes, takeHome } from './homes.ts';
import type { DesktopJournal } from './journal.ts';
import type { LifecycleOptions } from './options.ts';
import type { DesktopRow, Owner } from './views.ts';

/** Advisory lock key held while counting quotas and inserting a desktop ("deskhub" in ASCII). */
const CREATE_LOCK = 0x6465736b687562;

/** A create request that passed the checks made before anything is written. */
export interface Admissible {
  type: CatalogEntry;
  label: string | null;
  /** The proxy path before collision numbering: `<username>-<type or name>`. */
  base: string;
  /** The desktop's name as a path part (its label made path-safe, or the type's id): a scope-desktop home's key. */
  desktopName: string;
  credentials: DesktopCredentials;
}

export class Admission {
  constructor(
    private readonly options: LifecycleOptions,
    private readonly journal: DesktopJournal,
  ) {}

  private get catalog(): Catalog {
    return this.options.catalog;
  }

  /** 400 for an unknown type or a name that cannot become a path, 409 for a type that cannot run here. */
  async check(owner: Owner, input: { type: string; name?: string | undefined }): Promise<Admissible> {
    const type = this.catalog.get(input.type);
    if (!type) throw badRequest(`unknown desktop type "${input.type}" (known: ${this.catalog.entries.map((e) => e.id).join(', ')})`);
    const availability = await this.options.runtimes.availability(type);
    if (!availability.ok) throw conflict(`desktop type "${type.id}" cannot run here: ${availability.reason}`);
    const label = input.name?.trim() || null;
    let part = type.id;
    if (label !== null) {
      if (hasHiddenCharacters(label)) throw badRequest('name must not contain control, bidirectional or zero-width characters');
      const safe = makePathSafe(label);
      if (!safe) throw badRequest(`name "${label}" cannot be made into a path: use letters, digits and "-"`);
      part = safe;
    }
    return { type, label, base: `${owner.username}-${part}`, desktopName: part, credentials: makeCredentials(type) };
  }

  /** Inserts the desktop (state `creating`) under the first free path; 409 over a quota. */
  async insert(id: string, owner: Owner, desktop: Admissible): Promise<DesktopRow> {
    const { db, secrets } = this.options;
    const { type, label, base } = desktop;
    return db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${CREATE_LOCK})`);
      this.checkQuota(type, owner, await count(tx, owner.id, type.id));
      let homeId: string | null = null;
      if (type.home) {
        await lockHomes(tx);
        homeId = await takeHome(tx, this.options, owner, type, desktop.desktopName);
      }
      const taken = await takenPaths(tx, base);
      for (const candidate of pathCandidates(base)) {
        if (taken.has(candidate)) continue;
        const [inserted] = await tx
          .insert(desktops)
          .values({
            id,
            ownerId: owner.id,
            type: type.id,
            label,
            proxyPath: candidate,
            state: 'creating',
            runtime: type.runtime,
            credentials: secrets.seal(desktop.credentials),
            entryQuery: substitute(type.entryQuery, { path: candidate, prefix: `/desktop/${candidate}` }),
            homeId,
          })
          .onConflictDoNothing({ target: desktops.proxyPath })
          .returning();
        if (inserted) {
          await this.journal.record(tx, id, 'state', `Creating ${type.name} at /desktop/${candidate}/`, undefined, 'creating');
          return inserted;
        }
      }
      throw conflict(`no free path left for "${base}"`);
    });
  }

  /**
   * Gives the create a ready warm pool member of its type, if there is one: owner, name, proxy
   * path and `starting` in one transaction (under the create lock, after the quotas), the
   * member leaving the pool for good. Null when none is ready: the create starts one cold.
   */
  async claim(owner: Owner, desktop: Admissible): Promise<DesktopRow | null> {
    const { db } = this.options;
    const { type, label, base } = desktop;
    return db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${CREATE_LOCK})`);
      // Pool members already count in the total: a claim moves one to its owner, adding none.
      const counts = await count(tx, owner.id, type.id);
      this.checkQuota(type, owner, { ...counts, total: counts.total - 1, type: counts.type - 1 });
      const [member] = await tx
        .select({ id: desktops.id })
        .from(desktops)
        .where(and(eq(desktops.pool, true), eq(desktops.type, type.id), eq(desktops.state, 'running'), eq(desktops.poolSettings, type.settingsHash)))
        .orderBy(asc(desktops.readyAt))
        .limit(1)
        .for('update', { skipLocked: true });
      if (!member) return null;
      // Its history so far is the pool's (made, probed, "Ready" with no route): the owner's starts at the claim.
      await tx.delete(desktopEvents).where(eq(desktopEvents.desktopId, member.id));
      const taken = await takenPaths(tx, base);
      for (const candidate of pathCandidates(base)) {
        if (taken.has(candidate)) continue;
        const [claimed] = await tx
          .update(desktops)
          .set({
            ownerId: owner.id,
            label,
            proxyPath: candidate,
            pool: false,
            state: 'starting',
            entryQuery: substitute(type.entryQuery, { path: candidate, prefix: `/desktop/${candidate}` }),
            createdAt: new Date(),
            updatedAt: new Date(),
          })
          .where(eq(desktops.id, member.id))
          .returning();
        await this.journal.record(tx, member.id, 'state', `Claimed a ready ${type.name} from the warm pool for /desktop/${candidate}/`, undefined, 'starting');
        return claimed ?? null;
      }
      throw conflict(`no free path left for "${base}"`);
    });
  }

  /** Inserts a warm pool member of `type` (no owner, no route, state `creating`); 409 over the total quota. */
  async insertPoolMember(id: string, type: CatalogEntry): Promise<DesktopRow> {
    const { db, secrets } = this.options;
    return db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${CREATE_LOCK})`);
      const counts = await count(tx, '00000000-0000-0000-0000-000000000000', type.id);
      const { total } = this.options.quotas;
      if (total > 0 && counts.total >= total) throw conflict(`the warm pool of "${type.id}" cannot grow: deskhub runs at most ${total} desktops in total (MAX_DESKTOPS_TOTAL)`);
      if (type.quota?.total !== undefined && counts.type >= type.quota.total) throw conflict(`the warm pool of "${type.id}" cannot grow: at most ${type.quota.total} "${type.id}" desktops in total (catalog quota)`);
      const [inserted] = await tx
        .insert(desktops)
        .values({
          id,
          ownerId: null,
          type: type.id,
          // Never a user's path (those start with a username and are checked on claim); never routed.
          proxyPath: `pool-${id}`,
          state: 'creating',
          runtime: type.runtime,
          credentials: secrets.seal(makeCredentials(type)),
          pool: true,
          poolSettings: type.settingsHash,
        })
        .returning();
      await this.journal.record(tx, id, 'state', `Starting a ${type.name} for the warm pool`, undefined, 'creating');
      return inserted!;
    });
  }

  private checkQuota(type: CatalogEntry, owner: Owner, counts: { user: number; userType: number; type: number; total: number }): void {
    const { perUser, total } = this.options.quotas;
    if (perUser > 0 && counts.user >= perUser) {
      throw conflict(`quota reached: at most ${perUser} desktops per user (MAX_DESKTOPS_PER_USER); ${owner.username} has ${counts.user}. Delete one first.`);
    }
    if (type.quota?.perUser !== undefined && counts.userType >= type.quota.perUser) {
      throw conflict(`quota reached: at most ${type.quota.perUser} "${type.id}" desktops per user (catalog quota); ${owner.username} has ${counts.userType}`);
    }
    if (type.quota?.total !== undefined && counts.type >= type.quota.total) {
      throw conflict(`quota reached: at most ${type.quota.total} "${type.id}" desktops in total (catalog quota)`);
    }
    if (total > 0 && counts.total >= total) {
      throw conflict(`quota reached: deskhub runs at most ${total} desktops in total (MAX_DESKTOPS_TOTAL)`);
    }
  }
}

async function takenPaths(q: Queryable, base: string): Promise<Set<string>> {
  const rows = await q
    .select({ path: desktops.proxyPath })
    .from(desktops)
    .where(or(eq(desktops.proxyPath, base), like(desktops.proxyPath, `${base}-%`)));
  return new Set(rows.map((r) => r.path));
}

async function count(q: Queryable, ownerId: string, typeId: string) {
  const [counts] = await q
    .select({
      user: sql<number>`count(*) filter (where ${desktops.ownerId} = ${ownerId})`.mapWith(Number),
      userType: sql<number>`count(*) filter (where ${desktops.ownerId} = ${ownerId} and ${desktops.type} = ${typeId})`.mapWith(Number),
      type: sql<number>`count(*) filter (where ${desktops.type} = ${typeId})`.mapWith(Number),
      total: sql<number>`count(*)`.mapWith(Number),
    })
    .from(desktops);
  return counts ?? { user: 0, userType: 0, type: 0, total: 0 };
}

function makeCredentials(type: CatalogEntry): DesktopCredentials {
  const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  const c = type.credentials;
  if (c.kind === 'none') return { env: {}, authorization: null };
  const password = generatePassword();
  // The read-only user (catalog sharing.viewer) has the same password, as in Kasm's images.
  const viewer = type.sharing.viewer;
  const viewerAuthorization = viewer === null ? null : basic(viewer, password);
  if (c.kind === 'kasm') return { env: { VNC_PW: password }, authorization: basic('kasm_user', password), viewerAuthorization };
  return { env: { [c.passwordEnv]: password }, authorization: basic(c.username, password), viewerAuthorization };
}
