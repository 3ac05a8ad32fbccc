/** The soak's results as JSON and as the Markdown table the READMEs show. */
import { writeFileSync } from 'node:fs';
import { FLAT, type IdleResult } from './idle-websockets.ts';
import type { ScenarioResult } from './scenarios.ts';

export interface SoakResults {
  mode: 'quick' | 'full';
  command: string;
  startedAt: string;
  finishedAt: string;
  machine: { nproc: number; loadAverageStart: number; loadAverageEnd: number; gitCommit: string; openFileLimit: number; node: string };
  settings: Record<string, number>;
  scenarios: ScenarioResult[];
  idle: IdleResult | null;
  /** Parts that could not run at all. */
  errors: string[];
  pass: boolean;
}

const MiB = 2 ** 20;

function cell(n: number, mustBeZero = true): string {
  return mustBeZero && n > 0 ? `**${n}**` : String(n);
}

export function markdown(r: SoakResults): string {
  const lines: string[] = [];
  lines.push(`Soak run (${r.mode}), ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC, commit ${r.machine.gitCommit}, ${r.machine.nproc} cores, load average ${r.machine.loadAverageStart} at start and ${r.machine.loadAverageEnd} at end: \`${r.command}\``);
  lines.push('');
  if (r.scenarios.length > 0) {
    lines.push('| scenario | requests | lost | lost, expected | WebSockets | dropped | dropped, expected | stale routes | orphan containers | orphan processes | wrong states | clean after (s) | pass |');
    lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
    for (const s of r.scenarios) {
      lines.push(
        `| ${s.name} | ${s.requests} | ${cell(s.lost)} | ${s.lostExpected} | ${s.websockets} | ${cell(s.dropped)} | ${s.droppedExpected} | ${cell(s.staleRoutes)} | ${cell(s.orphanContainers)} | ${cell(s.orphanProcesses)} | ${cell(s.wrongStates)} | ${s.cleanAfterSeconds ?? 'never'} | ${s.pass ? 'yes' : '**no**'} |`,
      );
    }
    lines.push('');
    for (const s of r.scenarios) {
      lines.push(`- **${s.name}** (${s.seconds} s): ${s.promise}.${s.notes.length ? ` ${s.notes.join('; ')}.` : ''}`);
      for (const p of s.problems.slice(0, 10)) lines.push(`  - problem: ${p}`);
    }
    lines.push('');
  }
  if (r.idle) {
    const i = r.idle;
    const asked = r.settings.idleSockets ?? i.count;
    const capped = i.count < asked ? ` (of ${asked} asked: the open-file limit ${r.machine.openFileLimit} could not be raised here, and the replica holds two descriptors per socket)` : '';
    lines.push(`Idle WebSockets through one replica to a TLS upstream: ${i.count} sockets${capped}, sampled every ${i.intervalSeconds} s (the first sample right after opening; judged from the second on: flat when RSS grows at most ${FLAT.rss * 100}% and the JS heap ${FLAT.heap * 100}% over the second sample, and open descriptors move by at most ${FLAT.fds}).`);
    lines.push('');
    lines.push('| t (s) | RSS (MiB) | JS heap used (MiB) | open fds |');
    lines.push('|---:|---:|---:|---:|');
    for (const s of i.samples) lines.push(`| ${s.atSeconds} | ${(s.rssBytes / MiB).toFixed(1)} | ${(s.heapUsedBytes / MiB).toFixed(1)} | ${s.openFds} |`);
    lines.push('');
    lines.push(
      `Largest growth after the first interval: RSS ${(i.rssGrowth * 100).toFixed(1)}%, heap ${(i.heapGrowth * 100).toFixed(1)}%; descriptors moved by ${i.fdChange}; ${i.closed} closed on their own, ${i.silent} silent at the end: **${i.flat ? 'flat' : 'not flat'}**.${i.problems.length ? ` ${i.problems.join('; ')}.` : ''}`,
    );
    lines.push('');
  }
  for (const e of r.errors) lines.push(`- error: ${e}`);
  return `${lines.join('\n').trimEnd()}\n`;
}

export function writeResults(dir: string, r: SoakResults): void {
  writeFileSync(`${dir}/latest.json`, `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(`${dir}/latest.md`, markdown(r));
}
