/**
 * The whole of deskhub in one process: the control plane on an internal loopback port, the
 * proxy on PORT (the public entry point), the in-process route stream between them (or Redis
 * when REDIS_URL is set), PGlite under DATA_DIR unless DATABASE_URL is set, dev sign-in, and
 * every runtime that answers. Desktops are reachable only with the access cookie the control
 * plane mints (dev sign-in included). close() stops everything, desktop processes included.
 */
import { env as envVar, loadConfig, createLogger, type Logger } from '@deskhub/config';
import { createRouteStream } from '@deskhub/route-stream';
import { createAccessControl, startProxy, type RunningProxy } from '@deskhub/proxy';
import { loadControlPlaneConfig, type ControlPlaneConfig } from './config.ts';
import { startControlPlane, type RunningControlPlane } from './control-plane.ts';
import type { DesktopRuntime } from './runtime/types.ts';

/** Settings only the embedded start reads (the proxy's side of it). */
const embeddedSpec = {
  PORT: envVar.port(8080),
  PROXY_METRICS_PORT: envVar.port(9091),
  BODY_LIMIT: envVar.int(10 * 1024 * 1024, 0),
};

export interface EmbeddedOptions {
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** Tests: runtimes built by the caller. */
  runtimes?: DesktopRuntime[];
}

export interface RunningDeskhub {
  /** PUBLIC_URL: what users open. */
  publicUrl: string;
  /** Where the proxy actually listens. */
  proxyUrl: string;
  config: ControlPlaneConfig;
  controlPlane: RunningControlPlane;
  proxy: RunningProxy;
  close(): Promise<void>;
}

export async function startEmbedded(options: EmbeddedOptions = {}): Promise<RunningDeskhub> {
  const source = options.env ?? process.env;
  const own = loadConfig(embeddedSpec, source);
  const config = loadControlPlaneConfig(source, { PORT: own.PORT, publicPort: own.PORT });
  const logger = options.logger ?? createLogger('deskhub', config.LOG_LEVEL);
  const stream = createRouteStream({ ...(config.REDIS_URL ? { redisUrl: config.REDIS_URL } : {}), keyPrefix: config.ROUTE_STREAM_PREFIX, logger });
  let controlPlane: RunningControlPlane | null = null;
  try {
    controlPlane = await startControlPlane({
      config,
      logger: options.logger?.child({ component: 'control-plane' }) ?? createLogger('control-plane', config.LOG_LEVEL),
      routeStream: stream,
      stopDesktopsOnClose: true,
      env: source,
      host: '127.0.0.1',
      port: 0,
      ...(options.runtimes ? { runtimes: options.runtimes } : {}),
    });
    // The proxy gets only the public key, in-process; revocations reach it by direct call.
    const desktopOrigins = config.DESKTOP_ORIGIN;
    const accessControl = createAccessControl({ publicKeys: [controlPlane.app.access.publicKey], publicUrl: config.PUBLIC_URL, ...(desktopOrigins ? { desktopOrigins } : {}) });
    controlPlane.app.access.onRevoke((r) => {
      accessControl.revokeSession(r.sessionId, r.until);
    });
    // startProxy opens the public port once the proxy holds its first route snapshot: in-process
    // that is at once; on REDIS_URL it waits for Redis (and says so in the log). Its close() is
    // the stop here (WebSockets 1001 at a frame boundary, requests in flight up to 5 s): one
    // process has no other replica to drain towards, so `drain()` would only delay the stop.
    const proxy = await startProxy({
      authorize: accessControl.authorize,
      subscriber: stream.subscriber(),
      controlPlaneUrl: controlPlane.url,
      publicUrl: config.PUBLIC_URL,
      host: config.HOST,
      port: config.PORT,
      metricsPort: own.PROXY_METRICS_PORT,
      authMode: config.AUTH_MODE,
      logger: options.logger?.child({ component: 'proxy' }) ?? createLogger('proxy', config.LOG_LEVEL),
      bodyLimit: own.BODY_LIMIT,
      ...(desktopOrigins ? { desktopOrigins } : {}),
    });
    const running = controlPlane;
    return {
      publicUrl: config.PUBLIC_URL,
      proxyUrl: proxy.url,
      config,
      controlPlane: running,
      proxy,
      async close() {
        await proxy.close().catch((err: unknown) => logger.error({ err }, 'stopping the proxy failed'));
        await running.close().catch((err: unknown) => logger.error({ err }, 'stopping the control plane failed'));
        await stream.close();
      },
    };
  } catch (err) {
    await controlPlane?.close().catch(() => {});
    await stream.close().catch(() => {});
    throw err;
  }
}
