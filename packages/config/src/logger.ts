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
