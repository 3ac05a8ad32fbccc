/**
 * Runs wrk (the HTTP load generator) and returns what it saw, exactly: a Lua `done` hook prints
 * requests, bytes, errors and latency percentiles as JSON, and wrk runs under a small shell whose
 * cutime/cstime afterwards is wrk's own CPU time (its share of the 2 cores matters).
 */
import { spawn, execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { clockTicks } from './proc.ts';

export interface WrkResult {
  requests: number;
  durationSeconds: number;
  bytes: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  p50Us: number;
  p99Us: number;
  meanUs: number;
  /** wrk's own CPU time (user + system), seconds. */
  wrkCpuSeconds: number;
}

const doneScript = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n__WRK__ {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
`;

export function checkWrk(): string {
  try {
    const out = execFileSync('sh', ['-c', 'wrk -v 2>&1 || true'], { encoding: 'utf8' });
    const m = /wrk\s+(\S+)/.exec(out);
    if (!m) throw new Error('no version');
    return m[1]!;
  } catch {
    throw new Error('wrk is not installed: run scripts/ensure-services.sh (Debian package wrk)');
  }
}

export interface WrkOptions {
  url: string;
  threads: number;
  connections: number;
  seconds: number;
  runDir: string;
  /** Sent with every request (`-H "name: value"`), e.g. the access cookie. */
  headers?: Record<string, string>;
}

let scripts = 0;

export async function runWrk(o: WrkOptions): Promise<WrkResult> {
  // A file of its own per run: compare.ts starts two wrk runs at once, and rewriting one shared
  // script while the other wrk read it left that wrk printing no results ("wrk failed (exit 0)").
  const script = path.join(o.runDir, `wrk-done-${process.pid}-${++scripts}.lua`);
  writeFileSync(script, doneScript);
  const headerArgs = Object.entries(o.headers ?? {}).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
  const args = [...headerArgs, '-t', String(o.threads), '-c', String(o.connections), '-d', `${o.seconds}s`, '--latency', '--timeout', '10s', '-s', script, o.url];
  // The shell waits for wrk, so its cutime/cstime then hold wrk's CPU time; it prints its own stat line.
  const child = spawn('sh', ['-c', 'wrk "$@"; rc=$?; echo; echo "__STAT__ $(cat /proc/$$/stat)"; exit $rc', 'wrk', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const json = /__WRK__ (\{.*\})/.exec(out);
  const stat = /__STAT__ (.*)/.exec(out);
  if (code !== 0 || !json || !stat) throw new Error(`wrk failed (exit ${code}) for ${o.url}:\n${out}\n${err}`);
  const r = JSON.parse(json[1]!) as {
    requests: number; duration_us: number; bytes: number; errors: WrkResult['errors']; p50_us: number; p99_us: number; mean_us: number;
  };
  const fields = stat[1]!.slice(stat[1]!.lastIndexOf(')') + 2).split(' ');
  const wrkCpuSeconds = (Number(fields[13]) + Number(fields[14])) / clockTicks();
  return {
    requests: r.requests,
    durationSeconds: r.duration_us / 1e6,
    bytes: r.bytes,
    errors: r.errors,
    p50Us: r.p50_us,
    p99Us: r.p99_us,
    meanUs: r.mean_us,
    wrkCpuSeconds,
  };
}
