/**
 * The control plane's Prometheus metrics, in a registry of its own (so two control planes in one
 * test process do not collide), served on METRICS_PORT, never on the public port.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'deskhub_control_plane_' });
  return {
    registry,
    desktops: new Gauge({ name: 'deskhub_desktops', help: 'Desktops by state (updated at every reconciliation pass)', labelNames: ['state'], registers: [registry] }),
    lifecycleSeconds: new Histogram({
      name: 'deskhub_desktop_ready_seconds',
      help: 'Time from create or start until a desktop is running and every proxy holds its route',
      labelNames: ['type', 'runtime'],
      buckets: [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300],
      registers: [registry],
    }),
    failures: new Counter({ name: 'deskhub_desktop_failures_total', help: 'Desktops that ended in the failed state', labelNames: ['type'], registers: [registry] }),
    routePublications: new Counter({ name: 'deskhub_route_publications_total', help: 'Route changes and full snapshots published', labelNames: ['kind'], registers: [registry] }),
    routeVersion: new Gauge({ name: 'deskhub_route_version_published', help: 'Route version the route store is known to hold', registers: [registry] }),
    reconcilePasses: new Counter({ name: 'deskhub_reconcile_passes_total', help: 'Reconciliation passes', registers: [registry] }),
    reconcilePassSeconds: new Histogram({
      name: 'deskhub_reconcile_pass_seconds',
      help: 'Time one reconciliation pass took: every runtime listed, the desktops table read, and the repairs it started finished',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    reconcileActions: new Counter({ name: 'deskhub_reconcile_actions_total', help: 'Repairs made by reconciliation', labelNames: ['action'], registers: [registry] }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/** A listener that serves GET /metrics from `registries` (merged) and nothing else. */
export async function startMetricsServer(registries: Registry[], host: string, port: number): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const merged = registries.length === 1 ? registries[0]! : Registry.merge(registries);
  const server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
      merged.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': merged.contentType });
          res.end(text);
        },
        () => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end('metrics unavailable\n');
        },
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found: metrics are at /metrics\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
