/**
 * A desktop's route: published (through the outbox, route-publication.ts) once it is ready, and
 * withdrawn before it is stopped or deleted; each change waits until the route store holds it and
 * every live proxy replica has applied it.
 */
import { eq } from 'drizzle-orm';
import type { Logger } from '@deskhub/config';
import type { Route } from '@deskhub/route-stream';
import type { Transaction } from '../db/client.ts';
import { desktops, type DesktopCredentials, type StoredRoute } from '../db/schema.ts';
import { loadDesktop } from './views.ts';
import { Aborted } from './desktop-queue.ts';
import type { DesktopJournal } from './journal.ts';
import type { LifecycleOptions } from './options.ts';
import { recordRouteChange } from './route-publication.ts';
import { joinSecrets, secretsOf, splitSecrets } from './route-secrets.ts';

export class DesktopRoutes {
  constructor(
    private readonly options: LifecycleOptions,
    private readonly journal: DesktopJournal,
    private readonly logger: Logger,
  ) {}

  async publish(id: string, route: Route, signal: AbortSignal): Promise<void> {
    const { db, secrets, publication } = this.options;
    const { stored } = splitSecrets(route);
    const version = await db.transaction(async (tx) => {
      const v = await recordRouteChange(tx, secrets, { op: 'put', route });
      await tx.update(desktops).set({ route: stored satisfies StoredRoute, updatedAt: new Date() }).where(eq(desktops.id, id));
      await this.journal.record(tx, id, 'route', `route published (version ${v})`);
      return v;
    });
    publication.wake();
    await this.confirm(id, version, 'route');
    if (signal.aborted) throw new Aborted();
  }

  /**
   * Publishes a change to the desktop's current route (its stored route, with the Authorization
   * header derived again from its credentials). False when it has no route to change.
   */
  async change(id: string, edit: (route: Route) => Route, signal: AbortSignal): Promise<boolean> {
    const row = await loadDesktop(this.options.db, id);
    if (!row?.route) return false;
    const routeSecrets = row.credentials ? secretsOf(this.options.secrets.open<DesktopCredentials>(row.credentials)) : null;
    await this.publish(id, edit(joinSecrets(row.route, routeSecrets)), signal);
    return true;
  }

  /** Waits until the store holds `version` and every live replica has applied it. */
  private async confirm(id: string, version: number, what: string): Promise<void> {
    const published = await this.options.publication.waitPublished(version, this.options.publishTimeoutMs ?? 15_000);
    if (!published) {
      throw new Error(`the route store did not take the ${what} change within ${(this.options.publishTimeoutMs ?? 15_000) / 1000} s (is Redis reachable?)`);
    }
    const replicas = await this.options.publisher.waitForReplicas(version, this.options.replicaWaitMs);
    if (!replicas.ok) {
      await this.journal.note(id, 'route', `proxy replicas not confirming version ${version} within ${this.options.replicaWaitMs} ms: ${replicas.lagging.map((r) => r.id).join(', ')}`);
    } else {
      await this.journal.note(id, 'route', `every proxy replica holds route version ${version}`);
    }
  }

  /** Removes the desktop's route (if it has one) and waits for the proxies; publication failures are logged, not thrown. */
  async withdraw(id: string, andThen?: (tx: Transaction) => Promise<void>): Promise<void> {
    const { db, secrets, publication } = this.options;
    const version = await db.transaction(async (tx) => {
      const [row] = await tx.select({ route: desktops.route, path: desktops.proxyPath }).from(desktops).where(eq(desktops.id, id)).for('update');
      let v: number | null = null;
      if (row?.route) {
        v = await recordRouteChange(tx, secrets, { op: 'delete', path: row.path });
        await tx.update(desktops).set({ route: null, updatedAt: new Date() }).where(eq(desktops.id, id));
        await this.journal.record(tx, id, 'route', `route withdrawn (version ${v})`);
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
}
