/**
 * The readiness probe: a desktop is ready when its upstream answers the type's readiness path
 * with a 2xx or 3xx, reached the way the proxy will reach it (scheme, TLS verification, the
 * injected Authorization header).
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Upstream } from '@deskhub/route-stream';

export type ProbeResult = { ok: true; status: number } | { ok: false; problem: string };

export function probe(upstream: Upstream, path: string, authorization: string | null, timeoutMs = 5000): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { 'user-agent': 'deskhub-readiness-probe', connection: 'close' };
    if (authorization) headers.authorization = authorization;
    const options = {
      host: upstream.host,
      port: upstream.port,
      path,
      method: 'GET',
      headers,
      agent: false as const,
      timeout: timeoutMs,
      ...(upstream.scheme === 'https' ? { rejectUnauthorized: upstream.verifyTls } : {}),
    };
    const req = (upstream.scheme === 'https' ? httpsRequest : httpRequest)(options, (res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      res.destroy();
      if (status >= 200 && status < 400) resolve({ ok: true, status });
      else resolve({ ok: false, problem: `answered ${status}${status === 401 ? ' (credentials refused)' : ''}` });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, problem: err.code ? `${err.code}: ${err.message}` : err.message }));
    req.end();
  });
}

/** Resolves after `ms`, or rejects when `signal` aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
