/**
 * Desktop lifecycle and reconciliation. The first reconciliation pass runs before the app is
 * ready, so a restart has repaired what a dead control plane left before anyone asks.
 */
import fp from 'fastify-plugin';
import { DesktopLifecycle } from '../../lifecycle/desktops.ts';
import { Reconciler } from '../../lifecycle/reconciler.ts';

declare module 'fastify' {
  interface FastifyInstance {
    desktops: DesktopLifecycle;
    reconciler: Reconciler;
  }
}

export default fp<{ stopDesktopsOnClose: boolean }>(
  async (app, options) => {
    const { config } = app;
    const lifecycle = new DesktopLifecycle({
      db: app.db,
      catalog: app.catalog,
      runtimes: app.runtimes,
      publication: app.publication,
      publisher: app.routePublisher,
      secrets: app.secrets,
      logger: app.logger,
      metrics: app.metrics,
      publicUrl: config.PUBLIC_URL,
      quotas: { perUser: config.MAX_DESKTOPS_PER_USER, total: config.MAX_DESKTOPS_TOTAL },
      homesPerUser: config.MAX_HOMES_PER_USER,
      homeNodeLost: config.HOME_NODE_LOST,
      replicaWaitMs: config.REPLICA_WAIT_MS,
      // Proxies flush presence every 5 s; it is copied every ACTIVITY_INTERVAL_MS.
      connectedWindowMs: config.ACTIVITY_INTERVAL_MS + 15_000,
      sharing: {
        desktopOrigins: config.DESKTOP_ORIGIN ?? null,
        linkDefaultTtlMs: config.SHARE_LINK_TTL,
        linkMaxTtlMs: config.SHARE_LINK_MAX_TTL,
        linkControl: config.SHARE_LINK_CONTROL,
      },
    });
    const reconciler = new Reconciler({
      db: app.db,
      lifecycle,
      runtimes: app.runtimes,
      publisher: app.routePublisher,
      logger: app.logger,
      metrics: app.metrics,
      intervalMs: config.RECONCILE_INTERVAL_MS,
      activityIntervalMs: config.ACTIVITY_INTERVAL_MS,
    });
    app.decorate('desktops', lifecycle);
    app.decorate('reconciler', reconciler);
    app.addHook('onClose', async () => {
      await reconciler.close();
      // The process runtime stops its desktops when it closes (after this hook): say so first.
      if (options.stopDesktopsOnClose) await lifecycle.stopForShutdown('process', 'stopped when deskhub shut down; start it again');
      await lifecycle.close();
    });
    const first = await reconciler.start();
    if (first.repairs.length > 0) app.log.info({ repairs: first.repairs.length }, 'first reconciliation pass repaired desktops');
  },
  { name: 'desktops', dependencies: ['database', 'runtimes', 'route-publication'] },
);
