/**
 * Builds a route stream over a transport: Redis when a URL is given (any number of processes),
 * otherwise an in-process bus shared by this stream's publisher and subscribers.
 */
import { createLogger, type Logger } from '@deskhub/config';
import type { RoutePublisher, RouteSubscriber } from './api.ts';
import type { RouteBus } from './bus.ts';
import { StreamPublisher } from './publisher.ts';
import { StreamSubscriber, type SubscriberOptions } from './subscriber.ts';
import { MemoryRouteBus } from './transports/memory.ts';
import { RedisRouteBus } from './transports/redis.ts';

export type { SubscriberOptions } from './subscriber.ts';

export interface RouteStreamOptions {
  /** redis:// or rediss:// URL. Unset: the in-process bus (one process only). */
  redisUrl?: string;
  /** Prefix of every Redis key and channel (default "deskhub:"). */
  keyPrefix?: string;
  logger?: Logger;
}

export interface RouteStream {
  publisher(): RoutePublisher;
  subscriber(options?: SubscriberOptions): RouteSubscriber;
  /** Closes every publisher and subscriber made by this stream, then the transport. */
  close(): Promise<void>;
  readonly transport: 'redis' | 'memory';
}

export function createRouteStream(options: RouteStreamOptions = {}): RouteStream {
  const logger = (options.logger ?? createLogger('route-stream')).child({ component: 'route-stream' });
  const keyPrefix = options.keyPrefix ?? 'deskhub:';
  if (!/^[A-Za-z0-9:._-]{1,64}$/.test(keyPrefix)) {
    throw new RangeError(`keyPrefix: expected 1-64 characters of A-Z a-z 0-9 : . _ -, got ${JSON.stringify(keyPrefix)}`);
  }
  if (options.redisUrl === undefined || options.redisUrl === '') return routeStreamOver(new MemoryRouteBus(), logger);
  return routeStreamOver(new RedisRouteBus({ url: options.redisUrl, keyPrefix, logger }), logger);
}

/** A route stream over a given bus (tests use it to keep a handle on the bus). */
export function routeStreamOver(bus: RouteBus, logger: Logger): RouteStream {
  const subscribers = new Set<StreamSubscriber>();
  const publishers = new Set<StreamPublisher>();
  let closed = false;
  return {
    transport: bus.transport,
    publisher() {
      if (closed) throw new Error('route stream is closed');
      const publisher = new StreamPublisher(bus, logger, () => publishers.delete(publisher));
      publishers.add(publisher);
      return publisher;
    },
    subscriber(subscriberOptions?: SubscriberOptions) {
      if (closed) throw new Error('route stream is closed');
      // A closed subscriber's table must not stay reachable from a long-lived stream.
      const subscriber = new StreamSubscriber(bus, logger, subscriberOptions, () => subscribers.delete(subscriber));
      subscribers.add(subscriber);
      return subscriber;
    },
    async close() {
      if (closed) return;
      closed = true;
      // Subscribers first: their last activity flush and withdrawal still need the transport.
      await Promise.all([...subscribers].map((s) => s.close()));
      await Promise.all([...publishers].map((p) => p.close()));
      await bus.close();
    },
  };
}
