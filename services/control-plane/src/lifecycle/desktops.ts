/**
 * Desktop lifecycle: create, start, stop and delete, and the repairs reconciliation asks for.
 *
 * Create allocates a collision-safe proxy path and checks quotas in one transaction, answers at
 * once (state `creating`), then in the background: the runtime creates the desktop, the readiness
 * probe waits for it, its route is published and every live proxy replica confirms it, and only
 * then is it `running`. Stop and delete withdraw the route first, then touch the runtime. Every
 * step lands in desktop_events; any failure leaves `failed` with a reason a person can read.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { and, asc, eq, gt, inArray, or, like, sql } from 'drizzle-orm';
import type { Logger } from '@deskhub/config';
import type { Route, RoutePublisher, Upstream } from '@deskhub/route-stream';
import type { Catalog, CatalogEntry } from '../catalog.ts';
import { substitute } from '../catalog.ts';
import type { Database, Queryable, Transaction } from '../db/client.ts';
import { desktopEvents, desktops, users, type DesktopCredentials, type DesktopState, type StoredRoute } from '../db/schema.ts';
import { badRequest, conflict, notFound } from '../errors.ts';
import type { Metrics } from '../metrics.ts';
import { makePathSafe, pathCandidates } from '../proxy-path.ts';
import type { RuntimeRegistry } from '../runtime/index.ts';
import type { DesktopRuntime, RuntimeStatus } from '../runtime/types.ts';
import { generatePassword, type Secrets } from '../secrets.ts';
import { DesktopQueue } from './desktop-queue.ts';
import { probe, sleep } from './readiness.ts';
import { recordRouteChange, type RoutePublication } from './route-publication.ts';

export interface DesktopView {
  id: string;
  type: string;
  name: string | null;
  owner: string;
  proxyPath: string;
  url: string;
  state: DesktopState;
  reason: string | null;
  runtime: string;
  createdAt: string;
  updatedAt: string;
  readyAt: string | null;
  lastActivityAt: string | null;
}

export interface DesktopEventView {
  id: number;
  at: string;
  kind: string;
  message: string;
  progress: number | null;
  /** Set on state changes: the state entered (the UI's final event carries it). */
  state: DesktopState | null;
}

const STATE_TEXT: Record<DesktopState, string> = {
  creating: 'Creating the desktop',
  starting: 'Starting the desktop',
  running: 'Ready',
  stopping: 'Stopping',
  stopped: 'Stopped',
  failed: 'Failed',
};

export interface Owner {
  id: string;
  username: string;
}

/** Whose desktops an operation may touch: the caller's own, or (the admin API) anyone's. */
export type Scope = Owner | { admin: true };

type DesktopWithOwner = { row: DesktopRow; ownerName: string };

export interface LifecycleOptions {
  db: Database;
  catalog: Catalog;
  runtimes: RuntimeRegistry;
  publication: RoutePublication;
  publisher: RoutePublisher;
  secrets: Secrets;
  logger: Logger;
  metrics?: Metrics;
  publicUrl: string;
  quotas: { perUser: number; total: number };
  /** How long to wait for every live proxy replica to hold a route change. */
  replicaWaitMs: number;
  /** How long to wait for the route store to take a change. */
  publishTimeoutMs?: number;
}

type DesktopRow = typeof desktops.$inferSelect;

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

/** Advisory lock key held while counting quotas and inserting a desktop ("deskhub" in ASCII). */
const CREATE_LOCK = 0x6465736b687562;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const LOG_LINES = 15;

class Aborted extends Error {}

function sameUpstream(a: Upstream | null | undefined, b: Upstream | null | undefined): boolean {
  return !!a && !!b && a.host === b.host && a.port === b.port && a.scheme === b.scheme && a.verifyTls === b.verifyTls;
}

/** What to do about one desktop, given its row and what its runtime reports (null: no instance). */
export function decideRepair(row: Pick<DesktopRow, 'state' | 'runtimeId' | 'route' | 'upstream'>, status: RuntimeStatus | null): Repair | null {
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
      if (!row.route || (status.upstream && !sameUpstream(status.upstream, row.upstream))) return { kind: 'resume' };
      return null;
    case 'stopped':
    case 'failed':
      if (row.route) return { kind: 'withdraw-stale-route' };
      if (status?.running) return { kind: 'stop-instance' };
      if (row.runtimeId && !status) return { kind: 'forget-instance' };
      return null;
  }
}

