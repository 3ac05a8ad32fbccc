/** What the lifecycle and its modules are built from (src/plugins/app/desktops.ts assembles it). */
import type { Logger } from '@deskhub/config';
import type { RoutePublisher } from '@deskhub/route-stream';
import type { Catalog } from '../catalog.ts';
import type { Database } from '../db/client.ts';
import type { Metrics } from '../metrics.ts';
import type { RuntimeRegistry } from '../runtime/index.ts';
import type { Secrets } from '../secrets.ts';
import type { RoutePublication } from './route-publication.ts';
import type { SharingSettings } from './sharing.ts';

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
  /** At most this many homes per user (MAX_HOMES_PER_USER); 0: no limit. */
  homesPerUser: number;
  /** What the owner of a desktop whose home's node is lost may do besides waiting (HOME_NODE_LOST); default wait. */
  homeNodeLost?: 'wait' | 'offer-new-home';
  /** How long to wait for every live proxy replica to hold a route change. */
  replicaWaitMs: number;
  /** How long to wait for the route store to take a change. */
  publishTimeoutMs?: number;
  /**
   * How old the last presence may be and still mean "connected now", and the gap after which
   * presence starts a new connection: the activity copy interval plus the proxies' flushes.
   */
  connectedWindowMs: number;
  /** DESKTOP_ORIGIN and the share-link limits; absent: sharing off (DESKTOP_ORIGIN unset). */
  sharing?: SharingSettings;
}
