/**
 * What the idle clocks change in a desktop, as the lifecycle's mechanism (the idle policy decides
 * when): its streams held disconnected (the route says so, every proxy replica closes its
 * WebSockets with the reason and refuses new ones) or re-armed, keep-alives, the warnings given,
 * and an admin's exemption. Times are stored; deadlines are derived from them (clocks.ts).
 */
import { eq } from 'drizzle-orm';
import type { Logger } from '@deskhub/config';
import type { Route } from '@deskhub/route-stream';
import { desktops } from '../db/schema.ts';
import { describeDuration } from '../durations.ts';
import { conflict } from '../errors.ts';
import type { ClockName, Deadline } from './clocks.ts';
import type { DesktopRoutes } from './desktop-routes.ts';
import type { DesktopJournal } from './journal.ts';
import type { LifecycleOptions } from './options.ts';
import { loadDesktop } from './views.ts';

export type ClockWarnings = Partial<Record<ClockName, number>>;

/** The sentence a warning is recorded with; `in` is how long until the deadline. */
function warningText(d: Deadline, now: number): string {
  const left = describeDuration(Math.max(0, d.at - now));
  if (d.clock === 'idle') return `Disconnects in ${left} unless someone types or moves the mouse`;
  if (d.clock === 'lifetime') return `Stops in ${left}: its lifetime of ${describeDuration(d.periodMs)} ends`;
  const verb = d.action === 'delete' ? 'Deleted' : 'Stops';
  return `${verb} in ${left}: nobody has been connected for ${describeDuration(d.periodMs - (d.at - now))}`;
}

function withoutDisconnect(route: Route): Route {
  const { disconnected: _held, ...rest } = route;
  return rest;
}

export class ClockState {
  constructor(
    private readonly options: LifecycleOptions,
    private readonly journal: DesktopJournal,
    private readonly routes: DesktopRoutes,
    private readonly logger: Logger,
  ) {}

  /** Holds the running desktop's streams disconnected with `reason`. Runs in the desktop's queue. */
  async disconnect(id: string, reason: string, signal: AbortSignal): Promise<boolean> {
    const row = await loadDesktop(this.options.db, id);
    if (!row || row.state !== 'running' || row.disconnectedAt !== null) return false;
    await this.options.db.update(desktops).set({ disconnectedAt: new Date(), disconnectReason: reason, clockWarnings: {} }).where(eq(desktops.id, id));
    await this.routes.change(id, (route) => ({ ...route, disconnected: reason }), signal);
    await this.journal.note(id, 'clock', `${reason}; the desktop keeps running. Reconnect it from deskhub.`);
    this.journal.changed(id);
    this.logger.info({ desktopId: id, reason }, 'desktop streams disconnected');
    return true;
  }

  /**
   * Pushes the idle and expire deadlines out by one period from now, and re-arms streams held
   * disconnected. `who` says who asked, for the event. Runs in the desktop's queue.
   */
  async keepAlive(id: string, who: string, signal: AbortSignal): Promise<void> {
    const row = await loadDesktop(this.options.db, id);
    if (!row || row.state !== 'running') throw conflict(`only a running desktop can be kept running (it is ${row?.state ?? 'gone'})`);
    const wasHeld = row.disconnectedAt !== null;
    await this.options.db
      .update(desktops)
      .set({ keptAliveAt: new Date(), disconnectedAt: null, disconnectReason: null, clockWarnings: {} })
      .where(eq(desktops.id, id));
    if (wasHeld) await this.routes.change(id, withoutDisconnect, signal);
    await this.journal.note(id, 'clock', wasHeld ? `reconnected by ${who}: its streams are allowed again` : `kept running by ${who}`);
    this.journal.changed(id);
  }

  /** Records the warnings whose window began (once per deadline) and forgets the ones that ended. */
  async warn(id: string, current: Deadline[], now: number): Promise<void> {
    const row = await loadDesktop(this.options.db, id);
    if (!row || row.state !== 'running') return;
    const given: ClockWarnings = row.clockWarnings ?? {};
    const next: ClockWarnings = {};
    for (const d of current) {
      if (d.warnAt > now || now >= d.at) continue;
      next[d.clock] = d.at;
      if (given[d.clock] !== d.at) await this.journal.note(id, 'clock', warningText(d, now));
    }
    for (const clock of Object.keys(given) as ClockName[]) {
      if (next[clock] === undefined) await this.journal.note(id, 'clock', `the ${clock === 'expire' ? 'expiry' : clock} warning is over`);
    }
    await this.options.db.update(desktops).set({ clockWarnings: next }).where(eq(desktops.id, id));
    this.journal.changed(id);
  }

  async exempt(id: string, exempt: boolean, signal: AbortSignal): Promise<void> {
    const row = await loadDesktop(this.options.db, id);
    if (!row || row.clocksExempt === exempt) return;
    // Exempt and held disconnected: nothing would ever re-arm it by itself, so re-arm it now.
    const rearm = exempt && row.disconnectedAt !== null;
    await this.options.db
      .update(desktops)
      .set({ clocksExempt: exempt, clockWarnings: {}, ...(rearm ? { disconnectedAt: null, disconnectReason: null } : {}) })
      .where(eq(desktops.id, id));
    if (rearm) await this.routes.change(id, withoutDisconnect, signal);
    await this.journal.note(id, 'clock', exempt ? 'an admin exempted it from the idle clocks and its lifetime' : 'an admin put it back under the idle clocks');
    this.journal.changed(id);
  }
}
