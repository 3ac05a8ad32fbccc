/**
 * The proxy's Prometheus metrics, in a registry of its own (several proxies can live in one
 * process, e.g. in tests). The hot path only bumps plain numbers; prom-client reads them when
 * /metrics is scraped, so a request never pays for label hashing.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RouteSubscriber } from '@deskhub/route-stream';

export type UpstreamErrorKind = 'refused' | 'reset' | 'timeout' | 'tls' | 'protocol';

export class ProxyMetrics {
  readonly registry = new Registry();
  /** Responses by status class: index 1..5 for 1xx..5xx. */
  readonly responses = [0, 0, 0, 0, 0, 0];
  readonly upstreamErrors: Record<UpstreamErrorKind, number> = { refused: 0, reset: 0, timeout: 0, tls: 0, protocol: 0 };
  openWebSockets = 0;
  webSocketsOpened = 0;
  /** Shutting down (RunningProxy.drain): not ready any more. */
  draining = false;

  constructor(subscriber: RouteSubscriber) {
    const self = this;
    collectDefaultMetrics({ register: this.registry, prefix: 'deskhub_proxy_' });
    new Counter({
      name: 'deskhub_proxy_requests_total',
      help: 'HTTP responses sent, by status class (errors the proxy wrote itself included)',
      labelNames: ['status_class'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (let c = 1; c <= 5; c++) this.inc({ status_class: `${c}xx` }, self.responses[c] ?? 0);
      },
    });
    new Counter({
      name: 'deskhub_proxy_upstream_errors_total',
      help: 'Requests and upgrades that failed on the way to the upstream, by kind',
      labelNames: ['kind'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [kind, n] of Object.entries(self.upstreamErrors)) this.inc({ kind }, n);
      },
    });
    new Gauge({
      name: 'deskhub_proxy_open_websockets',
      help: 'WebSocket connections currently piped through the proxy',
      registers: [this.registry],
      collect() {
        this.set(self.openWebSockets);
      },
    });
    new Counter({
      name: 'deskhub_proxy_websockets_total',
      help: 'WebSocket connections piped through the proxy since start',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(self.webSocketsOpened);
      },
    });
    new Gauge({
      name: 'deskhub_proxy_routes',
      help: 'Routes in the proxy table',
      registers: [this.registry],
      collect() {
        this.set(subscriber.table.size);
      },
    });
    new Gauge({
      name: 'deskhub_proxy_route_version',
      help: 'Version of the route stream the proxy has applied',
      registers: [this.registry],
      collect() {
        this.set(subscriber.version);
      },
    });
    new Gauge({
      name: 'deskhub_proxy_ready',
      help: '1 once the first route snapshot is loaded; 0 again while draining',
      registers: [this.registry],
      collect() {
        this.set(subscriber.ready && !self.draining ? 1 : 0);
      },
    });
    new Counter({
      name: 'deskhub_proxy_route_resyncs_total',
      help: 'Full route table resyncs since start',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(subscriber.resyncs);
      },
    });
    const resyncSeconds = new Histogram({
      name: 'deskhub_proxy_route_resync_seconds',
      help: 'Time a full route table resync took, from its start until the snapshot was loaded (retries of a failed read included)',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    });
    subscriber.on('resync', (_version, _reason, durationMs) => resyncSeconds.observe(durationMs / 1000));
  }

  countResponse(status: number): void {
    const c = (status / 100) | 0;
    if (c >= 1 && c <= 5) this.responses[c]!++;
  }
}
