/**
 * Bringing a desktop up (created, started again, or only re-checked after a restart): the
 * runtime creates or starts it, the readiness step waits until it answers, its route is published
 * and confirmed by every proxy replica, and only then is it `running`. Any failure leaves it
 * `failed` with a reason a person can read, and its instance removed or stopped.
 */
import { eq } from 'drizzle-orm';
import type { Logger } from '@deskhub/config';
import type { Route, Upstream } from '@deskhub/route-stream';
import { substitute } from '../placeholders.ts';
import { desktops, homes, users, type DesktopCredentials, type DesktopFailure } from '../db/schema.ts';
import type { CatalogEntry } from '../catalog.ts';
import type { HomeMount } from '../runtime/types.ts';
import { joinSecrets, secretsOf } from './route-secrets.ts';
import { routeShares } from './sharing.ts';
import { Aborted } from './desktop-queue.ts';
import type { DesktopRoutes } from './desktop-routes.ts';
import type { DesktopJournal } from './journal.ts';
import type { LifecycleOptions } from './options.ts';
import { ExitWatch, waitUntilReady, type ExitNotices } from './readiness.ts';
import { loadDesktop } from './views.ts';

export type BringUpMode = 'create' | 'start' | 'resume';

export function sameUpstream(a: Upstream | null | undefined, b: Upstream | null | undefined): boolean {
  return !!a && !!b && a.host === b.host && a.port === b.port && a.scheme === b.scheme && a.verifyTls === b.verifyTls;
}

export class BringUp {
  constructor(
    private readonly options: LifecycleOptions,
    private readonly journal: DesktopJournal,
    private readonly routes: DesktopRoutes,
    private readonly exits: ExitNotices,
    private readonly logger: Logger,
  ) {}

  /**
   * Creates (or starts, or only re-checks) the desktop, waits until it answers, publishes its
   * route and waits for every proxy replica, then marks it running. Runs inside the queue.
   */
  async run(id: string, mode: BringUpMode, signal: AbortSignal, startedAt = Date.now()): Promise<void> {
    const exit = new ExitWatch();
    const stopListening = this.exits.listen(id, exit.onExit);
    try {
      await this.steps(id, mode, signal, startedAt, exit);
    } finally {
      stopListening();
    }
  }

  /**
   * The runtime is asked once to do the step the mode needs (create, or start) and says where the
   * desktop listens; readiness is a step of its own, which hears of an exit from the runtime's
   * events rather than by asking between probes; then the route.
   */
  private async steps(id: string, mode: BringUpMode, signal: AbortSignal, startedAt: number, exit: ExitWatch): Promise<void> {
    const { journal } = this;
    const row = await loadDesktop(this.options.db, id);
    if (!row) return;
    const type = this.options.catalog.get(row.type);
    const runtime = this.options.runtimes.get(row.runtime);
    let runtimeId = row.runtimeId;
    try {
      if (!type) throw new Error(`desktop type "${row.type}" is no longer in the catalog`);
      if (!runtime) throw new Error(`the ${row.runtime} runtime is not enabled here`);
      const credentials = this.options.secrets.open<DesktopCredentials>(row.credentials!);
      let upstream = row.upstream;
      const home = await this.homeMount(row.homeId, type);
      if (mode === 'create' || (mode === 'start' && !runtimeId)) {
        if (row.state !== 'creating') await journal.setState(id, 'creating', null);
        await journal.note(id, 'create', `creating on the ${runtime.name} runtime`);
        const env: Record<string, string> = {};
        const values = { path: row.proxyPath, prefix: `/desktop/${row.proxyPath}` };
        for (const [name, value] of Object.entries(type.env)) env[name] = substitute(value, values);
        Object.assign(env, credentials.env);
        // A pool member has no owner yet (and no home: the catalog refuses pooled types with one).
        const [ownerRow] = row.ownerId ? await this.options.db.select({ username: users.username }).from(users).where(eq(users.id, row.ownerId)) : [];
        const instance = await runtime.create(
          { desktopId: id, ownerId: row.ownerId ?? '', ownerName: ownerRow?.username ?? '', proxyPath: row.proxyPath, type, env, ...(home ? { home } : {}) },
          (event) => void journal.note(id, event.kind, event.message, event.progress),
        );
        runtimeId = instance.runtimeId;
        upstream = instance.upstream;
        await this.recordHomeLocation(home, instance.homeLocation);
        // Saved before anything else can go wrong, so whoever comes next can remove it.
        await this.options.db.update(desktops).set({ runtimeId, upstream, updatedAt: new Date() }).where(eq(desktops.id, id));
        if (signal.aborted) throw new Aborted();
        await journal.setState(id, 'starting', null);
      } else if (mode === 'start') {
        if (row.state !== 'starting') await journal.setState(id, 'starting', null);
        const instance = await runtime.start(runtimeId!, home);
        upstream = instance.upstream;
        await this.recordHomeLocation(home, instance.homeLocation);
        await this.options.db.update(desktops).set({ upstream, updatedAt: new Date() }).where(eq(desktops.id, id));
        await journal.note(id, 'start', 'started');
      } else {
        const status = await runtime.inspect(runtimeId!);
        if (status?.upstream) upstream = status.upstream;
        if (!sameUpstream(upstream, row.upstream)) await this.options.db.update(desktops).set({ upstream, updatedAt: new Date() }).where(eq(desktops.id, id));
        await journal.note(id, 'info', 'checking the desktop again after a restart or a change of address');
      }
      if (!upstream || !runtimeId) throw new Error('the runtime did not say where the desktop listens');

      await waitUntilReady({ id, type, runtime, runtimeId, upstream, authorization: credentials.authorization, proxyPath: row.proxyPath }, journal, exit, signal);

      if (row.pool && row.ownerId === null) {
        // Ready and waiting for a create to claim it: no route, and no clock runs yet.
        await journal.setState(id, 'running', null, { readyAt: new Date() });
        this.logger.info({ desktopId: id, type: type.id, ms: Date.now() - startedAt }, 'warm pool member ready');
        return;
      }
      await this.publishAndRun(id, mode, signal, startedAt);
    } catch (err) {
      if (err instanceof Aborted || signal.aborted) {
        await journal.note(id, 'info', 'interrupted by a later request');
        return; // whoever aborted us takes over
      }
      const reason = (err as Error).message;
      this.logger.warn({ desktopId: id, reason }, 'desktop failed');
      const failure = (err as { code?: unknown }).code === 'home-unreachable' ? ('home-unreachable' as const) : undefined;
      await this.fail(id, reason, mode === 'create' ? 'remove' : 'stop', type?.id ?? row.type, failure);
    }
  }

