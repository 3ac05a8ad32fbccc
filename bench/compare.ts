/**
 * `node --import tsx bench/compare.ts REV`: the deskhub proxy at git revision REV against the working tree, side
 * by side on this machine, for measuring what a change did. On a shared 2-core machine absolute
 * figures move by up to 2x between hours, so the two versions run at the same time instead of
 * one after the other:
 *
 * - CPU per small request: each proxy gets its own `wrk -t1 -c25` on `/small`, both at once;
 *   utime+stime of each process over the run ÷ the requests its wrk counted. Per round and median.
 * - 1 MiB response bodies (wrk -t1 -c8), alternating: MB/s and proxy CPU per body.
 * - 64 KiB WebSocket frames (echo, 8 in flight): alternating streams (two at once would compete
 *   for the same upstream and client); frames/s and proxy CPU per frame.
 *
 * Same set-up as `pnpm bench` (bench/lib/deskhub.ts): one Redis, the route stream, bench/upstream.ts.
 * REV's services/proxy is extracted with `git archive` into a temp tree that uses this checkout's
 * node_modules. Both sides run through tsx; --compiled runs the working tree's compiled dist/ instead (as
 * deployed). Options: --rounds N (7), --seconds S (5), and --old-env / --new-env KEY=VALUE
 * (repeatable) to start one side with other environment, e.g. the same revision under two
 * allocators: `bench:compare HEAD --old-env LD_PRELOAD= --new-env MALLOC_CONF=dirty_decay_ms:0`.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, httpGet, spawnService, waitUntil, type Service } from './lib/child.ts';
import { startDeskhubStream } from './lib/deskhub.ts';
import { treeCpuSeconds } from './lib/proc.ts';
import { median } from './lib/stats.ts';
import { runWrk } from './lib/wrk.ts';
import { frameStream } from './lib/ws-load.ts';

const repoRoot = path.resolve(import.meta.dirname, '..');
const { values: args, positionals } = parseArgs({
  options: {
    rounds: { type: 'string', default: '7' },
    seconds: { type: 'string', default: '5' },
    'old-env': { type: 'string', multiple: true, default: [] },
    compiled: { type: 'boolean', default: false },
    'new-env': { type: 'string', multiple: true, default: [] },
  },
  allowPositionals: true,
});
const rev = positionals[0];
const rounds = Number(args.rounds);
const seconds = Number(args.seconds);
if (!rev || !Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(seconds) || seconds < 1) {
  process.stderr.write('usage: node --import tsx bench/compare.ts REV [--rounds N] [--seconds S] [--old-env KEY=VALUE]... [--new-env KEY=VALUE]... [--compiled]\n');
  process.exit(2);
}

/** `KEY=VALUE` settings of one side; the value may hold `=` and `,` (MALLOC_CONF does). */
function envOf(flag: string, settings: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const setting of settings) {
    const eq = setting.indexOf('=');
    if (eq <= 0) {
      process.stderr.write(`bench:compare: ${flag} expects KEY=VALUE, got "${setting}"\n`);
      process.exit(2);
    }
    env[setting.slice(0, eq)] = setting.slice(eq + 1);
  }
  return env;
}
const oldEnv = envOf('--old-env', args['old-env']);
const newEnv = envOf('--new-env', args['new-env']);

/** REV's proxy in a temp tree; returns its main.ts. */
function extract(dir: string): string {
  const tar = execFileSync('git', ['-C', repoRoot, 'archive', rev!, 'services/proxy/src', 'services/proxy/package.json']);
  execFileSync('tar', ['-x', '-C', dir], { input: tar });
  symlinkSync(path.join(repoRoot, 'services/proxy/node_modules'), path.join(dir, 'services/proxy/node_modules'));
  return path.join(dir, 'services/proxy/src/main.ts');
}

function line(text: string): void {
  process.stdout.write(text + '\n');
}

