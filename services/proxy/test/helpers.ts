/**
 * What the proxy tests share: routes, a proxy wired to a real route stream (in-process or
 * Redis) with a publisher to change its table, small upstreams, and an HTTP client that returns
 * status, headers and body.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { createRouteStream, type Route, type RoutePublisher, type RouteStream, type RouteSubscriber, type SubscriberOptions } from '@deskhub/route-stream';
import { startProxy, type ProxyOptions, type RunningProxy } from '../src/index.ts';

export const silentLogger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

export const KASM_PASSWORD = 'demo-password-1234';
export const KASM_AUTH = 'Basic ' + Buffer.from(`kasm_user:${KASM_PASSWORD}`).toString('base64');

export function makeRoute(path: string, upstreamUrl: string, extra: Partial<Route> = {}): Route {
  const u = new URL(upstreamUrl);
  const scheme = u.protocol === 'https:' ? 'https' : 'http';
  return {
    path,
    desktopId: `desk-${path}`,
    owner: 'user-alice',
    shares: [],
    upstream: { scheme, host: u.hostname, port: Number(u.port), verifyTls: false },
    stripPrefix: true,
    authorization: null,
    entryQuery: '',
    state: 'running',
    ...extra,
  };
}

/** Resolves when `predicate` holds, checked now and on every route event; rejects after `timeoutMs`. */
export function waitForSubscriber(subscriber: RouteSubscriber, predicate: () => boolean, timeoutMs = 10_000, what = 'route table'): Promise<void> {
  if (predicate()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (!predicate()) return;
      cleanup();
      resolve();
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out waiting for ${what} (version ${subscriber.version})`));
    }, timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      subscriber.off('change', check);
      subscriber.off('resync', check);
      subscriber.off('ready', check);
    };
    subscriber.on('change', check);
    subscriber.on('resync', check);
    subscriber.on('ready', check);
  });
}

export interface Stack {
  proxy: RunningProxy;
  stream: RouteStream;
  publisher: RoutePublisher;
  subscriber: RouteSubscriber;
  /** Publishes a put and waits until this proxy applied it. */
  put(route: Route): Promise<void>;
  /** Publishes a delete and waits until this proxy applied it. */
  remove(path: string): Promise<void>;
  close(): Promise<void>;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

let stackCount = 0;

/**
 * A proxy on a free port over an in-process route stream (or, with `redisUrl`, the route stream on
 * that Redis under a prefix of its own), loaded with `routes`.
 * `publish: false` leaves the table unpublished (the proxy stays not ready).
 * `subscriberOptions`: the route subscriber's (e.g. a short activityFlushMs).
 */
export async function startStack(
  t: Teardown,
  routes: Route[],
  options: Partial<ProxyOptions> & { publish?: boolean; redisUrl?: string; subscriberOptions?: SubscriberOptions } = {},
): Promise<Stack> {
  const { publish = true, redisUrl, subscriberOptions, ...proxyOptions } = options;
  const keyPrefix = `stack-${process.pid}-${++stackCount}:`;
  const stream = createRouteStream({ logger: silentLogger, ...(redisUrl ? { redisUrl, keyPrefix } : {}) });
  const publisher = stream.publisher();
  const subscriber = stream.subscriber(subscriberOptions);
  const proxy = await startProxy({ subscriber, port: 0, host: '127.0.0.1', authMode: 'dev', logger: silentLogger, ...proxyOptions });
  let version = 0;
  if (publish) {
    version = 1;
    await publisher.republish({ version, routes });
    await waitForSubscriber(subscriber, () => subscriber.ready && subscriber.version >= 1);
  }
  const stack: Stack = {
    proxy,
    stream,
    publisher,
    subscriber,
    async put(route) {
      const v = ++version;
      await publisher.publish({ version: v, op: 'put', route });
      await waitForSubscriber(subscriber, () => subscriber.version >= v);
    },
    async remove(path) {
      const v = ++version;
      await publisher.publish({ version: v, op: 'delete', path });
      await waitForSubscriber(subscriber, () => subscriber.version >= v);
    },
    async close() {
      await proxy.close();
      await stream.close();
    },
  };
  t.teardown(() => stack.close());
  return stack;
}

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

export interface SendOptions {
  method?: string;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
  /** Send the body chunked (no content-length). */
  chunked?: boolean;
}

/** One HTTP(S) request on a fresh connection; resolves with the whole answer. */
export function send(url: string, options: SendOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(
      u,
      { method: options.method ?? 'GET', headers: options.headers, agent: false, rejectUnauthorized: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString('utf8') });
        });
      },
    );
    req.on('error', reject);
    if (options.body !== undefined) {
      if (options.chunked) {
        req.setHeader('transfer-encoding', 'chunked');
        req.write(options.body);
        req.end();
      } else {
        // Node's client sends DELETE/OPTIONS bodies without a length unless told.
        req.setHeader('content-length', Buffer.byteLength(options.body));
        req.end(options.body);
      }
    } else {
      req.end();
    }
  });
}

/** The headers demo-desktop's /__echo received. */
export function echoedHeaders(reply: Reply): Record<string, string | string[]> {
  const raw = reply.headers['x-echo-headers'];
  if (typeof raw !== 'string') throw new Error(`no x-echo-headers in a ${reply.status} reply: ${reply.text.slice(0, 200)}`);
  return JSON.parse(Buffer.from(raw, 'base64').toString('utf8')) as Record<string, string | string[]>;
}

export interface TestUpstream {
  server: http.Server;
  url: string;
  port: number;
  /** Connections accepted so far. */
  connections: number;
  close(): Promise<void>;
}

/** A plain HTTP upstream with the given handler, on a free port. */
export async function startUpstream(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<TestUpstream> {
  const server = http.createServer(handler);
  const upstream: TestUpstream = {
    server,
    url: '',
    port: 0,
    connections: 0,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('connection', () => upstream.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  upstream.port = (server.address() as AddressInfo).port;
  upstream.url = `http://127.0.0.1:${upstream.port}`;
  return upstream;
}

/** A port nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
