/** Test helpers: routes to publish, a logger whose lines the test can read, waiting for events. */
import { Writable } from 'node:stream';
import pino from 'pino';
import type tapRoot from 'tap';
import type { Logger } from '@deskhub/config';
import type { Route, RouteSubscriber, SubscriberEvents } from '../src/index.ts';

export function route(path: string, port = 8443, extra: Partial<Route> = {}): Route {
  return {
    path,
    desktopId: `d-${path}`,
    owner: 'u-alice',
    shares: [],
    upstream: { scheme: 'https', host: '127.0.0.1', port, verifyTls: false },
    stripPrefix: true,
    authorization: 'Basic a2FzbV91c2VyOnNlY3JldA==',
    entryQuery: `path=desktop/${path}/websockify`,
    state: 'running',
    ...extra,
  };
}

export interface CapturedLog {
  logger: Logger;
  lines: Array<Record<string, unknown>>;
  /** Lines whose msg contains `text`. */
  find(text: string): Array<Record<string, unknown>>;
}

export function captureLog(): CapturedLog {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const logger = pino({ level: 'debug' }, sink);
  return { logger, lines, find: (text) => lines.filter((l) => String(l.msg).includes(text)) };
}

/**
 * A resync event's version and reason, once its duration is checked: a number of milliseconds,
 * never negative.
 */
export function resyncSeen(t: Pick<typeof tapRoot, 'ok'>, [version, reason, durationMs]: Parameters<SubscriberEvents['resync']>): [number, string] {
  t.ok(Number.isFinite(durationMs) && durationMs >= 0, `the ${reason} resync says how long it took (${durationMs} ms)`);
  return [version, reason];
}

/** Resolves with the arguments of the next `event` satisfying `accept`; rejects after timeoutMs. */
export function nextEvent<E extends keyof SubscriberEvents>(
  subscriber: RouteSubscriber,
  event: E,
  accept: (...args: Parameters<SubscriberEvents[E]>) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<Parameters<SubscriberEvents[E]>> {
  return new Promise((resolve, reject) => {
    const listener = ((...args: Parameters<SubscriberEvents[E]>) => {
      if (!accept(...args)) return;
      clearTimeout(timer);
      subscriber.off(event, listener);
      resolve(args);
    }) as SubscriberEvents[E];
    const timer = setTimeout(() => {
      subscriber.off(event, listener);
      reject(new Error(`no "${event}" event within ${timeoutMs} ms`));
    }, timeoutMs);
    subscriber.on(event, listener);
  });
}

/** Polls `check` every 10 ms until it is true; false after timeoutMs. For state no event announces. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return check();
}

export function paths(subscriber: RouteSubscriber): string[] {
  return [...subscriber.table.values()].map((r) => r.path).sort();
}
