/**
 * The one duration grammar of the catalog and the environment: one or more number-unit pairs,
 * units s, m, h, d ("90s", "30m", "1h30m", "2d"). Read once at start-up, as milliseconds.
 * `describeDuration` says a duration back the way people do ("30 minutes", "2 hours").
 */
export const DURATION = /^(?:[0-9]+(?:\.[0-9]+)?[smhd])+$/;

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "30m", "1h30m" as milliseconds; `what` names the setting in the error. */
export function parseDuration(text: string, what = 'duration'): number {
  const trimmed = text.trim();
  if (!DURATION.test(trimmed)) throw new Error(`${what}: "${text}" is not a duration like 90s, 30m, 2h or 1h30m`);
  let ms = 0;
  for (const m of trimmed.matchAll(/([0-9]+(?:\.[0-9]+)?)([smhd])/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  ms = Math.round(ms);
  if (ms <= 0) throw new Error(`${what}: "${text}" must be longer than zero`);
  return ms;
}

const WORDS: Array<[ms: number, one: string]> = [
  [86_400_000, 'day'],
  [3_600_000, 'hour'],
  [60_000, 'minute'],
  [1000, 'second'],
];

/** 1_800_000 → "30 minutes", 5_400_000 → "1 hour 30 minutes", 2_000 → "2 seconds". */
export function describeDuration(ms: number): string {
  const parts: string[] = [];
  let rest = Math.round(ms / 1000) * 1000;
  for (const [unit, word] of WORDS) {
    const n = Math.floor(rest / unit);
    if (n === 0) continue;
    parts.push(`${n} ${word}${n === 1 ? '' : 's'}`);
    rest -= n * unit;
  }
  return parts.length === 0 ? 'less than a second' : parts.slice(0, 2).join(' ');
}
