/**
 * What the proxies saw, merged across replicas, copied into the desktops row, never backwards:
 * last activity (input or traffic, per type) into last_activity_at, and presence (an open
 * WebSocket or a request) into last_connected_at, with connected_since set when presence comes
 * back after a gap longer than `gapMs` (a new connection). Policies read them; they decide.
 */
import { eq, inArray } from 'drizzle-orm';
import type { Database } from '../db/client.ts';
import { desktops } from '../db/schema.ts';

export interface Seen {
  /** route path → epoch ms of the last activity */
  activity: Map<string, number>;
  /** route path → epoch ms someone was last connected */
  presence: Map<string, number>;
}

/** Returns how many desktops got a later time. */
export async function recordActivity(db: Database, seen: Seen, gapMs: number): Promise<number> {
  let updated = 0;
  const paths = [...new Set([...seen.activity.keys(), ...seen.presence.keys()])];
  for (let i = 0; i < paths.length; i += 500) {
    const chunk = paths.slice(i, i + 500);
    const rows = await db
      .select({ id: desktops.id, path: desktops.proxyPath, last: desktops.lastActivityAt, connected: desktops.lastConnectedAt })
      .from(desktops)
      .where(inArray(desktops.proxyPath, chunk));
    for (const row of rows) {
      const set: Partial<typeof desktops.$inferInsert> = {};
      const at = seen.activity.get(row.path);
      if (at !== undefined && (!row.last || row.last.getTime() < at)) set.lastActivityAt = new Date(at);
      const present = seen.presence.get(row.path);
      if (present !== undefined && (!row.connected || row.connected.getTime() < present)) {
        set.lastConnectedAt = new Date(present);
        if (!row.connected || present - row.connected.getTime() > gapMs) set.connectedSince = new Date(present);
      }
      if (Object.keys(set).length === 0) continue;
      await db.update(desktops).set(set).where(eq(desktops.id, row.id));
      updated++;
    }
  }
  return updated;
}