export class DesktopLifecycle extends EventEmitter<{ event: [desktopId: string, event: DesktopEventView]; change: [desktopId: string] }> {
  readonly queue = new DesktopQueue();
  private readonly logger: Logger;
  private closed = false;

  constructor(private readonly options: LifecycleOptions) {
    super();
    // One listener per open event stream (the UI follows each launching desktop).
    this.setMaxListeners(0);
    this.logger = options.logger.child({ component: 'lifecycle' });
  }

  // ---------------------------------------------------------------- reading

  private view(row: DesktopRow, ownerName: string): DesktopView {
    const base = `${this.options.publicUrl}/desktop/${row.proxyPath}/`;
    return {
      id: row.id,
      type: row.type,
      name: row.label,
      owner: ownerName,
      proxyPath: row.proxyPath,
      url: row.entryQuery ? `${base}?${row.entryQuery}` : base,
      state: row.state,
      reason: row.reason,
      runtime: row.runtime,
      createdAt: row.createdAt.toISOString(),
      updatedAt: row.updatedAt.toISOString(),
      readyAt: row.readyAt?.toISOString() ?? null,
      lastActivityAt: row.lastActivityAt?.toISOString() ?? null,
    };
  }

  async list(owner: Owner): Promise<DesktopView[]> {
    const rows = await this.options.db.select().from(desktops).where(eq(desktops.ownerId, owner.id)).orderBy(asc(desktops.createdAt), asc(desktops.proxyPath));
    return rows.map((row) => this.view(row, owner.username));
  }

  /** Every desktop of every user (the admin API). */
  async listAll(): Promise<DesktopView[]> {
    const rows = await this.options.db
      .select({ row: desktops, ownerName: users.username })
      .from(desktops)
      .innerJoin(users, eq(users.id, desktops.ownerId))
      .orderBy(asc(desktops.createdAt), asc(desktops.proxyPath));
    return rows.map(({ row, ownerName }) => this.view(row, ownerName));
  }

  /** A desktop in scope; 404 for unknown and foreign ids alike, so ids reveal nothing. */
  private async owned(scope: Scope, id: string): Promise<DesktopWithOwner> {
    if (UUID.test(id)) {
      const [found] = await this.options.db
        .select({ row: desktops, ownerName: users.username })
        .from(desktops)
        .innerJoin(users, eq(users.id, desktops.ownerId))
        .where('admin' in scope ? eq(desktops.id, id) : and(eq(desktops.id, id), eq(desktops.ownerId, scope.id)));
      if (found) return found;
    }
    throw notFound(`no desktop ${id}`);
  }

  async get(scope: Scope, id: string): Promise<DesktopView> {
    const { row, ownerName } = await this.owned(scope, id);
    return this.view(row, ownerName);
  }

  async events(scope: Scope, id: string, after = 0): Promise<DesktopEventView[]> {
    await this.owned(scope, id);
    const rows = await this.options.db
      .select()
      .from(desktopEvents)
      .where(and(eq(desktopEvents.desktopId, id), gt(desktopEvents.id, after)))
      .orderBy(asc(desktopEvents.id))
      .limit(1000);
    return rows.map((e) => this.eventView(e));
  }

  private async load(id: string): Promise<DesktopRow | undefined> {
    const [row] = await this.options.db.select().from(desktops).where(eq(desktops.id, id));
    return row;
  }

  // ---------------------------------------------------------------- recording

  private eventView(e: typeof desktopEvents.$inferSelect): DesktopEventView {
    return { id: e.id, at: e.at.toISOString(), kind: e.kind, message: e.message, progress: e.progress, state: e.state };
  }

  private async record(q: Queryable, desktopId: string, kind: string, message: string, progress?: number, state?: DesktopState): Promise<void> {
    const [row] = await q
      .insert(desktopEvents)
      .values({ desktopId, kind, message, progress: progress ?? null, state: state ?? null })
      .returning();
    if (row) this.emit('event', desktopId, this.eventView(row));
  }

  /** Records an event, tolerating a desktop deleted meanwhile. */
  private async note(desktopId: string, kind: string, message: string, progress?: number): Promise<void> {
    try {
      await this.record(this.options.db, desktopId, kind, message, progress);
    } catch (err) {
      this.logger.debug({ desktopId, err: (err as Error).message }, 'event not recorded');
    }
  }

