/**
 * Last activity: what the proxies saw (route paths to epoch ms, merged across replicas) copied
 * into desktops.last_activity_at, never moving it backwards. Policies read it; they decide.
 */
import { eq, inArray } from 'drizzle-orm';
import type { Database } from '../db/client.ts';
import { desktops } from '../db/schema.ts';

/** Returns how many desktops got a later activity time. */
export async function recordActivity(db: Database, activity: Map<string, number>): Promise<number> {
  let updated = 0;
  const paths = [...activity.keys()];
  for (let i = 0; i < paths.length; i += 500) {
    const chunk = paths.slice(i, i + 500);
    const rows = await db.select({ id: desktops.id, path: desktops.proxyPath, last: desktops.lastActivityAt }).from(desktops).where(inArray(desktops.proxyPath, chunk));
    for (const row of rows) {
      const at = activity.get(row.path)!;
      if (row.last && row.last.getTime() >= at) continue;
      await db.update(desktops).set({ lastActivityAt: new Date(at) }).where(eq(desktops.id, row.id));
      updated++;
    }
  }
  return updated;
}
