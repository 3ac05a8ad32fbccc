/**
 * What the benchmark reads about a process from /proc: resident memory and CPU time, for a
 * process and all its descendants (nginx is a master plus a worker; a Node proxy may start
 * helper processes). Linux only, like the rest of the harness.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

let ticksPerSecond: number | undefined;

/** Clock ticks per second for utime/stime (almost always 100). */
export function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** Fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses). */
function statFields(pid: number): string[] | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** Direct children, from /proc/<pid>/task/<tid>/children of every thread. */
function children(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) for (const c of text.split(' ')) out.push(Number(c));
    } catch {
      // the thread ended between listing and reading
    }
  }
  return out;
}

/** The process and all its descendants. */
export function processTree(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length; i++) all.push(...children(all[i]!));
  return all;
}

/** utime + stime of one process in seconds (all its threads), or 0 when it is gone. */
export function cpuSeconds(pid: number): number {
  const f = statFields(pid);
  if (!f) return 0;
  // After the name: state(0) ppid(1) ... utime is field 14 of stat, i.e. index 11 here; stime 12.
  return (Number(f[11]) + Number(f[12])) / clockTicks();
}

/** How long the process has been running, in ms (0 when it is gone). */
export function processAgeMs(pid: number): number {
  const f = statFields(pid);
  if (!f) return 0;
  // starttime is field 22 of stat (index 19 here), in clock ticks since boot.
  const uptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  return Math.max(0, (uptime - Number(f[19]) / clockTicks()) * 1000);
}

/** cutime + cstime: CPU of waited-for children, in seconds. */
export function childrenCpuSeconds(pid: number): number {
  const f = statFields(pid);
  if (!f) return 0;
  return (Number(f[13]) + Number(f[14])) / clockTicks();
}

/** VmRSS of one process in bytes, or 0 when it is gone. */
export function rssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** CPU seconds of a process tree. */
export function treeCpuSeconds(pid: number): number {
  return processTree(pid).reduce((sum, p) => sum + cpuSeconds(p), 0);
}

/** RSS in bytes of a process tree. */
export function treeRssBytes(pid: number): number {
  return processTree(pid).reduce((sum, p) => sum + rssBytes(p), 0);
}

/** Open file descriptors of one process. */
export function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}
