/**
 * Route publication: the only path by which routes leave the database.
 *
 * A desktop change that touches its route runs `recordRouteChange` inside its own transaction:
 * the version comes from `UPDATE route_version ... RETURNING` (so versions commit in the order
 * they are handed out) and the change goes into the `route_changes` outbox. One publisher loop
 * then sends outbox rows to the route stream in version order, after commit: woken after each
 * commit and every few seconds. A crash between commit and publish loses nothing, and whenever
 * the store has no snapshot (a restart of the in-process bus, Redis without persistence), lags
 * behind what the outbox still holds, or a proxy asks, the full snapshot is read in one
 * REPEATABLE READ transaction and republished.
 */
import { and, asc, eq, gt, isNotNull, lte, sql } from 'drizzle-orm';
import type { Logger } from '@deskhub/config';
import type { Route, RouteChange, RoutePublisher, Snapshot } from '@deskhub/route-stream';
import type { Database, Transaction } from '../db/client.ts';
import { desktops, routeChanges, routeVersion, type DesktopCredentials, type StoredRoute } from '../db/schema.ts';
import { joinSecrets, openSecrets, sealSecrets, secretsOf, splitSecrets, type RouteSecrets } from './route-secrets.ts';
import type { Secrets } from '../secrets.ts';
import type { Metrics } from '../metrics.ts';

/** Outbox rows sent per round; the loop goes again when there are more. */
const BATCH = 500;

/** Takes the next route version; the row lock it holds serialises route changes until commit. */
export async function nextRouteVersion(tx: Transaction): Promise<number> {
  const [row] = await tx
    .update(routeVersion)
    .set({ version: sql`${routeVersion.version} + 1` })
    .where(eq(routeVersion.id, 1))
    .returning({ version: routeVersion.version });
  if (!row) throw new Error('route_version has no row: migrations not applied?');
  return row.version;
}

/** Writes a route change to the outbox inside `tx`; returns its version. */
export async function recordRouteChange(
  tx: Transaction,
  secrets: Secrets,
  change: { op: 'put'; route: Route } | { op: 'delete'; path: string },
): Promise<number> {
  const version = await nextRouteVersion(tx);
  if (change.op === 'put') {
    const { stored, secrets: routeSecrets } = splitSecrets(change.route);
    await tx.insert(routeChanges).values({
      version,
      op: 'put',
      path: stored.path,
      route: stored,
      sealedAuthorization: sealSecrets(secrets, routeSecrets),
    });
  } else {
    await tx.insert(routeChanges).values({ version, op: 'delete', path: change.path });
  }
  return version;
}

export interface RoutePublicationOptions {
  db: Database;
  publisher: RoutePublisher;
  secrets: Secrets;
  logger: Logger;
  metrics?: Metrics;
  /** Periodic check of the store's version against the database's. */
  intervalMs: number;
}

interface Waiter {
  version: number;
  resolve: (published: boolean) => void;
  timer: NodeJS.Timeout;
}

export class RoutePublication {
  private readonly logger: Logger;
  private published = 0;
  private snapshotWanted = false;
  private running: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private waiters: Waiter[] = [];
  private closed = false;
  private firstPass: Promise<void> | null = null;

  constructor(private readonly options: RoutePublicationOptions) {
    this.logger = options.logger.child({ component: 'route-publication' });
    options.publisher.onResyncRequest(() => this.requestSnapshot('a proxy asked for a resync'));
  }

  /** Version the route store is known to hold (0 before the first publication). */
  get publishedVersion(): number {
    return this.published;
  }

  /** Publishes what is pending (a snapshot if the store has none) and keeps doing so. Resolves after the first round. */
  start(): Promise<void> {
    if (!this.firstPass) {
      this.timer = setInterval(() => this.wake(), this.options.intervalMs);
      this.timer.unref();
      this.firstPass = this.round();
    }
    return this.firstPass;
  }

  /** Something was committed: publish it soon. */
  wake(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    void this.round();
  }

  requestSnapshot(reason: string): void {
    this.logger.info({ reason }, 'full route snapshot requested');
    this.snapshotWanted = true;
    this.wake();
  }

