/** Decorates the app with its configuration, the validated catalog, the secrets, the metrics and the logger. */
import fp from 'fastify-plugin';
import type { Logger } from '@deskhub/config';
import type { Catalog } from '../../catalog.ts';
import type { ControlPlaneConfig } from '../../config.ts';
import type { Metrics } from '../../metrics.ts';
import type { Secrets } from '../../secrets.ts';

declare module 'fastify' {
  interface FastifyInstance {
    config: ControlPlaneConfig;
    catalog: Catalog;
    secrets: Secrets;
    metrics: Metrics;
    /** The pino logger behind app.log, typed as such for deskhub's own components. */
    logger: Logger;
  }
}

export default fp<{ config: ControlPlaneConfig; catalog: Catalog; secrets: Secrets; metrics: Metrics; logger: Logger }>(
  async (app, options) => {
    app.decorate('config', options.config);
    app.decorate('catalog', options.catalog);
    app.decorate('secrets', options.secrets);
    app.decorate('metrics', options.metrics);
    app.decorate('logger', options.logger);
  },
  { name: 'config' },
);
