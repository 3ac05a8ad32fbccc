/**
 * `pnpm start:control-plane`: the control plane as a service of its own, for proxies started
 * separately (`pnpm start:proxy`). Those see routes only through Redis: set REDIS_URL (and
 * DATABASE_URL + SECRET_KEY for Postgres). Stops on SIGTERM/SIGINT; desktops keep running and
 * are found again at the next start.
 */
import { ConfigError, createLogger, stopOnSignals } from '@deskhub/config';
import { CatalogError } from './catalog.ts';
import { loadControlPlaneConfig } from './config.ts';
import { startControlPlane } from './control-plane.ts';

async function main(): Promise<void> {
  let config;
  try {
    config = loadControlPlaneConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`control-plane: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger('control-plane', config.LOG_LEVEL);
  let controlPlane;
  try {
    controlPlane = await startControlPlane({ config, logger });
  } catch (err) {
    if (err instanceof ConfigError || err instanceof CatalogError) {
      process.stderr.write(`control-plane: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  logger.info({ url: controlPlane.url, metrics: controlPlane.metricsUrl, publicUrl: config.PUBLIC_URL }, 'control plane listening');

  stopOnSignals(logger, () => controlPlane.close());
}

main().catch((err: unknown) => {
  process.stderr.write(`control-plane: failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
