/**
 * A desktop's idle clocks as the UI says them: which warnings are showing now, the countdown,
 * the sentence, and what a screen reader is told (coarsely, so it is not announced every
 * second). Pure functions with no browser globals, so they are tested in Node as well; the
 * control plane computes the deadlines (its lifecycle/clocks.ts), the UI only counts down to them.
 */

export type ClockName = 'idle' | 'expire' | 'lifetime';

/**
 * One deadline of a running desktop, as the API shows it (soonest first). The shapes repeat the
 * control plane's DeadlineView/ClocksView (lifecycle/views.ts) on purpose: the browser code imports
 * nothing from the rest of the repo, its contract is the HTTP API.
 */
export interface DeadlineView {
  clock: ClockName;
  /** When it acts (ISO 8601). */
  at: string;
  /** When its warning starts. */
  warnAt: string;
  action: 'disconnect' | 'stop' | 'delete';
  /** The clock's period in seconds (disconnectAfter, expire after, maxLifetime). */
  periodSeconds: number;
}

export interface ClocksView {
  /** An admin took it out of every clock. */
  exempt: boolean;
  /** Its streams are held disconnected after an idle period, until a keepalive re-arms them. */
  disconnected: { at: string; reason: string } | null;
  deadlines: DeadlineView[];
}

/** A deadline that is being warned about: inside its window (`warn`), or just passed and not yet acted on (`due`). */
export interface ActiveWarning {
  deadline: DeadlineView;
  phase: 'warn' | 'due';
  /** ms until it acts (0 once due). */
  remainingMs: number;
}

/**
 * How long after a deadline the UI keeps saying "now" while the server gets round to it (its
 * policy runs every CLOCKS_INTERVAL_MS); a deadline this far past is stale data and not shown.
 */
export const DUE_GRACE_MS = 2 * 60_000;

function time(iso: string): number {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? NaN : t;
}

/**
 * The warnings to show at `now`, soonest first. A desktop held disconnected has no idle deadline
 * (nothing left to disconnect), but its expiry and lifetime still run and are still warned about.
 */
export function activeWarnings(clocks: ClocksView | null | undefined, now: number): ActiveWarning[] {
  if (!clocks || clocks.exempt) return [];
  const out: ActiveWarning[] = [];
  for (const deadline of clocks.deadlines ?? []) {
    const at = time(deadline.at);
    const warnAt = time(deadline.warnAt);
    if (Number.isNaN(at) || Number.isNaN(warnAt) || now < warnAt) continue;
    if (now < at) out.push({ deadline, phase: 'warn', remainingMs: at - now });
    else if (now - at < DUE_GRACE_MS) out.push({ deadline, phase: 'due', remainingMs: 0 });
  }
  return out.sort((a, b) => time(a.deadline.at) - time(b.deadline.at));
}

