/**
 * What the UI says about the idle clocks, checked in Node: which warnings show when, the
 * countdown, the sentences, the coarse words a screen reader hears, and when the next tick is due.
 */
import t from 'tap';
import {
  activeWarnings,
  countdown,
  describePeriod,
  nextChange,
  spokenRemaining,
  spokenWarning,
  warningSentence,
  type ClocksView,
  type DeadlineView,
} from '../client/clocks.ts';

const T0 = Date.parse('2025-01-01T12:00:00.000Z');
const iso = (ms: number) => new Date(T0 + ms).toISOString();

function deadline(clock: DeadlineView['clock'], atMs: number, warnMs: number, periodSeconds: number, action: DeadlineView['action'] = clock === 'idle' ? 'disconnect' : 'stop'): DeadlineView {
  return { clock, at: iso(atMs), warnAt: iso(atMs - warnMs), action, periodSeconds };
}

function clocks(deadlines: DeadlineView[], extra: Partial<ClocksView> = {}): ClocksView {
  return { exempt: false, disconnected: null, deadlines, ...extra };
}

t.test('countdown: m:ss, rounded up, hours when long', async (t) => {
  t.equal(countdown(272_000), '4:32');
  t.equal(countdown(271_001), '4:32', 'a started second still shows');
  t.equal(countdown(600_000), '10:00');
  t.equal(countdown(900), '0:01');
  t.equal(countdown(0), '0:00');
  t.equal(countdown(-5), '0:00');
  t.equal(countdown(3_723_000), '1:02:03');
});

t.test('describePeriod says a period the way people do', async (t) => {
  t.equal(describePeriod(7200), '2 hours');
  t.equal(describePeriod(43_200), '12 hours');
  t.equal(describePeriod(1800), '30 minutes');
  t.equal(describePeriod(5400), '1 hour 30 minutes');
  t.equal(describePeriod(40), '40 seconds');
  t.equal(describePeriod(60), '1 minute');
});

t.test('a warning shows inside its window only', async (t) => {
  const c = clocks([deadline('idle', 300_000, 300_000, 1800), deadline('expire', 7_200_000, 600_000, 7200)]);
  t.same(activeWarnings(c, T0 - 1), [], 'before the window: nothing');
  const inside = activeWarnings(c, T0 + 28_000);
  t.equal(inside.length, 1);
  t.equal(inside[0]!.deadline.clock, 'idle');
  t.equal(warningSentence(inside[0]!, 'input'), 'Disconnects in 4:32 because nobody typed or moved the mouse');
  const due = activeWarnings(c, T0 + 300_500);
  t.equal(due[0]!.phase, 'due', 'past the deadline, before the server acted: "now"');
  t.equal(warningSentence(due[0]!, 'input'), 'Disconnects now because nobody typed or moved the mouse');
  t.same(activeWarnings(c, T0 + 300_000 + 3 * 60_000), [], 'long past: stale data, not shown');
  t.same(activeWarnings({ ...c, exempt: true }, T0 + 28_000), [], 'an exempt desktop has none');
});

t.test('the sentences of each clock', async (t) => {
  const at = (d: DeadlineView, now: number) => activeWarnings(clocks([d]), now)[0]!;
  t.equal(warningSentence(at(deadline('expire', 600_000, 600_000, 7200), T0 + 48_000), 'input'), 'Stops in 9:12: nobody has been connected for 2 hours');
  t.equal(warningSentence(at(deadline('expire', 600_000, 600_000, 7200, 'delete'), T0 + 48_000)), 'Deleted in 9:12: nobody has been connected for 2 hours');
  t.equal(warningSentence(at(deadline('lifetime', 720_000, 900_000, 43_200), T0)), 'Stops in 12:00: its lifetime of 12 hours ends');
  t.equal(warningSentence(at(deadline('idle', 60_000, 60_000, 1800), T0), 'traffic'), 'Disconnects in 1:00 because nobody has used it', 'a web app counts use, not typing');
});

t.test('the screen reader hears coarse steps, never the seconds', async (t) => {
  t.equal(spokenRemaining(9 * 60_000 + 12_000), 'in less than 10 minutes');
  t.equal(spokenRemaining(4 * 60_000), 'in less than 5 minutes');
  t.equal(spokenRemaining(30_000), 'in less than a minute');
  t.equal(spokenRemaining(3 * 3_600_000 + 1), 'in less than 4 hours');
  const w = activeWarnings(clocks([deadline('expire', 600_000, 600_000, 7200)]), T0 + 48_000)[0]!;
  t.equal(spokenWarning(w), 'Stops in less than 10 minutes: nobody has been connected for 2 hours.');
  // Across a whole 10-minute window the spoken text changes a handful of times.
  const texts = new Set<string>();
  for (let now = T0; now < T0 + 600_000; now += 1000) {
    const active = activeWarnings(clocks([deadline('expire', 600_000, 600_000, 7200)]), now)[0];
    if (active) texts.add(spokenWarning(active));
  }
  t.ok(texts.size <= 4, `${texts.size} different announcements in 10 minutes`);
  const life = activeWarnings(clocks([deadline('lifetime', 60_000, 60_000, 43_200)]), T0)[0]!;
  t.match(spokenWarning(life), /cannot extend it/);
});

t.test('a desktop held disconnected still warns of its expiry', async (t) => {
  const c = clocks([deadline('expire', 30_000, 30_000, 40)], { disconnected: { at: iso(-1000), reason: 'Disconnected after 30 minutes without input' } });
  t.equal(activeWarnings(c, T0 + 1000)[0]?.deadline.clock, 'expire');
});

t.test('nextChange: the next second inside a window, the window start before it', async (t) => {
  const c = clocks([deadline('idle', 300_000, 60_000, 1800)]);
  t.equal(nextChange(c, T0), 60_000, 'capped at a minute before the window');
  t.equal(nextChange(c, T0 + 230_000), 10_000, 'the window opens in 10 s');
  t.equal(nextChange(c, T0 + 250_400), 600, 'inside: when the shown second turns (0:50 until 49 s are left)');
  t.equal(nextChange(c, T0 + 250_000), 1000);
  t.equal(nextChange(clocks([]), T0), null, 'no deadline: no timer');
  t.equal(nextChange({ ...c, exempt: true }, T0), null);
});
