/**
 * Shares at the proxy (README, "Sharing a desktop"): what a WebSocket opened under a share is
 * tagged with, whether a route still carries that share, closing its WebSockets at the share's
 * end, and who has which desktop open (for "connected now" in the control plane).
 */
import type { Socket } from 'node:net';
import type { AccessRole } from '@deskhub/access-token';
import { viewerKey, type Route } from '@deskhub/route-stream';
import type { OpenConnections } from './websocket.ts';

/** The one request path a desktop's origin serves besides its desktop: the token hand-off (control plane). */
export const HANDOFF_EXCHANGE_PATH = '/.deskhub/handoff';

/** The close code a viewer's WebSocket gets when its share is revoked or ends (an application code, RFC 6455 7.4.2). */
export const SHARE_ENDED_CLOSE = 4001;

/** What a viewer's WebSockets are tagged with: closed when the route no longer carries that share in that mode. */
export function shareTag(grant: string, role: AccessRole): string {
  return `${grant} ${role}`;
}

/** Whether `route` still carries the share a connection was tagged with (shareTag), unexpired. */
export function stillShared(route: Route, tag: string): boolean {
  for (const share of route.shares) if (tag === shareTag(share.id, share.mode)) return share.expiresAt === undefined || share.expiresAt > Date.now();
  return false;
}

/** setTimeout holds at most 2^31-1 ms; a later time is waited for in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function at(epochMs: number, fn: () => void): ReturnType<typeof setTimeout> {
  const wait = epochMs - Date.now();
  const timer = wait > MAX_TIMER_MS ? setTimeout(() => at(epochMs, fn), MAX_TIMER_MS) : setTimeout(fn, Math.max(0, wait));
  timer.unref();
  return timer;
}

/**
 * At `expiresAt`, the WebSockets of `path` opened under `tag` close with 4001 (each proxy on its
 * own clock: the control plane removes the share from the route later, its policy's period on).
 * The timer goes when `socket` closes first.
 */
export function closeAtExpiry(connections: OpenConnections, path: string, tag: string, expiresAt: number, socket: Socket): void {
  const timer = at(expiresAt, () => connections.closeWhere(path, (t) => t === tag, SHARE_ENDED_CLOSE, 'The share of this desktop has ended.'));
  socket.once('close', () => clearTimeout(timer));
}

/**
 * Who has a desktop open through this proxy, as `viewerKey(path, role, username)` with the count
 * of their open WebSockets: the route subscriber writes the keys at each flush, and the control
 * plane shows them as "connected now".
 */
export class ConnectedViewers {
  private readonly counts = new Map<string, number>();

  add(path: string, role: AccessRole, username: string, socket: Socket): void {
    const key = viewerKey(path, role, username);
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    socket.once('close', () => {
      const left = (this.counts.get(key) ?? 1) - 1;
      if (left > 0) this.counts.set(key, left);
      else this.counts.delete(key);
    });
  }

  keys(): IterableIterator<string> {
    return this.counts.keys();
  }
}
