/**
 * Runs the proxy as a service of its own (`pnpm start:proxy`): configuration from the
 * environment, routes from Redis, the public port opened once the first route snapshot is loaded,
 * and a drain on SIGTERM/SIGINT (a rolling restart behind nginx drops nothing; README.md).
 */
import { allocatorInUse, ConfigError, createLogger, env, loadConfig, stopOnSignals, type Logger } from '@deskhub/config';
import { createRevocationChannel, createRouteStream } from '@deskhub/route-stream';
import type { KeyObject } from 'node:crypto';
import { parseDesktopOriginSetting, parsePublicKeysSetting, type DesktopOrigins } from '@deskhub/access-token';
import { startProxy, type RunningProxy } from './proxy.ts';
import { createAccessControl } from './access.ts';

const proxyEnv = {
  PORT: env.port(8080),
  HOST: env.string('127.0.0.1'),
  METRICS_PORT: env.port(9091),
  METRICS_HOST: env.string('127.0.0.1'),
  CONTROL_PLANE_URL: env.url(['http', 'https'], 'http://127.0.0.1:8081'),
  PUBLIC_URL: env.url(['http', 'https']),
  /** Each desktop on an origin of its own, e.g. https://*.desktops.example.net (the control plane's setting too). */
  DESKTOP_ORIGIN: env.custom<DesktopOrigins | undefined>(parseDesktopOriginSetting, undefined),
  REDIS_URL: env.url(['redis', 'rediss']),
  ROUTE_STREAM_PREFIX: env.string('deskhub:'),
  BODY_LIMIT: env.int(10 * 1024 * 1024, 0),
  UPSTREAM_TIMEOUT_MS: env.int(30_000, 1),
  /** On SIGTERM: how long WebSockets stay up while the drain runs (a second signal: at once). At most an hour. */
  DRAIN_TIMEOUT_S: env.int(30, 0, 3600),
  AUTH_MODE: env.oneOf(['dev', 'oidc'] as const, 'dev'),
  /** The control plane's access-token public key(s): PEM text or comma-separated files. */
  ACCESS_TOKEN_PUBLIC_KEYS: env.custom<KeyObject[] | undefined>(parsePublicKeysSetting, undefined),
  LOG_LEVEL: env.oneOf(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const, 'info'),
};

/**
 * The proxy is deployed on jemalloc (deploy/allocator.env): with glibc's malloc the memory of
 * closed TLS WebSockets is not handed back. Says which one runs, and warns when a preload of
 * jemalloc was asked for and did not happen (libjemalloc2 not installed).
 */
function logMemoryAllocator(logger: Logger): void {
  const allocator = allocatorInUse();
  const preload = process.env.LD_PRELOAD ?? '';
  if (allocator !== 'jemalloc' && preload.includes('jemalloc')) {
    logger.warn({ allocator, LD_PRELOAD: preload }, 'jemalloc was to be preloaded but is not loaded (install libjemalloc2): running on glibc malloc, which keeps the memory of closed TLS connections');
  } else {
    logger.info({ allocator }, 'memory allocator');
  }
}

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(proxyEnv);
    if (config.REDIS_URL === undefined) {
      throw new ConfigError(
        'REDIS_URL',
        'is required for a standalone proxy: a separate process cannot share the in-process route bus (use `pnpm start` for the one-process setup)',
      );
    }
    if (config.ACCESS_TOKEN_PUBLIC_KEYS === undefined && config.AUTH_MODE === 'oidc') {
      throw new ConfigError(
        'ACCESS_TOKEN_PUBLIC_KEYS',
        "is required: the control plane's access-token public key (PEM text or a file, e.g. `openssl pkey -in access.key -pubout`); without it the proxy cannot tell who may reach a desktop",
      );
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`proxy: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger('proxy', config.LOG_LEVEL);
  logMemoryAllocator(logger);
  const stream = createRouteStream({ redisUrl: config.REDIS_URL, keyPrefix: config.ROUTE_STREAM_PREFIX, logger });
  // Without keys (dev mode only, loopback) every request passes, as startProxy warns at start.
  const desktopOrigins = config.DESKTOP_ORIGIN;
  const access = config.ACCESS_TOKEN_PUBLIC_KEYS && createAccessControl({
    publicKeys: config.ACCESS_TOKEN_PUBLIC_KEYS,
    publicUrl: config.PUBLIC_URL ?? `http://127.0.0.1:${config.PORT}`,
    ...(desktopOrigins ? { desktopOrigins } : {}),
  });
  const revocations = createRevocationChannel({ redisUrl: config.REDIS_URL, keyPrefix: config.ROUTE_STREAM_PREFIX, logger });
  if (access) {
    // Logout anywhere: this proxy refuses the session's tokens and closes its desktop WebSockets.
    revocations.subscribe((r) => access.revokeSession(r.sessionId, r.until)).catch((err: unknown) => logger.error({ err }, 'subscribing to session revocations failed'));
  }
  // A signal may come before the public port opens (Redis down at start: the proxy waits for its
  // first route snapshot). Then there is nothing to drain: the wait is aborted and the process
  // exits 0. Afterwards a signal drains (RunningProxy.drain), a second one ends the drain at once.
  const beforeListening = new AbortController();
  let proxy: RunningProxy | null = null;
  const drainMs = config.DRAIN_TIMEOUT_S * 1000;
  const shutdown = stopOnSignals(
    logger,
    async () => {
      beforeListening.abort(); // no effect once the public port is open
      const running = await starting.catch(() => null);
      if (running !== null) await running.drain(drainMs);
      await stream.close();
      await revocations.close();
    },
    { onRepeat: () => void proxy?.close() },
  );
  const starting: Promise<RunningProxy | null> = startProxy({
    ...(access ? { authorize: access.authorize } : {}),
    subscriber: stream.subscriber(),
    controlPlaneUrl: config.CONTROL_PLANE_URL,
    publicUrl: config.PUBLIC_URL,
    host: config.HOST,
    port: config.PORT,
    metricsPort: config.METRICS_PORT,
    metricsHost: config.METRICS_HOST,
    bodyLimit: config.BODY_LIMIT,
    upstreamTimeoutMs: config.UPSTREAM_TIMEOUT_MS,
    authMode: config.AUTH_MODE,
    ...(desktopOrigins ? { desktopOrigins } : {}),
    logger,
    signal: beforeListening.signal,
  }).then(
    (running) => (proxy = running),
    (err: unknown) => {
      // Stopped by a signal while waiting: stopOnSignals finishes the stop (exit 0).
      if (shutdown.stopping && (err as Error).name === 'AbortError') {
        logger.info('stopped before the public port opened');
        return null;
      }
      throw err;
    },
  );
  if ((await starting) !== null) {
    logger.info({ drainTimeoutS: config.DRAIN_TIMEOUT_S }, 'on SIGTERM or SIGINT the proxy drains; a second signal ends the drain at once');
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`proxy: failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
