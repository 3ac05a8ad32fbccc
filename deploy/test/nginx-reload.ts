/**
 * `pnpm measure:nginx-reload`: what `nginx -s reload` does to open desktop WebSockets (issue #29,
 * section 1), measured on the deployed topology of deploy-tls.test.ts (tls-topology.ts: the
 * shipped deploy/nginx/deskhub.conf, TLS, two replicas, the control plane, the demo desktop).
 *
 * For each worker_shutdown_timeout asked for (`off`: not set, nginx's default), nginx is given it
 * in its main context, N desktop WebSockets are opened through nginx, and nginx is reloaded with a
 * renewed certificate. Then, sampling every 100 ms, it watches the sockets and the old workers
 * ("nginx: worker process is shutting down", from /proc): how many sockets stay up, how many are
 * cut and with which close code, whether a cut socket reconnects at once (through the new
 * workers), and how long the old workers live. A watch ends when the old workers are gone, or
 * after --watch seconds; sockets still up then are closed by the client, and the time the old
 * workers take to exit after that is reported too.
 *
 *   pnpm measure:nginx-reload                      200 WebSockets; off, then 10s; watch 30 s
 *   pnpm measure:nginx-reload --readme             the same, and the table into README.md ("Deploy")
 *   pnpm measure:nginx-reload --sockets 50 --timeouts off,5s,30s --watch 40 --out /tmp/reload.json
 *
 * Needs what the tests need: nginx, redis-server, PostgreSQL (TEST_DATABASE_URL, default
 * postgres://deskhub:deskhub@127.0.0.1:5432/postgres). Writes a Markdown table to stdout, the raw
 * figures as JSON with --out, and the table between README.md's nginx-reload markers with --readme.
 * A bad flag stops it with exit code 2.
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import type WebSocket from 'ws';
import { updateReadme } from '../../bench/lib/report.ts';
import { repoRoot } from '../../packages/testkit/src/service.ts';
import { runNginx } from '../../packages/testkit/src/nginx.ts';
import { startTlsTopology, type TlsTopology } from './tls-topology.ts';

interface Settings {
  sockets: number;
  timeouts: string[];
  watchS: number;
  out: string | null;
  readme: boolean;
}

export interface ReloadResult {
  /** worker_shutdown_timeout, or 'off'. */
  timeout: string;
  sockets: number;
  /** Open when the watch ended (old workers gone, or --watch passed). */
  stayedUp: number;
  /** Closed by nginx, by close code (1006: no close frame, the connection just ended). */
  cut: Record<string, number>;
  /** Of those, reconnected at once through nginx (a new worker). */
  reconnected: number;
  reconnectFailed: number;
  /** Old workers holding sockets at the reload. */
  oldWorkers: number;
  /** From the reload until the last old worker exited; null: still alive when the watch ended. */
  oldWorkersLivedMs: number | null;
  /** When they outlived the watch: from the client closing the last socket to their exit. */
  exitAfterLastCloseMs: number | null;
  watchedMs: number;
}

function usage(message: string): never {
  process.stderr.write(`nginx-reload: ${message}\nusage: pnpm measure:nginx-reload [--sockets N] [--timeouts off,10s,...] [--watch SECONDS] [--out FILE] [--readme]\n`);
  process.exit(2);
}

function settingsFrom(argv: string[]): Settings {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { sockets: { type: 'string', default: '200' }, timeouts: { type: 'string', default: 'off,10s' }, watch: { type: 'string', default: '30' }, out: { type: 'string' }, readme: { type: 'boolean', default: false } },
    }));
  } catch (err) {
    usage((err as Error).message);
  }
  const sockets = Number(values.sockets);
  if (!Number.isInteger(sockets) || sockets < 1 || sockets > 5000) usage('--sockets takes a whole number from 1 to 5000');
  const timeouts = String(values.timeouts).split(',').map((s) => s.trim());
  for (const timeout of timeouts) if (timeout !== 'off' && !/^\d+(ms|s|m)$/.test(timeout)) usage(`--timeouts: "${timeout}" is neither off nor an nginx time such as 10s`);
  const watchS = Number(values.watch);
  if (!Number.isFinite(watchS) || watchS < 1 || watchS > 3600) usage('--watch takes seconds from 1 to 3600');
  return { sockets, timeouts, watchS, out: values.out ?? null, readme: values.readme === true };
}

interface Watched {
  ws: WebSocket;
  closedAt: number | null;
  code: number | null;
  reconnect: Promise<WebSocket | null> | null;
}

