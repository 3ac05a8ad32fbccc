/**
 * Stray processes: every process the soak starts carries RUN_MARK=<run id> in its environment;
 * one that is alive but no longer a descendant of the soak (its parent died and it was
 * re-parented, e.g. a child of a control plane killed with SIGKILL) is an orphan.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { processTree } from '../../bench/lib/proc.ts';

export const RUN_MARK = 'DESKHUB_SOAK_RUN';

/** Pids carrying this run's mark that are not descendants of this process. */
export function orphanProcesses(runId: string): number[] {
  const ours = new Set(processTree(process.pid));
  const needle = `\0${RUN_MARK}=${runId}\0`;
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || ours.has(pid)) continue;
    try {
      if (`\0${readFileSync(`/proc/${pid}/environ`, 'latin1')}`.includes(needle)) out.push(pid);
    } catch {
      // gone, or not ours to read
    }
  }
  return out;
}
