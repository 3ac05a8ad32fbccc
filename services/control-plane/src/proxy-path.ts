/**
 * Proxy paths and usernames: how a user's name and a desktop's type or label become the path
 * segment under /desktop/ (lowercase [a-z0-9-], no leading or trailing "-"), and the candidate
 * order used when a path is already taken. Uniqueness itself is the database's job.
 */

/** Longest username or label part kept in a path. */
export const MAX_PART_LENGTH = 32;

const SAFE_PATH = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;

export function isSafePathSegment(value: string): boolean {
  return SAFE_PATH.test(value);
}

/**
 * Makes a name path-safe: lowercase, accents dropped, every run of other characters one "-",
 * trimmed of "-" and cut to MAX_PART_LENGTH. Returns null when nothing usable is left
 * (e.g. "../..", "日本", "---"): the caller answers 400.
 */
export function makePathSafe(name: string): string | null {
  const folded = name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  const cut = folded.slice(0, MAX_PART_LENGTH).replace(/-+$/, '');
  return cut.length > 0 ? cut : null;
}

/**
 * Path candidates in the order they are tried: `<base>`, `<base>-2`, `<base>-3`, ...
 * `base` is `<username>-<type>` or `<username>-<label>`.
 */
export function* pathCandidates(base: string, limit = 1000): Generator<string> {
  yield base;
  for (let n = 2; n <= limit; n++) yield `${base}-${n}`;
}
