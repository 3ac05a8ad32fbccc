/**
 * A desktop's clocks, as data: from its stored times and its type's settings, when each clock
 * runs out and when its warning starts. Pure, so the API (views.ts) shows exactly the deadlines
 * the idle policy (policies/idle-clocks.ts) acts on, and a restart loses nothing: everything is
 * derived from times stored in the desktops row (level-triggered).
 *
 * - idle: no input while someone is connected for `disconnectAfter` → the desktop's streams are
 *   disconnected (the desktop keeps running). It counts from the latest of: the desktop becoming
 *   running, its last input, the start of the current connection, a keep-alive or re-arm. Nobody
 *   connected: nothing to disconnect, so no idle deadline.
 * - expire: nobody connected (no open WebSocket at any replica, no request) for `after` → stop or
 *   delete. Counts from the latest of: running, last connection seen, a keep-alive.
 * - lifetime: `maxLifetime` after the desktop became running → stop. Keep-alives do not move it.
 */
import { describeDuration } from '../durations.ts';

export interface IdleClock {
  disconnectAfterMs: number;
  warnMs: number;
  /** What the type's activity is (catalog `activity`): the reason says "without input" or "without use". */
  counts: 'input' | 'traffic';
}
export interface ExpireClock {
  afterMs: number;
  warnMs: number;
  action: 'stop' | 'delete';
}
export interface LifetimeClock {
  maxMs: number;
  warnMs: number;
}

/** A type's clocks after defaults; null: that clock is off for the type. */
export interface ClockSettings {
  idle: IdleClock | null;
  expire: ExpireClock | null;
  lifetime: LifetimeClock | null;
}

export const NO_CLOCKS: ClockSettings = { idle: null, expire: null, lifetime: null };

/** The stored times the clocks read (columns of `desktops`). */
export interface ClockTimes {
  runningSince: Date | null;
  lastActivityAt: Date | null;
  lastConnectedAt: Date | null;
  connectedSince: Date | null;
  keptAliveAt: Date | null;
  disconnectedAt: Date | null;
  clocksExempt: boolean;
}

export type ClockName = 'idle' | 'expire' | 'lifetime';

export interface Deadline {
  clock: ClockName;
  /** epoch ms when it acts */
  at: number;
  /** epoch ms when its warning starts */
  warnAt: number;
  action: 'disconnect' | 'stop' | 'delete';
  /** The clock's period (disconnectAfter, after, maxLifetime). */
  periodMs: number;
  /** Why, for the event, the close frame and the state's reason. */
  why: string;
}

const latest = (...dates: Array<Date | null>): number => Math.max(...dates.map((d) => d?.getTime() ?? 0));

/** Whether a proxy saw the desktop connected within `windowMs` (presence is copied every few seconds). */
export function connectedNow(times: Pick<ClockTimes, 'lastConnectedAt'>, now: number, windowMs: number): boolean {
  return times.lastConnectedAt !== null && now - times.lastConnectedAt.getTime() <= windowMs;
}

/**
 * The running desktop's deadlines, soonest first; none for an exempt desktop or one not yet
 * running. `connectedWindowMs`: how old the last presence may be and still mean "connected now".
 */
export function deadlines(times: ClockTimes, settings: ClockSettings, now: number, connectedWindowMs: number): Deadline[] {
  if (times.clocksExempt || times.runningSince === null) return [];
  const out: Deadline[] = [];
  const { idle, expire, lifetime } = settings;
  if (idle && times.disconnectedAt === null && connectedNow(times, now, connectedWindowMs)) {
    const at = latest(times.runningSince, times.lastActivityAt, times.connectedSince, times.keptAliveAt) + idle.disconnectAfterMs;
    out.push({ clock: 'idle', at, warnAt: at - idle.warnMs, action: 'disconnect', periodMs: idle.disconnectAfterMs, why: idleReason(idle) });
  }
  if (expire) {
    const at = latest(times.runningSince, times.lastConnectedAt, times.keptAliveAt) + expire.afterMs;
    const verb = expire.action === 'delete' ? 'Deleted' : 'Stopped';
    out.push({ clock: 'expire', at, warnAt: at - expire.warnMs, action: expire.action, periodMs: expire.afterMs, why: `${verb}: nobody was connected for ${describeDuration(expire.afterMs)}` });
  }
  if (lifetime) {
    const at = times.runningSince.getTime() + lifetime.maxMs;
    out.push({ clock: 'lifetime', at, warnAt: at - lifetime.warnMs, action: 'stop', periodMs: lifetime.maxMs, why: `Stopped: its lifetime of ${describeDuration(lifetime.maxMs)} was reached` });
  }
  return out.sort((a, b) => a.at - b.at);
}

/** The close frame's reason and the event's text for an idle disconnect (at most 123 bytes). */
export function idleReason(idle: IdleClock): string {
  return `Disconnected after ${describeDuration(idle.disconnectAfterMs)} without ${idle.counts === 'input' ? 'input' : 'use'}`;
}

/** Deadlines whose warning window has begun and that have not passed yet, as clock → deadline. */
export function warnings(list: Deadline[], now: number): Partial<Record<ClockName, number>> {
  const out: Partial<Record<ClockName, number>> = {};
  for (const d of list) if (d.warnAt <= now && now < d.at) out[d.clock] = d.at;
  return out;
}

/** What to do now: the most final passed deadline (delete, then stop, then disconnect), or null. */
export function due(list: Deadline[], now: number): Deadline | null {
  const rank = { delete: 3, stop: 2, disconnect: 1 } as const;
  let pick: Deadline | null = null;
  for (const d of list) if (d.at <= now && (pick === null || rank[d.action] > rank[pick.action])) pick = d;
  return pick;
}