  /** Resolves true once the store holds `version` (or newer), false after `timeoutMs`. */
  waitPublished(version: number, timeoutMs: number): Promise<boolean> {
    if (this.published >= version) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        version,
        resolve,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve(false);
        }, timeoutMs),
      };
      this.waiters.push(waiter);
      this.wake();
    });
  }

  private settle(): void {
    const done = this.waiters.filter((w) => w.version <= this.published);
    if (done.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.version > this.published);
    for (const w of done) {
      clearTimeout(w.timer);
      w.resolve(true);
    }
  }

  private round(): Promise<void> {
    const run = (async () => {
      do {
        this.again = false;
        try {
          await this.publishPending();
        } catch (err) {
          this.logger.warn({ err }, 'route publication failed; retrying');
          if (!this.retryTimer && !this.closed) {
            this.retryTimer = setTimeout(() => {
              this.retryTimer = null;
              this.wake();
            }, 1000);
            this.retryTimer.unref();
          }
          break;
        }
      } while (this.again && !this.closed);
    })();
    this.running = run.finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async publishPending(): Promise<void> {
    const { db, publisher } = this.options;
    const stored = await publisher.storedVersion();
    const [counter] = await db.select({ version: routeVersion.version }).from(routeVersion);
    if (!counter) throw new Error('route_version has no row: migrations not applied?');
    if (stored !== null && stored > counter.version) {
      // The store holds a history this database never wrote (a new database, an old Redis):
      // move our counter past it so our snapshot replaces it instead of being ignored as older.
      this.logger.warn({ stored, database: counter.version }, 'route store is ahead of the database; moving the version counter past it');
      await db.transaction(async (tx) => {
        await tx.update(routeVersion).set({ version: sql`greatest(${routeVersion.version}, ${stored}) + 1` }).where(eq(routeVersion.id, 1));
      });
      await this.publishSnapshot('store ahead of the database');
      return;
    }
    if (stored === null || this.snapshotWanted) {
      await this.publishSnapshot(stored === null ? 'the route store has no snapshot' : 'requested');
      return;
    }
    this.published = Math.max(this.published, stored);
    if (stored < counter.version) {
      const rows = await db.select().from(routeChanges).where(gt(routeChanges.version, stored)).orderBy(asc(routeChanges.version)).limit(BATCH);
      if (rows[0]?.version !== stored + 1) {
        // The outbox no longer holds the next change (pruned, or the store went back): send everything.
        await this.publishSnapshot(`the outbox does not continue the store's version ${stored}`);
        return;
      }
      let expected = stored + 1;
      for (const row of rows) {
        if (row.version !== expected) break;
        const change: RouteChange =
          row.op === 'put'
            ? { version: row.version, op: 'put', route: this.withAuthorization(row.route!, row.sealedAuthorization) }
            : { version: row.version, op: 'delete', path: row.path };
        await publisher.publish(change);
        this.options.metrics?.routePublications.inc({ kind: 'change' });
        this.published = row.version;
        expected++;
      }
      if (rows.length === BATCH) this.again = true;
    }
    this.options.metrics?.routeVersion.set(this.published);
    this.settle();
    await db.delete(routeChanges).where(lte(routeChanges.version, this.published));
  }

  private withAuthorization(route: StoredRoute, sealed: string | null): Route {
    let routeSecrets: RouteSecrets | null = null;
    if (sealed) {
      try {
        routeSecrets = openSecrets(this.options.secrets, sealed);
      } catch (err) {
        this.logger.error({ path: route.path, err: (err as Error).message }, 'cannot decrypt a route credential (SECRET_KEY changed?)');
      }
    }
    return joinSecrets(route, routeSecrets);
  }

  /** All routes and the version they add up to, read consistently. */
  async readSnapshot(): Promise<Snapshot> {
    const { db, secrets } = this.options;
    return db.transaction(
      async (tx) => {
        const [counter] = await tx.select({ version: routeVersion.version }).from(routeVersion);
        const rows = await tx.select({ route: desktops.route, credentials: desktops.credentials }).from(desktops).where(and(isNotNull(desktops.route)));
        const routes = rows.map(({ route, credentials }) => {
          let routeSecrets: RouteSecrets | null = null;
          if (credentials) {
            try {
              routeSecrets = secretsOf(secrets.open<DesktopCredentials>(credentials));
            } catch (err) {
              this.logger.error({ path: route!.path, err: (err as Error).message }, 'cannot decrypt desktop credentials (SECRET_KEY changed?)');
            }
          }
          return joinSecrets(route!, routeSecrets);
        });
        return { version: counter?.version ?? 0, routes };
      },
      { isolationLevel: 'repeatable read', accessMode: 'read only' },
    );
  }

  private async publishSnapshot(reason: string): Promise<void> {
    this.snapshotWanted = false;
    const snapshot = await this.readSnapshot();
    const applied = await this.options.publisher.republish(snapshot);
    this.options.metrics?.routePublications.inc({ kind: 'snapshot' });
    this.logger.info({ version: snapshot.version, routes: snapshot.routes.length, applied, reason }, 'published full route snapshot');
    this.published = Math.max(this.published, snapshot.version);
    this.options.metrics?.routeVersion.set(this.published);
    this.settle();
    await this.options.db.delete(routeChanges).where(lte(routeChanges.version, snapshot.version));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.running?.catch(() => {});
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.resolve(false);
    }
    this.waiters = [];
  }
}