async function main(): Promise<void> {
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'deskhub-compare-'));
  const tree = path.join(runDir, 'rev');
  mkdirSync(tree);
  const oldMain = extract(tree);
  const services: Service[] = [];
  const stream = await startDeskhubStream(repoRoot, runDir);
  try {
    const upstream = spawnService({ name: 'upstream', command: process.execPath, args: ['--import', 'tsx', path.join(repoRoot, 'bench/upstream.ts')], cwd: repoRoot, logDir: runDir });
    services.push(upstream);
    const upstreamPort = Number((await upstream.firstJsonLine).port);
    await stream.put('bench', upstreamPort);
    const proxies: { label: string; service: Service; base: string }[] = [];
    const sides = [
      [rev! + (args['old-env'].length ? ` (${args['old-env'].join(' ')})` : ''), oldMain, oldEnv],
      // Both through tsx from their sources, the same loader on each side whatever REV's build was;
      // --compiled: the working tree as deployed (its dist/, no loader) against REV through tsx.
      ['working tree' + (args.compiled ? ', compiled' : '') + (args['new-env'].length ? ` (${args['new-env'].join(' ')})` : ''), args.compiled ? undefined : path.join(repoRoot, 'services/proxy/src/main.ts'), newEnv],
    ] as const;
    for (const [label, entry, env] of sides) {
      const port = await freePort();
      const service = stream.startReplica({ name: `proxy-${proxies.length}`, port, metricsPort: await freePort(), upstreamPort, main: entry, env });
      const base = `http://127.0.0.1:${port}/desktop/bench/`;
      await waitUntil(service, `${label} serving`, async () => (await httpGet(`${base}small`)).status === 200, 60_000);
      proxies.push({ label, service, base });
    }
    for (const p of proxies) await runWrk({ url: `${p.base}small`, threads: 1, connections: 10, seconds: 2, runDir });

    line(`CPU per small request, both proxies loaded at once (wrk -t1 -c25 -d${seconds}s each); load average ${os.loadavg()[0]!.toFixed(2)}`);
    const cpu: number[][] = proxies.map(() => []);
    for (let round = 1; round <= rounds; round++) {
      const before = proxies.map((p) => treeCpuSeconds(p.service.pid));
      const results = await Promise.all(proxies.map((p) => runWrk({ url: `${p.base}small`, threads: 1, connections: 25, seconds, runDir })));
      const us = proxies.map((p, i) => ((treeCpuSeconds(p.service.pid) - before[i]!) / results[i]!.requests) * 1e6);
      us.forEach((v, i) => cpu[i]!.push(v));
      line(`  round ${round}: ${proxies.map((p, i) => `${p.label} ${us[i]!.toFixed(1)} us (${results[i]!.requests} requests)`).join(' | ')}`);
    }
    line(`  median: ${proxies.map((p, i) => `${p.label} ${median(cpu[i]!).toFixed(1)} us`).join(' | ')}`);

    // Alternating, like the frames: two 1 MiB streams at once would share one upstream and the cores.
    line(`1 MiB response bodies (wrk -t1 -c8 -d${seconds}s), alternating`);
    for (let round = 1; round <= Math.min(rounds, 3); round++) {
      const parts: string[] = [];
      for (const p of proxies) {
        const c0 = treeCpuSeconds(p.service.pid);
        const r = await runWrk({ url: `${p.base}mib`, threads: 1, connections: 8, seconds, runDir });
        const perBody = ((treeCpuSeconds(p.service.pid) - c0) / r.requests) * 1e3;
        parts.push(`${p.label} ${(r.requests / seconds).toFixed(0)} MB/s, ${perBody.toFixed(2)} ms CPU per body`);
      }
      line(`  round ${round}: ${parts.join(' | ')}`);
    }

    line(`64 KiB WebSocket frames, 8 in flight, ${seconds} s each, alternating`);
    for (let round = 1; round <= Math.min(rounds, 3); round++) {
      const parts: string[] = [];
      for (const p of proxies) {
        const c0 = treeCpuSeconds(p.service.pid);
        const r = await frameStream(`${p.base.replace('http', 'ws')}frames`, seconds, 8);
        const perFrame = ((treeCpuSeconds(p.service.pid) - c0) / r.frames) * 1e6;
        parts.push(`${p.label} ${r.framesPerSecond.toFixed(0)} frames/s, ${perFrame.toFixed(0)} us CPU per frame`);
      }
      line(`  round ${round}: ${parts.join(' | ')}`);
    }
    line(`load average at the end ${os.loadavg()[0]!.toFixed(2)}`);
  } finally {
    await stream.close();
    for (const s of services) await s.stop();
    rmSync(runDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`bench:compare: ${err.message}\n`);
    process.exit(1);
  },
);
