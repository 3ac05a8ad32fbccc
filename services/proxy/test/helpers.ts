/**
 * What the proxy tests share: routes, a proxy wired to a real route stream (in-process or
 * Redis) with a publisher to change its table, small upstreams, an HTTP client that returns
 * status, headers and body, and a raw-socket one that keeps its connection (the drain's tests).
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import pino from 'pino';
import { startRedis, type RedisServer } from '@deskhub/testkit/redis';
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

/** Resolves with the error code of a connection attempt ('connected' if it was accepted). */
export function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

export interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A browser-side connection on a raw socket (drain tests): requests written by hand, answers read by content-length. */
export class RawClient {
  readonly socket: net.Socket;
  readonly closed: Promise<void>;
  private buffer = Buffer.alloc(0);
  private waiting: (() => void) | null = null;

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('error', () => undefined);
    this.socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.waiting?.();
    });
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    void this.closed.then(() => this.waiting?.());
  }

  connected(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.socket.destroyed;
  }

  write(request: string): void {
    this.socket.write(request);
  }

  /** The next whole answer (head and a content-length body). */
  async answer(timeoutMs = 5000): Promise<RawAnswer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end !== -1) {
        const lines = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
        const headers: Record<string, string> = {};
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(':');
          headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
        }
        const length = Number(headers['content-length'] ?? 0);
        if (this.buffer.length >= end + 4 + length) {
          const body = this.buffer.subarray(end + 4, end + 4 + length).toString('utf8');
          this.buffer = this.buffer.subarray(end + 4 + length);
          return { status: Number(lines[0]!.split(' ')[1]), headers, body };
        }
      }
      if (this.socket.destroyed) throw new Error(`connection closed before a whole answer: ${JSON.stringify(this.buffer.toString('latin1'))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('no whole answer in time');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiting = () => {
          clearTimeout(timer);
          this.waiting = null;
          resolve();
        };
      });
    }
  }
}

export interface RedisDown {
  redis: RedisServer;
  keyPrefix: string;
  /** Starts Redis again (done at teardown otherwise). */
  up(): Promise<void>;
}

/**
 * A private Redis whose route table holds one desktop at `path` answering `body`, then stopped: a
 * proxy started now finds no route stream (it starts again with `up()`, or at teardown).
 */
export async function redisDownWithDesktop(t: Teardown, path: string, body: string): Promise<RedisDown> {
  const redis = await startRedis();
  t.teardown(() => redis.close());
  const desktop = await startUpstream((_req, res) => res.end(body));
  t.teardown(() => desktop.close());
  const keyPrefix = `down-${process.pid}-${++stackCount}:`;
  const stream = createRouteStream({ redisUrl: redis.url, keyPrefix, logger: silentLogger });
  t.teardown(() => stream.close());
  await stream.publisher().republish({ version: 1, routes: [makeRoute(path, desktop.url)] });
  await redis.stop();
  let down = true;
  const up = async (): Promise<void> => {
    if (!down) return;
    down = false;
    await redis.start();
  };
  t.teardown(up);
  return { redis, keyPrefix, up };
}
