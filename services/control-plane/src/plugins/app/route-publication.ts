/**
 * Route publication: the route stream's publisher (Redis when REDIS_URL is set, else the given
 * in-process stream) and the outbox loop that feeds it. The first round runs before the app is
 * ready, so a proxy's first snapshot is the database's.
 */
import fp from 'fastify-plugin';
import { createRouteStream, type RoutePublisher, type RouteStream } from '@deskhub/route-stream';
import { RoutePublication } from '../../lifecycle/route-publication.ts';

declare module 'fastify' {
  interface FastifyInstance {
    routePublisher: RoutePublisher;
    publication: RoutePublication;
  }
}

export interface RoutePublicationPluginOptions {
  /** A stream shared with an in-process proxy (the embedded start, tests). Default: one from REDIS_URL. */
  routeStream?: RouteStream;
}

export default fp<RoutePublicationPluginOptions>(
  async (app, options) => {
    let ownStream: RouteStream | null = null;
    let stream = options.routeStream;
    if (!stream) {
      ownStream = createRouteStream({ ...(app.config.REDIS_URL ? { redisUrl: app.config.REDIS_URL } : {}), keyPrefix: app.config.ROUTE_STREAM_PREFIX, logger: app.logger });
      stream = ownStream;
      if (!app.config.REDIS_URL) {
        app.log.warn('REDIS_URL is unset: routes go to an in-process bus that no separate proxy process can see. Set REDIS_URL to run proxies with `pnpm start:proxy`, or use `pnpm start` for the one-process setup.');
      }
    }
    const publisher = stream.publisher();
    const publication = new RoutePublication({ db: app.db, publisher, secrets: app.secrets, logger: app.logger, metrics: app.metrics, intervalMs: app.config.RECONCILE_INTERVAL_MS });
    app.decorate('routePublisher', publisher);
    app.decorate('publication', publication);
    app.addHook('onClose', async () => {
      await publication.close();
      await publisher.close();
      await ownStream?.close();
    });
    await publication.start();
  },
  { name: 'route-publication', dependencies: ['config', 'database'] },
);
