/**
 * The one size grammar of the catalog (docker's: bytes, or a k, m or g unit, either case): the
 * catalog's schema checks it at start-up, runtimes read it as bytes. A module of its own because
 * both sides import it (the catalog imports the runtime registry, so a runtime cannot import the
 * catalog's values).
 */
export const SIZE = /^([0-9]+(?:\.[0-9]+)?)([bkmgBKMG]?)$/;

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** "512m", "2g", "1048576" as bytes; `what` names the setting in the error. */
export function parseSize(size: string, what = 'size'): number {
  const m = SIZE.exec(size);
  if (!m) throw new Error(`${what}: "${size}" is not a size like 512m or 2g`);
  return Math.round(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!);
}
