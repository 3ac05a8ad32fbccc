/**
 * Runs the control plane: the app on its listener, its metrics on METRICS_PORT, and a close()
 * that stops both (and, in the embedded start, the desktop processes).
 */
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { buildApp, type AppOptions } from './app.ts';
import { startMetricsServer } from './metrics.ts';

export interface StartOptions extends AppOptions {
  /** Default: config.HOST and config.PORT. */
  host?: string;
  port?: number;
  /** Default config.METRICS_PORT; null: no metrics listener. */
  metricsPort?: number | null;
  /** More registries to serve on the same metrics listener. */
  extraRegistries?: Registry[];
}

export interface RunningControlPlane {
  app: FastifyInstance;
  url: string;
  port: number;
  metricsUrl: string | null;
  close(): Promise<void>;
}

export async function startControlPlane(options: StartOptions): Promise<RunningControlPlane> {
  const { config } = options;
  const app = await buildApp(options);
  const host = options.host ?? config.HOST;
  let metrics: Awaited<ReturnType<typeof startMetricsServer>> | null = null;
  try {
    await app.listen({ host, port: options.port ?? config.PORT });
    const metricsPort = options.metricsPort === undefined ? config.METRICS_PORT : options.metricsPort;
    if (metricsPort !== null) metrics = await startMetricsServer([app.metrics.registry, ...(options.extraRegistries ?? [])], host, metricsPort);
  } catch (err) {
    await app.close().catch(() => {});
    throw err;
  }
  const port = (app.server.address() as AddressInfo).port;
  const hostForUrl = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  return {
    app,
    port,
    url: `http://${hostForUrl}:${port}`,
    metricsUrl: metrics ? `http://${hostForUrl}:${metrics.port}/metrics` : null,
    async close() {
      await metrics?.close();
      await app.close();
    },
  };
}