/** 272_000 ms → "4:32"; an hour or more → "1:02:03". Whole seconds rounded up, so it reads 0:01 until it is over. */
export function countdown(ms: number): string {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

const WORDS: Array<[seconds: number, word: string]> = [
  [86_400, 'day'],
  [3600, 'hour'],
  [60, 'minute'],
  [1, 'second'],
];

/** 7200 → "2 hours", 5400 → "1 hour 30 minutes", 40 → "40 seconds" (the control plane's describeDuration). */
export function describePeriod(seconds: number): string {
  const parts: string[] = [];
  let rest = Math.max(0, Math.round(seconds));
  for (const [unit, word] of WORDS) {
    const n = Math.floor(rest / unit);
    if (n === 0) continue;
    parts.push(`${n} ${word}${n === 1 ? '' : 's'}`);
    rest -= n * unit;
  }
  return parts.length === 0 ? 'less than a second' : parts.slice(0, 2).join(' ');
}

/** What a warning says, in pieces: "<lead> <countdown><reason>". */
export interface WarningWords {
  /** "Disconnects in", "Stops in", "Deleted in" (or "... now" once due: then no countdown). */
  lead: string;
  /** Follows the countdown: " because nobody typed or moved the mouse", ": nobody has been connected for 2 hours". */
  reason: string;
  /** Whether keepalive can push it out: the lifetime cannot be extended. */
  keepable: boolean;
}

export function warningWords(w: Pick<ActiveWarning, 'deadline' | 'phase'>, activity?: 'input' | 'traffic' | null): WarningWords {
  const d = w.deadline;
  const verb = d.clock === 'idle' ? 'Disconnects' : d.action === 'delete' ? 'Deleted' : 'Stops';
  const lead = w.phase === 'due' ? `${verb} now` : `${verb} in`;
  if (d.clock === 'idle') {
    // Types whose activity is traffic (web apps) count requests, not key presses.
    const reason = activity === 'traffic' ? ' because nobody has used it' : ' because nobody typed or moved the mouse';
    return { lead, reason, keepable: true };
  }
  const period = describePeriod(d.periodSeconds);
  if (d.clock === 'lifetime') return { lead, reason: `: its lifetime of ${period} ends`, keepable: false };
  return { lead, reason: `: nobody has been connected for ${period}`, keepable: true };
}

/** The whole sentence as it is shown: "Stops in 9:12: nobody has been connected for 2 hours". */
export function warningSentence(w: ActiveWarning, activity?: 'input' | 'traffic' | null): string {
  const words = warningWords(w, activity);
  return w.phase === 'due' ? `${words.lead}${words.reason}` : `${words.lead} ${countdown(w.remainingMs)}${words.reason}`;
}

const SPOKEN_STEPS_MIN = [1, 2, 5, 10, 15, 30, 60];

/**
 * The time left as a screen reader hears it: coarse steps ("less than 5 minutes"), so a polite
 * live region holding it changes a handful of times in a warning window, never every second.
 */
export function spokenRemaining(ms: number): string {
  if (ms <= 0) return 'now';
  const minutes = ms / 60_000;
  for (const step of SPOKEN_STEPS_MIN) {
    if (minutes <= step) return step === 1 ? 'in less than a minute' : `in less than ${step} minutes`;
  }
  const hours = Math.ceil(minutes / 60);
  return `in less than ${hours} hours`;
}

/** The live region's sentence for one warning: "Stops in less than 10 minutes: nobody has been connected for 2 hours." */
export function spokenWarning(w: ActiveWarning, activity?: 'input' | 'traffic' | null): string {
  const words = warningWords(w, activity);
  const verb = words.lead.replace(/ (in|now)$/, '');
  const extra = words.keepable ? '' : ' Keeping it running cannot extend it.';
  return `${verb} ${spokenRemaining(w.remainingMs)}${words.reason}.${extra}`;
}

/**
 * ms until what is shown next changes (a warning window opens, the countdown's second turns, a
 * due warning is dropped), at most `capMs` so a sleeping laptop or a changed clock catches up;
 * null when no deadline will ever change what is shown.
 */
export function nextChange(clocks: ClocksView | null | undefined, now: number, capMs = 60_000): number | null {
  if (!clocks || clocks.exempt) return null;
  let next = Infinity;
  for (const d of clocks.deadlines ?? []) {
    const at = time(d.at);
    const warnAt = time(d.warnAt);
    if (Number.isNaN(at) || Number.isNaN(warnAt)) continue;
    if (now < warnAt) next = Math.min(next, warnAt - now);
    else if (now < at) {
      const remaining = at - now;
      next = Math.min(next, remaining - (Math.ceil(remaining / 1000) - 1) * 1000);
    } else if (now - at < DUE_GRACE_MS) next = Math.min(next, DUE_GRACE_MS - (now - at));
  }
  return next === Infinity ? null : Math.max(1, Math.min(capMs, Math.ceil(next)));
}

/**
 * The difference between the server's clock and this browser's, from the `Date` header of API
 * answers: deadlines are the server's times, so a browser whose clock is off would count down
 * wrongly. The header has whole seconds, so differences under 2 s are taken as none.
 */
let serverOffsetMs = 0;

export function noteServerDate(header: string | null, receivedAt: number): void {
  if (!header) return;
  const server = Date.parse(header);
  if (Number.isNaN(server)) return;
  // The header is truncated to the second: on average half a second behind.
  const offset = server + 500 - receivedAt;
  serverOffsetMs = Math.abs(offset) < 2000 ? 0 : offset;
}

/** Now, on the server's clock (as far as the UI can tell). */
export function serverNow(): number {
  return Date.now() + serverOffsetMs;
}
