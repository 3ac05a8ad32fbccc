/**
 * Users: found by sign-in provider and subject, created on first sign-in with a unique,
 * path-safe username (`alice`, then `alice-2`... when another provider's alice came first).
 */
import { and, eq, inArray, not, sql } from 'drizzle-orm';
import type { Database } from './db/client.ts';
import { users } from './db/schema.ts';
import { badRequest } from './errors.ts';
import { withoutHiddenCharacters } from './names.ts';
import { makePathSafe, pathCandidates } from './proxy-path.ts';

export interface User {
  id: string;
  username: string;
  roles: string[];
}

export interface Identity {
  provider: string;
  subject: string;
  /** The name the provider suggests (preferred_username, login, the email's local part...). */
  preferredName: string;
  displayName?: string | null;
}

/** The provider's display name as others may see it: hidden characters dropped, blank as none. */
function displayNameOf(identity: Identity): string | null {
  const name = withoutHiddenCharacters(identity.displayName ?? '').trim();
  return name === '' ? null : name;
}

/** Returns the user for this identity, creating it on first sign-in. 400 when no usable name can be made. */
export async function signInUser(db: Database, identity: Identity): Promise<User> {
  const found = await db
    .update(users)
    .set({ lastLoginAt: new Date() })
    .where(and(eq(users.provider, identity.provider), eq(users.subject, identity.subject)))
    .returning();
  if (found[0]) return { id: found[0].id, username: found[0].username, roles: found[0].roles };
  const base = makePathSafe(identity.preferredName);
  if (!base) throw badRequest(`username "${identity.preferredName}" cannot be made into a path: use letters, digits and "-"`);
  for (const candidate of pathCandidates(base)) {
    const [inserted] = await db
      .insert(users)
      .values({ provider: identity.provider, subject: identity.subject, username: candidate, displayName: displayNameOf(identity), lastLoginAt: new Date() })
      .onConflictDoNothing()
      .returning();
    if (inserted) return { id: inserted.id, username: inserted.username, roles: inserted.roles };
    // Either the name is taken, or this same identity signed in concurrently: then use that row.
    const [same] = await db.select().from(users).where(and(eq(users.provider, identity.provider), eq(users.subject, identity.subject)));
    if (same) return { id: same.id, username: same.username, roles: same.roles };
  }
  throw badRequest(`no free username left for "${base}"`);
}

/**
 * Gives the `admin` role to the usernames in ADMIN_USERS, and to whom the provider's ADMIN_CLAIM
 * says is one (`byClaim`), and takes it from everyone else, at each sign-in: a changed list, or a
 * user leaving the admin group, applies at the next sign-in.
 */
export async function applyAdminRole(db: Database, user: User, adminUsernames: string[], byClaim = false): Promise<User> {
  const admin = byClaim || adminUsernames.includes(user.username);
  if (admin === user.roles.includes('admin')) return user;
  const roles = admin ? [...user.roles, 'admin'] : user.roles.filter((r) => r !== 'admin');
  await db.update(users).set({ roles, updatedAt: new Date() }).where(eq(users.id, user.id));
  return { ...user, roles };
}

/**
 * Brings stored roles in line with ADMIN_USERS at start-up, so a change to the list applies at
 * once, not at each user's next sign-in (an admin-scoped API token of someone taken off the
 * list stops working at the restart). Listed users become admins. Without ADMIN_CLAIM, everyone
 * else loses the role; with it, the others keep what their last sign-in's claim gave them (the
 * claim is only known at sign-in). Returns how many users changed.
 */
export async function syncAdminRoles(db: Database, adminUsernames: string[], adminClaimConfigured: boolean): Promise<{ granted: number; revoked: number }> {
  const hasAdmin = sql`'admin' = any(${users.roles})`;
  const granted = adminUsernames.length === 0
    ? []
    : await db
        .update(users)
        .set({ roles: sql`array_append(${users.roles}, 'admin')`, updatedAt: new Date() })
        .where(and(inArray(users.username, adminUsernames), not(hasAdmin)))
        .returning({ id: users.id });
  const unlisted = adminUsernames.length === 0 ? hasAdmin : and(hasAdmin, not(inArray(users.username, adminUsernames)));
  const revoked = adminClaimConfigured
    ? []
    : await db
        .update(users)
        .set({ roles: sql`array_remove(${users.roles}, 'admin')`, updatedAt: new Date() })
        .where(unlisted)
        .returning({ id: users.id });
  return { granted: granted.length, revoked: revoked.length };
}
