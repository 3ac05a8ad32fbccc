/** What the Homes view says about a home, as pure functions (checked in Node by test/homes.test.ts). */

const UNITS = ['kB', 'MB', 'GB', 'TB', 'PB'];

/** Bytes as people read them (decimal units, as `docker system df` prints them): "740 bytes", "4.1 kB", "512 MB"; null is "unknown". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes) || bytes < 0) return 'unknown';
  if (bytes < 1000) return bytes === 1 ? '1 byte' : `${bytes} bytes`;
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 999.95 && unit < UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${UNITS[unit]}`;
}

/** Who shares a home: every desktop of the types naming it (scope user), or one desktop name (scope desktop). */
export function homeScope(home: { scope: 'user' | 'desktop'; desktopName: string | null }, admin = false): string {
  if (home.scope === 'desktop') return `Only the desktop named “${home.desktopName ?? '?'}”`;
  return admin ? "Every desktop of its owner's that keeps it" : 'Every desktop of yours that keeps it';
}