async function measure(topo: TlsTopology, path: string, cookie: string, timeout: string, settings: Settings): Promise<ReloadResult> {
  // Workers that have the setting: reload into it, and wait until the previous ones are gone.
  await topo.nginx.reload(timeout === 'off' ? [] : [`worker_shutdown_timeout ${timeout};`]);
  const waitedFrom = Date.now();
  while (topo.nginx.workers().some((w) => w.shuttingDown)) {
    if (Date.now() - waitedFrom > 60_000) throw new Error('old nginx workers from the previous setting did not exit within 60 s');
    await sleep(100);
  }

  let letGo = false;
  const watched: Watched[] = await Promise.all(
    Array.from({ length: settings.sockets }, async () => {
      const ws = await topo.openSocket(path, cookie);
      const w: Watched = { ws, closedAt: null, code: null, reconnect: null };
      ws.once('close', (code) => {
        w.closedAt = Date.now();
        w.code = code;
        // As a desktop client would, at once: the new workers take it.
        if (!letGo) w.reconnect = topo.openSocket(path, cookie).catch(() => null);
      });
      return w;
    }),
  );
  const before = new Set(topo.nginx.workers().map((w) => w.pid));
  const t0 = Date.now();
  await topo.renewCertificate();
  const oldWorkers = topo.nginx.workers().filter((w) => before.has(w.pid)).length;
  const oldAlive = () => topo.nginx.workers().some((w) => before.has(w.pid));

  let oldWorkersLivedMs: number | null = null;
  while (Date.now() - t0 < settings.watchS * 1000) {
    if (!oldAlive()) {
      oldWorkersLivedMs = Date.now() - t0;
      break;
    }
    await sleep(100);
  }
  const watchedMs = Date.now() - t0;
  // The clients learn of connections the old workers closed a moment later: let the count settle.
  const open = () => watched.filter((w) => w.closedAt === null).length;
  for (let last = open(), still = 0; still < 10; await sleep(100)) {
    const now = open();
    still = now === last ? still + 1 : 0;
    last = now;
  }
  const stayedUp = watched.filter((w) => w.closedAt === null).length;
  const cut: Record<string, number> = {};
  for (const w of watched) if (w.code !== null) cut[w.code] = (cut[w.code] ?? 0) + 1;
  const reconnects = await Promise.all(watched.filter((w) => w.reconnect !== null).map((w) => w.reconnect!));
  const reconnected = reconnects.filter((ws) => ws !== null).length;

  // What outlived the watch: the client closes its sockets, then the old workers' exit is timed.
  letGo = true;
  let exitAfterLastCloseMs: number | null = null;
  if (oldWorkersLivedMs === null) {
    await Promise.all(watched.filter((w) => w.closedAt === null).map((w) => new Promise<void>((resolve) => {
      w.ws.once('close', () => resolve());
      w.ws.close(1000);
    })));
    const closedAt = Date.now();
    while (oldAlive() && Date.now() - closedAt < 60_000) await sleep(20);
    exitAfterLastCloseMs = oldAlive() ? null : Date.now() - closedAt;
  }
  for (const w of watched) w.ws.terminate();
  for (const ws of reconnects) ws?.terminate();
  return {
    timeout,
    sockets: settings.sockets,
    stayedUp,
    cut,
    reconnected,
    reconnectFailed: reconnects.length - reconnected,
    oldWorkers,
    oldWorkersLivedMs,
    exitAfterLastCloseMs,
    watchedMs,
  };
}

export function markdown(results: ReloadResult[], nginxVersion: string): string {
  const s = (ms: number | null) => (ms === null ? '—' : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`);
  const lines = [
    `| worker_shutdown_timeout | WebSockets | stayed up | cut by nginx (close code) | reconnected at once | old workers lived |`,
    `|---|---:|---:|---|---:|---|`,
    ...results.map((r) => {
      const cut = Object.entries(r.cut).map(([code, n]) => `${n} (${code})`).join(', ') || '0';
      const lived = r.oldWorkersLivedMs !== null
        ? s(r.oldWorkersLivedMs)
        : `past the ${s(r.watchedMs)} watch, holding every WebSocket; exited ${s(r.exitAfterLastCloseMs)} after the client closed the last one`;
      return `| ${r.timeout === 'off' ? 'not set' : r.timeout} | ${r.sockets} | ${r.stayedUp} | ${cut} | ${r.reconnected}${r.reconnectFailed ? ` (${r.reconnectFailed} failed)` : ''} | ${lived} (${r.oldWorkers} old worker${r.oldWorkers === 1 ? '' : 's'}) |`;
    }),
    '',
    `${nginxVersion}, \`nginx -s reload\` with a renewed certificate, the shipped deploy/nginx/deskhub.conf in front of two replicas.`,
    '',
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  const settings = settingsFrom(process.argv.slice(2));
  const teardowns: Array<() => unknown> = [];
  const results: ReloadResult[] = [];
  try {
    const topo = await startTlsTopology({ teardown: (fn) => void teardowns.push(fn) }, 'nginx-reload', { drainTimeoutS: 30, webSocketsPerWorker: settings.sockets + 50 });
    const cookie = await topo.signIn('alice');
    const desktop = await topo.launch(cookie, 'demo');
    const path = `/desktop/${desktop.proxyPath}/websockify`;
    const version = await runNginx(topo.nginx.nginx, ['-v']);
    for (const timeout of settings.timeouts) {
      process.stderr.write(`nginx-reload: ${settings.sockets} WebSockets, worker_shutdown_timeout ${timeout}...\n`);
      results.push(await measure(topo, path, cookie, timeout, settings));
    }
    const md = markdown(results, version.output.trim().replace(/^nginx version: /, ''));
    process.stdout.write(`${md}\n`);
    if (settings.out) writeFileSync(settings.out, JSON.stringify({ settings, results }, null, 2));
    if (settings.readme) updateReadme(`${repoRoot}README.md`, `${md.trimEnd()}\nMeasured ${new Date().toISOString().slice(0, 10)} on ${os.cpus().length} cores.`, 'nginx-reload');
  } finally {
    while (teardowns.length > 0) await teardowns.pop()!();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`nginx-reload: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