  /**
   * The last step of every bring-up, and all a claimed pool member needs: its route published
   * and confirmed by every replica, then `running`. Runs inside the queue; throws on failure.
   */
  /** The desktop's home as the runtime mounts it: with its name and where it was last recorded to live. */
  private async homeMount(homeId: string | null, type: CatalogEntry | undefined): Promise<HomeMount | undefined> {
    if (!homeId || !type?.home) return undefined;
    const [home] = await this.options.db.select({ name: homes.name, location: homes.location }).from(homes).where(eq(homes.id, homeId));
    return { id: homeId, path: type.home.path, name: home?.name ?? type.home.name, location: home?.location ?? null };
  }

  /** Records where the runtime put the home (its first desktop, or a move): from then on it is placed there. */
  private async recordHomeLocation(home: HomeMount | undefined, location: string | undefined): Promise<void> {
    if (!home || !location || home.location === location) return;
    await this.options.db.update(homes).set({ location }).where(eq(homes.id, home.id));
    home.location = location;
  }

  async publishAndRun(id: string, mode: BringUpMode | 'claim', signal: AbortSignal, startedAt: number): Promise<void> {
    const { journal } = this;
    const row = await loadDesktop(this.options.db, id);
    if (!row) return;
    const type = this.options.catalog.get(row.type);
    if (!type) throw new Error(`desktop type "${row.type}" is no longer in the catalog`);
    const upstream = row.upstream;
    if (!upstream || !row.ownerId) throw new Error('the desktop has no address or no owner');
    const credentials = this.options.secrets.open<DesktopCredentials>(row.credentials!);
    const route: Route = joinSecrets(
      {
        path: row.proxyPath,
        desktopId: id,
        owner: row.ownerId,
        shares: await routeShares(this.options.db, id),
        upstream,
        stripPrefix: type.stripPrefix,
        entryQuery: row.entryQuery,
        state: 'running',
        activity: type.activity,
      },
      secretsOf(credentials),
    );
    if (type.sharing.ownerOnly.length > 0) route.ownerOnly = type.sharing.ownerOnly;
    // A re-check after a restart keeps what the clocks said: streams held disconnected stay so,
    // and the lifetime keeps its start. A start begins everything afresh.
    const fresh = mode !== 'resume' || row.runningSince === null;
    if (!fresh && row.disconnectReason !== null) route.disconnected = row.disconnectReason;
    await this.routes.publish(id, route, signal);
    if (signal.aborted) throw new Aborted();
    const now = new Date();
    await journal.setState(id, 'running', null, fresh ? { readyAt: now, runningSince: now, disconnectedAt: null, disconnectReason: null, clockWarnings: {} } : { readyAt: now });
    this.options.metrics?.lifecycleSeconds.observe({ type: type.id, runtime: row.runtime }, (Date.now() - startedAt) / 1000);
    this.logger.info({ desktopId: id, proxyPath: row.proxyPath, ms: Date.now() - startedAt, ...(mode === 'claim' ? { claimed: true } : {}) }, 'desktop running');
  }

  /** Marks the desktop failed: route withdrawn, its instance removed, stopped or kept. Never throws. */
  async fail(id: string, reason: string, instance: 'remove' | 'stop' | 'keep', typeId: string, failure?: DesktopFailure): Promise<void> {
    try {
      await this.routes.withdraw(id);
      const row = await loadDesktop(this.options.db, id);
      if (!row) return;
      const runtime = this.options.runtimes.get(row.runtime);
      if (runtime && row.runtimeId && instance !== 'keep') {
        if (instance === 'remove') {
          await runtime.remove(row.runtimeId).catch((err: Error) => this.logger.warn({ desktopId: id, err: err.message }, 'could not remove a failed desktop; reconciliation will'));
        } else {
          await runtime.stop(row.runtimeId).catch((err: Error) => this.logger.warn({ desktopId: id, err: err.message }, 'could not stop a failed desktop'));
        }
      }
      await this.journal.setState(id, 'failed', reason, { ...(instance === 'remove' ? { runtimeId: null, upstream: null } : {}), ...(failure ? { failure } : {}) });
      this.options.metrics?.failures.inc({ type: typeId });
    } catch (err) {
      this.logger.error({ desktopId: id, err }, 'could not record a desktop failure');
    }
  }
}
