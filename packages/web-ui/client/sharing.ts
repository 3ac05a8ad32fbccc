/**
 * What the sharing UI says, as pure functions (tested in Node, test/sharing.test.ts): who is
 * connected now, a share's mode and end, and the expiry choices a link or a share offers.
 */

export type ShareMode = 'view' | 'control';

/** One share or link of a desktop (GET /api/desktops/:id/shares). */
export interface Share {
  id: string;
  kind: 'user' | 'link';
  /** kind user: who it is shared with. */
  username: string | null;
  mode: ShareMode;
  createdAt: string;
  expiresAt: string | null;
  /** kind link: how many users opened it. */
  visitors: number;
}

/** Someone with the desktop open now, on any proxy replica. */
export interface Connected {
  username: string;
  role: 'owner' | ShareMode;
  lastSeenAt: string;
}

/** GET /api/desktops/:id/shares. */
export interface SharingView {
  available: boolean;
  /** Why it cannot be shared here (available false). */
  reason: string | null;
  /** Its type has a read-only user, so it can be shared for viewing. */
  viewAllowed: boolean;
  /** Links may give control (SHARE_LINK_CONTROL). */
  linkControl: boolean;
  linkDefaultSeconds: number;
  linkMaxSeconds: number;
  shares: Share[];
  connected: Connected[];
}

/** A desktop someone shares with the caller (GET /api/shared, POST /api/shared/links). */
export interface SharedDesktop {
  desktopId: string;
  proxyPath: string;
  owner: string;
  name: string | null;
  type: string;
  state: string;
  mode: ShareMode;
  via: 'user' | 'link';
  shareId: string;
  expiresAt: string | null;
  /** Where a browser opens it: the hand-off to the desktop's own origin. */
  openUrl: string;
}

export const MODE_LABEL: Record<ShareMode, string> = { view: 'View only', control: 'Control' };

/** "bob", "bob and carol", "bob, carol and dave". */
export function listNames(names: readonly string[]): string {
  if (names.length <= 1) return names[0] ?? '';
  return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}

/**
 * The banner over an open desktop while others have it open: "bob is watching · carol has
 * control". The owner (whoever is looking) is left out; each name once, with its strongest role.
 * Empty when nobody else is there.
 */
export function connectedSummary(connected: readonly Connected[]): string {
  const roles = new Map<string, ShareMode>();
  for (const c of connected) {
    if (c.role === 'owner') continue;
    if (roles.get(c.username) !== 'control') roles.set(c.username, c.role);
  }
  const watching = [...roles].filter(([, r]) => r === 'view').map(([n]) => n);
  const control = [...roles].filter(([, r]) => r === 'control').map(([n]) => n);
  const parts: string[] = [];
  if (watching.length > 0) parts.push(`${listNames(watching)} ${watching.length === 1 ? 'is' : 'are'} watching`);
  if (control.length > 0) parts.push(`${listNames(control)} ${control.length === 1 ? 'has' : 'have'} control`);
  return parts.join(' · ');
}

/** "7 days", "1 hour", "90 minutes", "45 seconds": a duration as the choices and limits say it. */
export function describeSeconds(seconds: number): string {
  const units: [string, number][] = [
    ['day', 86400],
    ['hour', 3600],
    ['minute', 60],
  ];
  for (const [unit, size] of units) {
    if (seconds >= size && seconds % size === 0) {
      const n = seconds / size;
      return `${n} ${unit}${n === 1 ? '' : 's'}`;
    }
  }
  if (seconds >= 60) return describeSeconds(Math.round(seconds / 60) * 60);
  return `${seconds} second${seconds === 1 ? '' : 's'}`;
}

/** The API's duration for a number of seconds: "2h", "30m", "7d" (the largest whole unit). */
export function durationParam(seconds: number): string {
  if (seconds % 86400 === 0) return `${seconds / 86400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

export interface ExpiryChoice {
  /** What the form sends as `expiresIn`; "" for no end. */
  value: string;
  label: string;
}

const STEPS = [15 * 60, 3600, 8 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400];

/**
 * A link's expiry choices: the usual steps up to `maxSeconds`, the server's default among them
 * (and the maximum itself), shortest first. A link always ends.
 */
export function linkExpiryChoices(defaultSeconds: number, maxSeconds: number): ExpiryChoice[] {
  const seconds = new Set(STEPS.filter((s) => s <= maxSeconds));
  if (defaultSeconds > 0 && defaultSeconds <= maxSeconds) seconds.add(defaultSeconds);
  if (maxSeconds > 0) seconds.add(maxSeconds);
  return [...seconds].sort((a, b) => a - b).map((s) => ({ value: durationParam(s), label: describeSeconds(s) }));
}

/** A named share's expiry choices: none (until revoked) first, then the usual steps. */
export function shareExpiryChoices(): ExpiryChoice[] {
  return [{ value: '', label: 'Until revoked' }, ...STEPS.map((s) => ({ value: durationParam(s), label: describeSeconds(s) }))];
}

/** Who a share is for, as its row says it. */
export function shareWho(share: Share): string {
  if (share.kind === 'user') return share.username ?? 'a user';
  const opened = share.visitors === 0 ? 'not opened yet' : `opened by ${share.visitors} ${share.visitors === 1 ? 'person' : 'people'}`;
  return `Link (${opened})`;
}
