import t from 'tap';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const fixture = fileURLToPath(new URL('./fixtures/stopping-service.ts', import.meta.url));
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

interface Stopped {
  code: number | null;
  signal: NodeJS.Signals | null;
  lines: Array<Record<string, unknown>>;
}

/** Starts the fixture, sends `signals` once it is ready (one every 50 ms), and waits for it to exit. */
function runAndSignal(args: string[], signals: NodeJS.Signals[]): Promise<Stopped> {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: Array<Record<string, unknown>> = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    const entry = JSON.parse(line) as Record<string, unknown>;
    lines.push(entry);
    if (entry.msg === 'ready') signals.forEach((s, i) => setTimeout(() => child.kill(s), i * 50));
  });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, lines })));
}

const messages = (lines: Array<Record<string, unknown>>, msg: string) => lines.filter((l) => l.msg === msg);

t.test('SIGTERM: the signal logged, close run once (a SIGINT during it ignored), exit 0', async (t) => {
  const { code, signal, lines } = await runAndSignal([], ['SIGTERM', 'SIGINT']);
  t.equal(signal, null);
  t.equal(code, 0);
  t.same(messages(lines, 'stopping').map((l) => l.signal), ['SIGTERM']);
  t.equal(messages(lines, 'closing').length, 1);
  t.equal(messages(lines, 'error while stopping').length, 0);
});

t.test('a close that fails: the error logged, exit 1', async (t) => {
  const { code, lines } = await runAndSignal(['fail'], ['SIGINT']);
  t.equal(code, 1);
  t.same(messages(lines, 'stopping').map((l) => l.signal), ['SIGINT']);
  t.equal(messages(lines, 'closing').length, 1);
  const failed = messages(lines, 'error while stopping');
  t.equal(failed.length, 1);
  t.match(failed[0], { err: { message: 'the database would not close' } });
});

t.test('with onRepeat: a second signal hurries the close chain (exit 0); a third ends the process at once (exit 1)', async (t) => {
  const twice = await runAndSignal(['repeat'], ['SIGTERM', 'SIGTERM']);
  t.equal(twice.code, 0);
  t.same(messages(twice.lines, 'hurried').map((l) => l.signal), ['SIGTERM'], 'onRepeat called once, with the signal');
  t.equal(messages(twice.lines, 'closing').length, 1, 'the close chain ran once');
  t.ok(messages(twice.lines, 'stop asked again: hurrying').length === 1);


  const stuck = await runAndSignal(['repeat-stuck'], ['SIGTERM', 'SIGTERM', 'SIGTERM']);
  t.equal(stuck.code, 1, 'a third signal while the chain still runs: exit 1 at once');
  t.equal(messages(stuck.lines, 'stop asked a third time: exiting at once').length, 1);
});
