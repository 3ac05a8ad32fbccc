/**
 * A desktop's history: every step of its life is an event in desktop_events (the UI follows them
 * live), and every state change is one too, written in the same transaction as the state.
 */
import type { EventEmitter } from 'node:events';
import { eq } from 'drizzle-orm';
import type { Logger } from '@deskhub/config';
import type { Database, Queryable } from '../db/client.ts';
import { desktopEvents, desktops, type DesktopState } from '../db/schema.ts';
import { eventView, type DesktopEventView } from './views.ts';

const STATE_TEXT: Record<DesktopState, string> = {
  creating: 'Creating the desktop',
  starting: 'Starting the desktop',
  running: 'Ready',
  stopping: 'Stopping',
  stopped: 'Stopped',
  failed: 'Failed',
};

/** What the lifecycle tells listeners: each recorded event, and that a desktop changed. */
export type LifecycleEvents = { event: [desktopId: string, event: DesktopEventView]; change: [desktopId: string]; claimed: [desktopId: string, typeId: string] };

export class DesktopJournal {
  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
    private readonly emitter: EventEmitter<LifecycleEvents>,
  ) {}

  async record(q: Queryable, desktopId: string, kind: string, message: string, progress?: number, state?: DesktopState): Promise<void> {
    const [row] = await q
      .insert(desktopEvents)
      .values({ desktopId, kind, message: storableText(message), progress: progress ?? null, state: state ?? null })
      .returning();
    if (row) this.emitter.emit('event', desktopId, eventView(row));
  }

  /** Records an event, tolerating a desktop deleted meanwhile. */
  async note(desktopId: string, kind: string, message: string, progress?: number): Promise<void> {
    try {
      await this.record(this.db, desktopId, kind, message, progress);
    } catch (err) {
      this.logger.debug({ desktopId, err: (err as Error).message }, 'event not recorded');
    }
  }

  async setState(id: string, state: DesktopState, reason: string | null, extra: Partial<typeof desktops.$inferInsert> = {}): Promise<void> {
    await this.db.transaction((tx) => this.setStateIn(tx, id, state, reason, extra));
    this.changed(id);
  }

  /** The state change inside the caller's transaction; the caller calls changed(id) after commit. */
  async setStateIn(q: Queryable, id: string, state: DesktopState, reason: string | null, extra: Partial<typeof desktops.$inferInsert> = {}): Promise<void> {
    await q.update(desktops).set({ state, reason: reason === null ? null : storableText(reason), failure: null, updatedAt: new Date(), ...extra }).where(eq(desktops.id, id));
    await this.record(q, id, 'state', reason ?? STATE_TEXT[state], undefined, state);
  }

  changed(id: string): void {
    this.emitter.emit('change', id);
  }
}

/**
 * Text fit for a Postgres text column and a person: reasons and events quote a desktop's own
 * output, which may hold any bytes. NUL cannot be stored at all (Postgres refuses the whole
 * update, so a desktop that printed one could never be marked failed), and other control
 * characters (terminal escapes, Docker's stream headers) only garble what people read: both go,
 * tabs and line breaks stay.
 */
export function storableText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001b\[[0-9;?]*[ -/]*[@-~]/g, '').replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, '');
}
