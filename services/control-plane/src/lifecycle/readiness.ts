/**
 * Readiness: a desktop is ready when its upstream answers the type's readiness path with a 2xx
 * or 3xx, reached the way the proxy will reach it (scheme, TLS verification, the injected
 * Authorization header). The probe, and the bring-up's step that waits for it.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Upstream } from '@deskhub/route-stream';
import type { CatalogEntry } from '../catalog.ts';
import { substitute } from '../placeholders.ts';
import type { DesktopRuntime, RuntimeStatus } from '../runtime/types.ts';
import { Aborted } from './desktop-queue.ts';
import type { DesktopJournal } from './journal.ts';

/** Lines of a desktop's output quoted in a failure reason. */
const LOG_LINES = 15;

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

/** The runtime's last lines of output, as the end of a failure reason ("" when there are none). */
export async function lastLines(runtime: DesktopRuntime, runtimeId: string): Promise<string> {
  const text = await runtime.logs(runtimeId, LOG_LINES).catch(() => '');
  return text.trim() ? `; last output:\n${text.trim()}` : '';
}

/**
 * Exits the runtimes report (their watch()), for the desktops being brought up: the lifecycle
 * subscribes once per runtime, and a bring-up listens for its own desktop from before the runtime
 * creates it, so an exit is never missed between two steps and nobody has to ask.
 */
export class ExitNotices {
  private readonly listeners = new Map<string, (status: RuntimeStatus) => void>();
  private readonly unwatch: (() => void)[] = [];

  constructor(runtimes: readonly DesktopRuntime[]) {
    for (const runtime of runtimes) this.unwatch.push(runtime.watch((status) => this.listeners.get(status.desktopId)?.(status)));
  }

  /** Until the returned function is called, `onExit` hears of this desktop's exit. */
  listen(desktopId: string, onExit: (status: RuntimeStatus) => void): () => void {
    this.listeners.set(desktopId, onExit);
    return () => {
      if (this.listeners.get(desktopId) === onExit) this.listeners.delete(desktopId);
    };
  }

  close(): void {
    for (const unwatch of this.unwatch.splice(0)) unwatch();
    this.listeners.clear();
  }
}

/** One bring-up's view of its desktop's exit: set once the runtime reports it, and a wake-up for the wait. */
export class ExitWatch {
  ended: RuntimeStatus | null = null;
  private wake: (() => void) | null = null;

  readonly onExit = (status: RuntimeStatus): void => {
    this.ended = status;
    this.wake?.();
  };

  /** Resolves after `ms`, at the exit, or rejects when `signal` aborts (the queue's preemption). */
  pause(ms: number, signal: AbortSignal): Promise<void> {
    if (this.ended) return Promise.resolve();
    const early = new AbortController();
    this.wake = () => early.abort();
    const abort = (): void => early.abort();
    signal.addEventListener('abort', abort, { once: true });
    return sleep(ms, early.signal)
      .catch(() => {
        if (signal.aborted) throw new Aborted();
      })
      .finally(() => {
        this.wake = null;
        signal.removeEventListener('abort', abort);
      });
  }
}

/**
 * A missed exit event (an event stream that dropped) costs at most this long: the runtime is
 * asked directly this often while a desktop does not answer, and once more at the deadline.
 */
const INSPECT_FALLBACK_MS = 10_000;

/** What the readiness step needs to know about one desktop. */
export interface ReadinessTarget {
  id: string;
  type: CatalogEntry;
  runtime: DesktopRuntime;
  runtimeId: string;
  upstream: Upstream;
  authorization: string | null;
  proxyPath: string;
}

/**
 * The readiness step of a bring-up: probes until the desktop answers its type's readiness path,
 * backing off from 200 ms to 2 s. A desktop that exits meanwhile (the runtime's exit event,
 * `exit`) fails at once with its last output instead of at the deadline.
 */
export async function waitUntilReady(target: ReadinessTarget, journal: DesktopJournal, exit: ExitWatch, signal: AbortSignal): Promise<void> {
  const { id, type, runtime, runtimeId, upstream, authorization, proxyPath } = target;
  const path = substitute(type.readiness.path, { path: proxyPath, prefix: `/desktop/${proxyPath}` });
  const timeoutMs = type.readiness.timeoutSeconds * 1000;
  const deadline = Date.now() + timeoutMs;
  await journal.note(id, 'probe', `waiting for the desktop to answer ${path} (up to ${type.readiness.timeoutSeconds} s)`);
  const stopped = async (status: RuntimeStatus | null): Promise<Error> =>
    new Error(`the desktop stopped before it was ready (${status?.reason ?? 'it no longer exists'})${await lastLines(runtime, runtimeId)}`);
  let delay = 200;
  let last = 'no answer yet';
  let inspectedAt = Date.now();
  for (;;) {
    if (signal.aborted) throw new Aborted();
    if (exit.ended) throw await stopped(exit.ended);
    const result = await probe(upstream, path, authorization, Math.min(5000, Math.max(1000, deadline - Date.now())));
    if (result.ok) {
      await journal.note(id, 'probe', `the desktop answered ${result.status}`);
      return;
    }
    last = result.problem;
    if (exit.ended) throw await stopped(exit.ended);
    const atDeadline = Date.now() >= deadline;
    if (atDeadline || Date.now() - inspectedAt >= INSPECT_FALLBACK_MS) {
      inspectedAt = Date.now();
      const status = await runtime.inspect(runtimeId);
      if (!status || !status.running) throw await stopped(status);
    }
    if (atDeadline) {
      throw new Error(`the desktop did not answer ${path} within ${type.readiness.timeoutSeconds} s (last: ${last})${await lastLines(runtime, runtimeId)}`);
    }
    await exit.pause(Math.min(delay, Math.max(0, deadline - Date.now())), signal);
    delay = Math.min(delay * 1.5, 2000);
  }
}