  private async setState(id: string, state: DesktopState, reason: string | null, extra: Partial<typeof desktops.$inferInsert> = {}): Promise<void> {
    await this.options.db.transaction(async (tx) => {
      await tx.update(desktops).set({ state, reason, updatedAt: new Date(), ...extra }).where(eq(desktops.id, id));
      await this.record(tx, id, 'state', reason ?? STATE_TEXT[state], undefined, state);
    });
    this.emit('change', id);
  }

  // ---------------------------------------------------------------- create

  async create(owner: Owner, input: { type: string; name?: string | undefined }): Promise<DesktopView> {
    const { catalog, db, secrets } = this.options;
    const type = catalog.get(input.type);
    if (!type) throw badRequest(`unknown desktop type "${input.type}" (known: ${catalog.entries.map((e) => e.id).join(', ')})`);
    const availability = await this.options.runtimes.availability(type);
    if (!availability.ok) throw conflict(`desktop type "${type.id}" cannot run here: ${availability.reason}`);
    const label = input.name?.trim() || null;
    let part = type.id;
    if (label !== null) {
      if (/[\u0000-\u001f\u007f]/.test(label)) throw badRequest('name must not contain control characters');
      const safe = makePathSafe(label);
      if (!safe) throw badRequest(`name "${label}" cannot be made into a path: use letters, digits and "-"`);
      part = safe;
    }
    const base = `${owner.username}-${part}`;
    const credentials = this.makeCredentials(type);
    const id = randomUUID();

    // The bring-up is queued before the row exists, so reconciliation never finds this desktop
    // in `creating` with nobody working on it.
    let admit!: (admitted: boolean) => void;
    const admitted = new Promise<boolean>((resolve) => (admit = resolve));
    const startedAt = Date.now();
    this.queue
      .run(id, async (signal) => {
        if (await admitted) await this.bringUp(id, 'create', signal, startedAt);
      })
      .catch((err: unknown) => this.logger.error({ err, desktopId: id }, 'desktop create failed unexpectedly'));

    let row: DesktopRow;
    try {
      row = await db.transaction(async (tx) => {
        await tx.execute(sql`select pg_advisory_xact_lock(${CREATE_LOCK})`);
        this.checkQuota(type, owner, await this.count(tx, owner.id, type.id));
        const taken = new Set(
          (
            await tx
              .select({ path: desktops.proxyPath })
              .from(desktops)
              .where(or(eq(desktops.proxyPath, base), like(desktops.proxyPath, `${base}-%`)))
          ).map((r) => r.path),
        );
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
              credentials: secrets.seal(credentials),
              entryQuery: substitute(type.entryQuery, { path: candidate, prefix: `/desktop/${candidate}` }),
            })
            .onConflictDoNothing({ target: desktops.proxyPath })
            .returning();
          if (inserted) {
            await this.record(tx, id, 'state', `Creating ${type.name} at /desktop/${candidate}/`, undefined, 'creating');
            return inserted;
          }
        }
        throw conflict(`no free path left for "${base}"`);
      });
    } catch (err) {
      admit(false);
      throw err;
    }
    admit(true);
    this.logger.info({ desktopId: id, type: type.id, proxyPath: row.proxyPath, owner: owner.username }, 'desktop created');
    return this.view(row, owner.username);
  }

  private async count(q: Queryable, ownerId: string, typeId: string) {
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

  private makeCredentials(type: CatalogEntry): DesktopCredentials {
    const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    const c = type.credentials;
    if (c.kind === 'kasm') {
      const password = generatePassword();
      return { env: { VNC_PW: password }, authorization: basic('kasm_user', password) };
    }
    if (c.kind === 'basic') {
      const password = generatePassword();
      return { env: { [c.passwordEnv]: password }, authorization: basic(c.username, password) };
    }
    return { env: {}, authorization: null };
  }

  // ---------------------------------------------------------------- bring-up

  /**
   * Creates (or starts, or only re-checks) the desktop, waits until it answers, publishes its
   * route and waits for every proxy replica, then marks it running. Runs inside the queue.
   */
  private async bringUp(id: string, mode: 'create' | 'start' | 'resume', signal: AbortSignal, startedAt = Date.now()): Promise<void> {
    const row = await this.load(id);
    if (!row) return;
    const type = this.options.catalog.get(row.type);
    const runtime = this.options.runtimes.get(row.runtime);
    let runtimeId = row.runtimeId;
    try {
      if (!type) throw new Error(`desktop type "${row.type}" is no longer in the catalog`);
      if (!runtime) throw new Error(`the ${row.runtime} runtime is not enabled here`);
      const credentials = this.options.secrets.open<DesktopCredentials>(row.credentials!);
      let upstream = row.upstream;
      if (mode === 'create' || (mode === 'start' && !runtimeId)) {
        if (row.state !== 'creating') await this.setState(id, 'creating', null);
        await this.note(id, 'create', `creating on the ${runtime.name} runtime`);
        const env: Record<string, string> = {};
        const values = { path: row.proxyPath, prefix: `/desktop/${row.proxyPath}` };
        for (const [name, value] of Object.entries(type.env)) env[name] = substitute(value, values);
        Object.assign(env, credentials.env);
        const [ownerRow] = await this.options.db.select({ username: users.username }).from(users).where(eq(users.id, row.ownerId));
        const instance = await runtime.create(
          { desktopId: id, ownerId: row.ownerId, ownerName: ownerRow?.username ?? '', proxyPath: row.proxyPath, type, env },
          (event) => void this.note(id, event.kind, event.message, event.progress),
        );
        runtimeId = instance.runtimeId;
        upstream = instance.upstream;
        // Saved before anything else can go wrong, so whoever comes next can remove it.
        await this.options.db.update(desktops).set({ runtimeId, upstream, updatedAt: new Date() }).where(eq(desktops.id, id));
        if (signal.aborted) throw new Aborted();
        await this.setState(id, 'starting', null);
      } else if (mode === 'start') {
        if (row.state !== 'starting') await this.setState(id, 'starting', null);
        const instance = await runtime.start(runtimeId!);
        upstream = instance.upstream;
        await this.options.db.update(desktops).set({ upstream, updatedAt: new Date() }).where(eq(desktops.id, id));
        await this.note(id, 'start', 'started');
      } else {
        const status = await runtime.inspect(runtimeId!);
        if (status?.upstream) upstream = status.upstream;
        if (!sameUpstream(upstream, row.upstream)) await this.options.db.update(desktops).set({ upstream, updatedAt: new Date() }).where(eq(desktops.id, id));
        await this.note(id, 'info', 'checking the desktop again after a restart or a change of address');
      }
      if (!upstream || !runtimeId) throw new Error('the runtime did not say where the desktop listens');

      await this.waitUntilReady(id, type, runtime, runtimeId, upstream, credentials.authorization, row.proxyPath, signal);

      const route: Route = {
        path: row.proxyPath,
        desktopId: id,
        owner: row.ownerId,
        sharedWith: [],
        upstream,
        stripPrefix: type.stripPrefix,
        authorization: credentials.authorization,
        entryQuery: row.entryQuery,
        state: 'running',
      };
      await this.publishRoute(id, route, signal);
      if (signal.aborted) throw new Aborted();
      await this.setState(id, 'running', null, { readyAt: new Date() });
      this.options.metrics?.lifecycleSeconds.observe({ type: type.id, runtime: runtime.name }, (Date.now() - startedAt) / 1000);
      this.logger.info({ desktopId: id, proxyPath: row.proxyPath, ms: Date.now() - startedAt }, 'desktop running');
    } catch (err) {
      if (err instanceof Aborted || signal.aborted) {
        await this.note(id, 'info', 'interrupted by a later request');
        return; // whoever aborted us takes over
      }
      const reason = (err as Error).message;
      this.logger.warn({ desktopId: id, reason }, 'desktop failed');
      await this.failDesktop(id, reason, mode === 'create' ? 'remove' : 'stop', type?.id ?? row.type);
    }
  }

  private async waitUntilReady(
    id: string,
    type: CatalogEntry,
    runtime: DesktopRuntime,
    runtimeId: string,
    upstream: Upstream,
    authorization: string | null,
    proxyPath: string,
    signal: AbortSignal,
  ): Promise<void> {
    const path = substitute(type.readiness.path, { path: proxyPath, prefix: `/desktop/${proxyPath}` });
    const timeoutMs = type.readiness.timeoutSeconds * 1000;
    const deadline = Date.now() + timeoutMs;
    await this.note(id, 'probe', `waiting for the desktop to answer ${path} (up to ${type.readiness.timeoutSeconds} s)`);
    let delay = 200;
    let last = 'no answer yet';
    for (;;) {
      if (signal.aborted) throw new Aborted();
      const result = await probe(upstream, path, authorization, Math.min(5000, Math.max(1000, deadline - Date.now())));
      if (result.ok) {
        await this.note(id, 'probe', `the desktop answered ${result.status}`);
        return;
      }
      last = result.problem;
      const status = await runtime.inspect(runtimeId);
      if (!status || !status.running) {
        throw new Error(`the desktop stopped before it was ready (${status?.reason ?? 'it no longer exists'})${await this.lastLines(runtime, runtimeId)}`);
      }
      if (Date.now() >= deadline) {
        throw new Error(`the desktop did not answer ${path} within ${type.readiness.timeoutSeconds} s (last: ${last})${await this.lastLines(runtime, runtimeId)}`);
      }
      try {
        await sleep(Math.min(delay, Math.max(0, deadline - Date.now())), signal);
      } catch {
        throw new Aborted();
      }
      delay = Math.min(delay * 1.5, 2000);
    }
  }

  private async lastLines(runtime: DesktopRuntime, runtimeId: string): Promise<string> {
    const text = await runtime.logs(runtimeId, LOG_LINES).catch(() => '');
    return text.trim() ? `; last output:\n${text.trim()}` : '';
  }

  // ---------------------------------------------------------------- routes

  private async publishRoute(id: string, route: Route, signal: AbortSignal): Promise<void> {
    const { db, secrets, publication } = this.options;
    const { authorization: _secret, ...stored } = route;
    const version = await db.transaction(async (tx) => {
      const v = await recordRouteChange(tx, secrets, { op: 'put', route });
      await tx.update(desktops).set({ route: stored satisfies StoredRoute, updatedAt: new Date() }).where(eq(desktops.id, id));
      await this.record(tx, id, 'route', `route published (version ${v})`);
      return v;
    });
    publication.wake();
    await this.confirm(id, version, 'route');
    if (signal.aborted) throw new Aborted();
  }

  /** Waits until the store holds `version` and every live replica has applied it. */
  private async confirm(id: string, version: number, what: string): Promise<void> {
    const published = await this.options.publication.waitPublished(version, this.options.publishTimeoutMs ?? 15_000);
    if (!published) {
      throw new Error(`the route store did not take the ${what} change within ${(this.options.publishTimeoutMs ?? 15_000) / 1000} s (is Redis reachable?)`);
    }
    const replicas = await this.options.publisher.waitForReplicas(version, this.options.replicaWaitMs);
    if (!replicas.ok) {
      await this.note(id, 'route', `proxy replicas not confirming version ${version} within ${this.options.replicaWaitMs} ms: ${replicas.lagging.map((r) => r.id).join(', ')}`);
    } else {
      await this.note(id, 'route', `every proxy replica holds route version ${version}`);
    }
  }

  /** Removes the desktop's route (if it has one) and waits for the proxies; publication failures are logged, not thrown. */
  private async withdrawRoute(id: string, andThen?: (tx: Transaction) => Promise<void>): Promise<void> {
    const { db, secrets, publication } = this.options;
    const version = await db.transaction(async (tx) => {
      const [row] = await tx.select({ route: desktops.route, path: desktops.proxyPath }).from(desktops).where(eq(desktops.id, id)).for('update');
      let v: number | null = null;
      if (row?.route) {
        v = await recordRouteChange(tx, secrets, { op: 'delete', path: row.path });
        await tx.update(desktops).set({ route: null, updatedAt: new Date() }).where(eq(desktops.id, id));
        await this.record(tx, id, 'route', `route withdrawn (version ${v})`);
      }
      if (andThen) await andThen(tx);
      return v;
    });
    if (version === null) return;
    publication.wake();
    try {
      await this.confirm(id, version, 'route withdrawal');
    } catch (err) {
      // The outbox keeps the change: it is published as soon as the store is back.
      this.logger.warn({ desktopId: id, err: (err as Error).message }, 'route withdrawal not yet published');
    }
  }

  private async failDesktop(id: string, reason: string, instance: 'remove' | 'stop' | 'keep', typeId: string): Promise<void> {
    try {
      await this.withdrawRoute(id);
      const row = await this.load(id);
      if (!row) return;
      const runtime = this.options.runtimes.get(row.runtime);
      if (runtime && row.runtimeId && instance !== 'keep') {
        if (instance === 'remove') {
          await runtime.remove(row.runtimeId).catch((err: Error) => this.logger.warn({ desktopId: id, err: err.message }, 'could not remove a failed desktop; reconciliation will'));
        } else {
          await runtime.stop(row.runtimeId).catch((err: Error) => this.logger.warn({ desktopId: id, err: err.message }, 'could not stop a failed desktop'));
        }
      }
      await this.setState(id, 'failed', reason, instance === 'remove' ? { runtimeId: null, upstream: null } : {});
      this.options.metrics?.failures.inc({ type: typeId });
    } catch (err) {
      this.logger.error({ desktopId: id, err }, 'could not record a desktop failure');
    }
  }

  // ---------------------------------------------------------------- stop, start, delete

  /** Withdraws the route (before answering), then stops the desktop in the background. */
  async stop(scope: Scope, id: string): Promise<DesktopView> {
    const { row, ownerName } = await this.owned(scope, id);
    if (row.state === 'stopped' || row.state === 'failed') return this.view(row, ownerName);
    const withdrawn = this.queue.run(
      id,
      async () => {
        const current = await this.load(id);
        if (!current || current.state === 'stopped' || current.state === 'failed') return;
        await this.setState(id, 'stopping', null);
        await this.withdrawRoute(id);
      },
      { preempt: true },
    );
    this.queue.run(id, () => this.finishStop(id)).catch((err: unknown) => this.logger.error({ err, desktopId: id }, 'stop failed'));
    await withdrawn;
    return this.get(scope, id);
  }

  private async finishStop(id: string): Promise<void> {
    const row = await this.load(id);
    if (!row || row.state !== 'stopping') return;
    await this.withdrawRoute(id);
    const runtime = this.options.runtimes.get(row.runtime);
    try {
      if (runtime && row.runtimeId) await runtime.stop(row.runtimeId);
      await this.setState(id, 'stopped', null);
    } catch (err) {
      await this.setState(id, 'failed', `could not stop: ${(err as Error).message}`);
    }
  }

  async start(scope: Scope, id: string): Promise<DesktopView> {
    const { row, ownerName } = await this.owned(scope, id);
    if (row.state !== 'stopped' && row.state !== 'failed' && row.state !== 'stopping') return this.view(row, ownerName);
    const type = this.options.catalog.get(row.type);
    if (type) {
      const availability = await this.options.runtimes.availability(type);
      if (!availability.ok) throw conflict(`desktop type "${type.id}" cannot run here: ${availability.reason}`);
    }
    const startedAt = Date.now();
    let marked!: () => void;
    const markedStarting = new Promise<void>((resolve) => (marked = resolve));
    this.queue
      .run(id, async (signal) => {
        const current = await this.load(id);
        if (!current || (current.state !== 'stopped' && current.state !== 'failed')) return marked();
        await this.setState(id, 'starting', null);
        marked();
        await this.bringUp(id, 'start', signal, startedAt);
      })
      .catch((err: unknown) => this.logger.error({ err, desktopId: id }, 'desktop start failed unexpectedly'))
      .finally(() => marked());
    await markedStarting;
    return this.get(scope, id);
  }

  /** Withdraws the route, forgets the desktop, then removes it from its runtime. */
  async delete(scope: Scope, id: string): Promise<void> {
    await this.owned(scope, id);
    await this.queue.run(
      id,
      async () => {
        const row = await this.load(id);
        if (!row) return;
        await this.withdrawRoute(id, async (tx) => {
          await tx.delete(desktops).where(eq(desktops.id, id));
        });
        this.emit('change', id);
        const runtime = this.options.runtimes.get(row.runtime);
        if (runtime && row.runtimeId) {
          // If this fails, the instance is an orphan now and reconciliation removes it.
          await runtime.remove(row.runtimeId).catch((err: Error) => this.logger.warn({ desktopId: id, err: err.message }, 'could not remove a deleted desktop yet'));
        }
        this.logger.info({ desktopId: id, proxyPath: row.proxyPath }, 'desktop deleted');
      },
      { preempt: true },
    );
  }

  // ---------------------------------------------------------------- repairs (reconciliation)

  /**
   * Re-reads the desktop and its runtime instance inside the desktop's queue, and repairs what
   * is still wrong. Returns the repair made, if any.
   */
  async repair(id: string, orphan?: { runtime: DesktopRuntime['name']; runtimeId: string }): Promise<Repair | null> {
    if (this.closed) return null;
    return this.queue.run(id, async (signal) => {
      const row = await this.load(id);
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
      await this.note(id, 'info', `reconciliation: ${repair.kind}`);
      switch (repair.kind) {
        case 'fail-interrupted-create': {
          await this.withdrawRoute(id);
          // Leftovers are this row's instance, or one whose id never reached the row.
          const leftovers = new Set<string>(row.runtimeId ? [row.runtimeId] : []);
          for (const s of await runtime.list().catch(() => [] as RuntimeStatus[])) if (s.desktopId === id) leftovers.add(s.runtimeId);
          for (const runtimeId of leftovers) await runtime.remove(runtimeId);
          await this.setState(id, 'failed', 'deskhub stopped while this desktop was being created; delete it and create it again', { runtimeId: null, upstream: null });
          this.options.metrics?.failures.inc({ type: row.type });
          break;
        }
        case 'resume':
          await this.bringUp(id, 'resume', signal);
          break;
        case 'fail-interrupted-start':
          await this.failDesktop(id, `deskhub stopped while this desktop was starting${status?.reason ? ` (${status.reason})` : ''}`, 'stop', row.type);
          break;
        case 'finish-stop':
          await this.finishStop(id);
          break;
        case 'vanished':
          await this.withdrawRoute(id);
          await this.setState(id, 'failed', `the desktop no longer exists in the ${runtime.name} runtime (removed outside deskhub)`, { runtimeId: null, upstream: null });
          this.options.metrics?.failures.inc({ type: row.type });
          break;
        case 'exited': {
          await this.withdrawRoute(id);
          if (!repair.reason || repair.reason === 'stopped') {
            await this.setState(id, 'stopped', 'stopped outside deskhub');
          } else {
            await this.setState(id, 'failed', `${repair.reason}${await this.lastLines(runtime, row.runtimeId!)}`);
            this.options.metrics?.failures.inc({ type: row.type });
          }
          break;
        }
        case 'withdraw-stale-route':
          await this.withdrawRoute(id);
          break;
        case 'stop-instance':
          await runtime.stop(row.runtimeId!);
          break;
        case 'forget-instance':
          await this.options.db.update(desktops).set({ runtimeId: null, upstream: null, updatedAt: new Date() }).where(eq(desktops.id, id));
          await this.note(id, 'info', 'its instance is gone; the next start creates a new one');
          break;
      }
      return repair;
    });
  }

  /** Ids of desktops with no operation under way in this process. */
  idle(ids: string[]): string[] {
    return ids.filter((id) => !this.queue.busy(id));
  }

  /** Updates last activity from what the proxies saw (paths to epoch ms). */
  async recordActivity(activity: Map<string, number>): Promise<number> {
    let updated = 0;
    const paths = [...activity.keys()];
    for (let i = 0; i < paths.length; i += 500) {
      const chunk = paths.slice(i, i + 500);
      const rows = await this.options.db.select({ id: desktops.id, path: desktops.proxyPath, last: desktops.lastActivityAt }).from(desktops).where(inArray(desktops.proxyPath, chunk));
      for (const row of rows) {
        const at = activity.get(row.path)!;
        if (row.last && row.last.getTime() >= at) continue;
        await this.options.db.update(desktops).set({ lastActivityAt: new Date(at) }).where(eq(desktops.id, row.id));
        updated++;
      }
    }
    return updated;
  }

  /**
   * Shutdown of the embedded start, whose desktop processes stop with it: withdraws their routes
   * and records them as stopped, so the next start shows the truth and `start` brings them back.
   */
  async stopForShutdown(runtime: DesktopRuntime['name'], reason: string): Promise<void> {
    const rows = await this.options.db
      .select({ id: desktops.id })
      .from(desktops)
      .where(and(eq(desktops.runtime, runtime), inArray(desktops.state, ['creating', 'starting', 'running', 'stopping'])));
    await Promise.all(
      rows.map(({ id }) =>
        this.queue
          .run(
            id,
            async () => {
              await this.withdrawRoute(id);
              await this.setState(id, 'stopped', reason);
            },
            { preempt: true },
          )
          .catch((err: unknown) => this.logger.warn({ err, desktopId: id }, 'could not record a desktop as stopped at shutdown')),
      ),
    );
  }

  /** Waits for operations under way to stop (bring-ups are aborted; stops and deletes finish). */
  async close(): Promise<void> {
    this.closed = true;
    await this.queue.drain();
    this.removeAllListeners();
  }
}
