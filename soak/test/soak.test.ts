/**
 * Proves the soak harness and the scenarios that restart only the soak's own processes (a proxy
 * replica, the control plane, also mid-create, a private Redis with its data lost, a private
 * Postgres cluster), in quick mode, with every count as the design promises. The Docker Engine
 * restarts and the long idle-WebSocket soak run only in the full `pnpm soak`: tap runs test files
 * in parallel, and the shared dockerd must never restart under them.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import type { SoakResults } from '../lib/report.ts';

const repoRoot = path.resolve(import.meta.dirname, '../..');

function soak(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  // tap's process-info hook adds itself to NODE_OPTIONS of every process spawned from here; through
  // the harness it would reach the services. A shell drops it before node starts.
  const quoted = args.map((a) => `'${a}'`).join(' ');
  const child = spawn('sh', ['-c', `unset NODE_OPTIONS; exec "${process.execPath}" --import tsx soak/run.ts ${quoted}`], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}

t.test('bad input gets a clear error and exit code 2', async (t) => {
  const cases = [
    [['--scenarios', 'proxy-kil'], /--scenarios: unknown scenario "proxy-kil" \(known: proxy-kill,/],
    [['--sockets', '0'], /--sockets: expected a whole number from 1 to 100000, got "0"/],
    [['--minutes', 'ten'], /--minutes: expected a whole number/],
    [['--skip', 'proxy-kill', '--scenarios', 'proxy-kill'], /no scenario left to run/],
    [['--frobnicate'], /Unknown option '--frobnicate'/],
  ] as const;
  const runs = await Promise.all(cases.map(([args]) => soak([...args])));
  cases.forEach(([args, message], i) => {
    t.equal(runs[i]!.code, 2, `${args.join(' ')}: exit code 2`);
    t.match(runs[i]!.stderr, message, `${args.join(' ')}: says what is wrong`);
  });
});

t.test('pnpm soak --quick: every scenario that restarts no shared daemon keeps its promise', { timeout: 240_000 }, async (t) => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'deskhub-soak-test-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const scenarios = ['proxy-kill', 'control-plane-kill', 'control-plane-kill-mid-create', 'redis-data-loss', 'postgres-restart', 'idle-websockets'];
  const r = await soak(['--quick', '--scenarios', scenarios.join(','), '--out', out]);
  const results = JSON.parse(readFileSync(path.join(out, 'latest.json'), 'utf8')) as SoakResults;
  t.same(results.errors, [], 'every part ran');
  t.same(results.scenarios.map((s) => s.name), scenarios.slice(0, -1), 'every chosen scenario ran, no dockerd restart among them');
  for (const s of results.scenarios) {
    t.ok(s.requests > 0, `${s.name}: desktop traffic flowed (${s.requests} requests)`);
    t.ok(s.websockets > 0, `${s.name}: WebSockets were held (${s.websockets})`);
    t.same(
      { lost: s.lost, dropped: s.dropped, staleRoutes: s.staleRoutes, orphanContainers: s.orphanContainers, orphanProcesses: s.orphanProcesses, wrongStates: s.wrongStates, problems: s.problems },
      { lost: 0, dropped: 0, staleRoutes: 0, orphanContainers: 0, orphanProcesses: 0, wrongStates: 0, problems: [] },
      `${s.name}: nothing lost or left behind`,
    );
  }
  const proxyKill = results.scenarios.find((s) => s.name === 'proxy-kill')!;
  t.ok(proxyKill.lostExpected > 0 && proxyKill.droppedExpected > 0, "killing replica A is seen: A's own requests and WebSockets end");
  t.ok(results.idle && results.idle.samples.length === 4 && results.idle.flat, 'idle WebSockets through the TLS upstream were sampled and stayed flat');
  t.equal(r.code, 0, `exit code 0${r.code === 0 ? '' : `; stderr: ${r.stderr.slice(-2000)}`}`);
  t.match(readFileSync(path.join(out, 'latest.md'), 'utf8'), /\| proxy-kill \| \d+ \| 0 \|/, 'the Markdown table is written');
});
