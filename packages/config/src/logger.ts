/** pino logging shared by every service: JSON lines, a request id on each request, secrets redacted. */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import pino from 'pino';

export type Logger = pino.Logger;

/** Anything that may carry a secret. Paths are pino redaction paths. */
export const redactPaths = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["proxy-authorization"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  '*.password',
  '*.secret',
  '*.token',
  '*.accessToken',
  '*.clientSecret',
  '*.authorization',
  '*.credentials',
  'route.authorization',
  'password',
  'secret',
  'token',
  'authorization',
  'credentials',
];

export function loggerOptions(name: string, level = process.env.LOG_LEVEL ?? 'info'): pino.LoggerOptions {
  return {
    name,
    level,
    redact: { paths: redactPaths, censor: '[redacted]' },
    base: { service: name },
  };
}

export function createLogger(name: string, level?: string): Logger {
  return pino(loggerOptions(name, level));
}

/** Fastify options giving each request an id: the caller's `x-request-id` if sane, else a UUID. */
export const requestIdOptions = {
  requestIdHeader: false, // genReqId reads and checks x-request-id itself
  genReqId: (req: IncomingMessage): string => {
    const given = req.headers['x-request-id'];
    if (typeof given === 'string' && /^[A-Za-z0-9._-]{1,128}$/.test(given)) return given;
    return randomUUID();
  },
} as const;

/**
 * A condition a loop meets again and again (a runtime that cannot list its desktops, an engine
 * that is not a swarm manager), logged as a warning when it begins or its message changes, at
 * debug while it stays the same, and at info once when it ends: a warning every few seconds for
 * a standing condition buries everything else in the log.
 */
export class StandingCondition {
  private readonly current = new Map<string, string>();

  constructor(private readonly log: Pick<Logger, 'debug' | 'info' | 'warn'>) {}

  /** `key` names what fails (a runtime); `err` is the failure's message. */
  failing(key: string, err: string, fields: Record<string, unknown>, msg: string): void {
    if (this.current.get(key) === err) {
      this.log.debug({ ...fields, err }, msg);
      return;
    }
    this.current.set(key, err);
    this.log.warn({ ...fields, err, repeats: 'logged again only if it changes, and once when it ends' }, msg);
  }

  /** `key` works again: logged once if it was failing. */
  ok(key: string, fields: Record<string, unknown>, msg: string): void {
    if (this.current.delete(key)) this.log.info(fields, msg);
  }
}
