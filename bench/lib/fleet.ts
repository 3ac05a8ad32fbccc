/**
 * The control plane with a fleet (issue 31, section 3): `users × perUser` desktops (1,000 across
 * 100 users in a full run), each a real process (busybox httpd on the process runtime, a
 * megabyte or so each, so a thousand fit one machine), on the deployed topology (lib/deployed.ts).
 *
 * - The fleet is made through the API, `concurrency` creates in flight, each followed on its
 *   event stream until `running` (every replica holds its route): create→running under that load.
 * - Every replica is then checked to hold every route (its `deskhub_proxy_routes`).
 * - List latency, one request at a time against the control plane: `GET /api/desktops` as the
 *   users in turn (each sees its own `perUser`), and `GET /api/admin/desktops` (all of them).
 * - The reconciler's time per pass, from its `deskhub_reconcile_pass_seconds` histogram: the
 *   passes while the table was empty, and the passes over `settleMs` once the whole fleet runs
 *   (RECONCILE_INTERVAL_MS is `reconcileIntervalMs`; each pass lists every process and reads every row).
 * - The route table's resync at every replica, `resyncs` times: the harness kills every pub/sub
 *   connection at Redis (`CLIENT KILL TYPE pubsub`, what a Redis restart or a network cut does to
 *   them), each replica reconnects and reloads the whole table. Per replica, its own
 *   `deskhub_proxy_route_resync_seconds` (read the snapshot, swap it in); and the wall time from the
 *   kill until the last replica counted the resync (reconnect back-off included).
 */
import { connect } from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { catalogYaml } from '../../services/control-plane/test/catalog-fixtures.ts';
import { waitFor } from '../../soak/lib/topology.ts';
import { MARK, scrape, series, startDeployedTopology, timedCreate, type Api, type Created, type DesktopJson, type Series } from './deployed.ts';
import { median, percentile } from './stats.ts';

export interface FleetSettings {
  users: number;
  perUser: number;
  /** Creates in flight while the fleet is made. */
  concurrency: number;
  replicas: number;
  /** Requests per list figure. */
  listRequests: number;
  reconcileIntervalMs: number;
  /** How long the reconciler's passes are counted once the fleet runs. */
  settleMs: number;
  resyncs: number;
}

export interface Latency {
  requests: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Desktops in each answer. */
  desktops: number;
  /** Bytes of each answer's body. */
  bytes: number;
}

export interface PassFigure {
  passes: number;
  meanMs: number;
}

export interface FleetResult {
  settings: FleetSettings;
  desktops: number;
  /** Until the last create was running, from the first POST, seconds. */
  buildSeconds: number;
  /** create→running of every create with `concurrency` in flight. */
  create: Series;
  /** Routes each replica held once the fleet ran. */
  replicaRoutes: number[];
  userList: Latency;
  adminList: Latency;
  reconcileEmpty: PassFigure;
  reconcileFleet: PassFigure;
  resync: {
    routes: number;
    /** Each replica's own resync time, per round (ms), replica by replica. */
    replicaMs: number[][];
    replicaP50Ms: number;
    replicaMaxMs: number;
    /** Kill until every replica had resynced, per round, ms. */
    allMs: number[];
    allP50Ms: number;
    allMaxMs: number;
  };
}

/** busybox httpd serving one small page: a real process with a port, readiness and a route. */
function catalogText(dir: string, runId: string): string {
  const www = path.join(dir, 'www');
  mkdirSync(www, { recursive: true });
  writeFileSync(path.join(www, 'index.html'), '<!doctype html><title>fleet bench</title>\n');
  return catalogYaml([
    {
      id: 'httpd',
      name: 'busybox httpd',
      runtime: 'process',
      command: ['busybox', 'httpd', '-f', '-p', '127.0.0.1:{port}', '-h', www],
      port: 80,
      credentials: { kind: 'basic', username: 'webuser', passwordEnv: 'WEB_PASSWORD' },
      env: { [MARK]: runId },
      readiness: { path: '/', timeoutSeconds: 30 },
    },
  ]);
}

/** Sends one command to Redis (RESP) and resolves with its first reply line. */
function redisCommand(url: string, args: string[]): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) }, () => {
      socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
    });
    let reply = '';
    socket.setTimeout(10_000, () => socket.destroy(new Error(`redis ${args.join(' ')}: no answer in 10 s`)));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString();
      const end = reply.indexOf('\r\n');
      if (end < 0) return;
      socket.end();
      const line = reply.slice(0, end);
      if (line.startsWith('-')) reject(new Error(`redis ${args.join(' ')}: ${line.slice(1)}`));
      else resolve(line);
    });
    socket.on('error', reject);
  });
}

/** `count` GETs of `apiPath`, one at a time, round robin over `apis`. */
async function latency(apis: Api[], apiPath: string, count: number): Promise<Latency> {
  const samples: number[] = [];
  let desktops = 0;
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const api = apis[i % apis.length]!;
    const t0 = performance.now();
    const res = await fetch(`${api.base}${apiPath}`, { headers: { cookie: api.cookie }, signal: AbortSignal.timeout(30_000) });
    const body = await res.text();
    samples.push(performance.now() - t0);
    if (res.status !== 200) throw new Error(`GET ${apiPath}: ${res.status} ${body.slice(0, 200)}`);
    desktops = (JSON.parse(body) as DesktopJson[]).length;
    bytes = Buffer.byteLength(body);
  }
  return { requests: count, p50Ms: percentile(samples, 50), p99Ms: percentile(samples, 99), maxMs: Math.max(...samples), desktops, bytes };
}

/** The reconciler's histogram: passes and their summed time so far. */
async function passTotals(metricsUrl: string): Promise<{ count: number; sum: number }> {
  const m = await scrape(metricsUrl);
  return { count: m.get('deskhub_reconcile_pass_seconds_count') ?? NaN, sum: m.get('deskhub_reconcile_pass_seconds_sum') ?? NaN };
}

async function passesOver(metricsUrl: string, ms: number): Promise<PassFigure> {
  const before = await passTotals(metricsUrl);
  await sleep(ms);
  const after = await passTotals(metricsUrl);
  const passes = after.count - before.count;
  if (!(passes > 0)) throw new Error(`no reconciliation pass in ${ms} ms`);
  return { passes, meanMs: ((after.sum - before.sum) / passes) * 1000 };
}

/** A replica's resync histogram and route count. */
async function replicaResyncs(metricsUrl: string): Promise<{ count: number; sum: number; routes: number }> {
  const m = await scrape(metricsUrl);
  return {
    count: m.get('deskhub_proxy_route_resync_seconds_count') ?? NaN,
    sum: m.get('deskhub_proxy_route_resync_seconds_sum') ?? NaN,
    routes: m.get('deskhub_proxy_routes') ?? NaN,
  };
}

export async function fleetFigures(
  runDir: string,
  settings: FleetSettings,
  log: (m: string) => void,
  onStarted: (close: () => Promise<void>) => void = () => {},
): Promise<FleetResult> {
  const topo = await startDeployedTopology(
    runDir,
    { name: 'fleet', catalog: catalogText, docker: false, replicas: settings.replicas, env: { RECONCILE_INTERVAL_MS: String(settings.reconcileIntervalMs) } },
    log,
  );
  onStarted(topo.close);
  try {
    const total = settings.users * settings.perUser;
    const reconcileEmpty = await passesOver(topo.controlPlaneMetricsUrl, settings.reconcileIntervalMs * 3 + 500);
    const users = await Promise.all(Array.from({ length: settings.users }, (_, i) => topo.signIn(`fleet-${String(i + 1).padStart(3, '0')}`)));

    log(`fleet: ${total} desktops across ${settings.users} users, ${settings.concurrency} creates in flight`);
    const queue = Array.from({ length: total }, (_, i) => users[i % users.length]!);
    const created: Created[] = [];
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: settings.concurrency }, async () => {
        for (let user = queue.shift(); user; user = queue.shift()) {
          created.push(await timedCreate(user, 'httpd'));
          if (created.length % 100 === 0) log(`fleet: ${created.length}/${total} running`);
        }
      }),
    );
    const buildSeconds = (performance.now() - t0) / 1000;

    const replicaRoutes = await Promise.all(topo.replicas.map(async (r) => (await replicaResyncs(r.metricsUrl)).routes));
    if (replicaRoutes.some((n) => n !== total)) throw new Error(`replicas hold ${replicaRoutes.join(', ')} routes, not ${total}`);

    log('fleet: list latency');
    await latency(users, '/api/desktops', Math.min(20, settings.listRequests)); // warm-up, not counted
    const userList = await latency(users, '/api/desktops', settings.listRequests);
    await latency([topo.admin], '/api/admin/desktops', 5);
    const adminList = await latency([topo.admin], '/api/admin/desktops', settings.listRequests);
    if (userList.desktops !== settings.perUser || adminList.desktops !== total) {
      throw new Error(`lists held ${userList.desktops} and ${adminList.desktops} desktops, not ${settings.perUser} and ${total}`);
    }

    log(`fleet: reconciliation passes over ${settings.settleMs} ms`);
    const reconcileFleet = await passesOver(topo.controlPlaneMetricsUrl, settings.settleMs);

    log(`fleet: ${settings.resyncs} resyncs of every replica`);
    const replicaMs: number[][] = [];
    const allMs: number[] = [];
    for (let round = 0; round < settings.resyncs; round++) {
      const before = await Promise.all(topo.replicas.map((r) => replicaResyncs(r.metricsUrl)));
      const start = performance.now();
      await redisCommand(topo.redisUrl, ['CLIENT', 'KILL', 'TYPE', 'pubsub']);
      const after = await Promise.all(
        topo.replicas.map((r, i) =>
          waitFor(`replica ${i + 1} resynced`, async () => {
            const now = await replicaResyncs(r.metricsUrl);
            return now.count > before[i]!.count && now.routes === total ? { ...now, at: performance.now() - start } : undefined;
          }, 30_000, 10),
        ),
      );
      replicaMs.push(after.map((a, i) => ((a.sum - before[i]!.sum) / (a.count - before[i]!.count)) * 1000));
      allMs.push(Math.max(...after.map((a) => a.at)));
      await sleep(1000);
    }
    const flat = replicaMs.flat();
    return {
      settings,
      desktops: total,
      buildSeconds,
      create: series(created),
      replicaRoutes,
      userList,
      adminList,
      reconcileEmpty,
      reconcileFleet,
      resync: { routes: total, replicaMs, replicaP50Ms: median(flat), replicaMaxMs: Math.max(...flat), allMs, allP50Ms: median(allMs), allMaxMs: Math.max(...allMs) },
    };
  } finally {
    await topo.close();
  }
}

export function fleetMarkdown(f: FleetResult): string {
  const s = f.settings;
  const ms = (v: number) => `${v < 10 ? v.toFixed(2) : Math.round(v).toLocaleString('en-US')} ms`;
  const lines = [
    `The control plane with ${f.desktops.toLocaleString('en-US')} desktops across ${s.users} users (issue 31): each a real process (busybox httpd, process runtime), ` +
      `${s.replicas} proxy replicas on Redis, made through the API ${s.concurrency} at a time in ${f.buildSeconds.toFixed(1)} s; every replica then held ${f.replicaRoutes.join(' and ')} routes.`,
    '',
    '| figure | p50 | p99 | max |',
    '|---|---:|---:|---:|',
    `| create→running, ${s.concurrency} in flight | ${ms(f.create.medianMs)} | ${ms(f.create.p99Ms)} | ${ms(f.create.maxMs)} |`,
    `| \`GET /api/desktops\` (${f.userList.desktops} desktops, ${f.userList.bytes.toLocaleString('en-US')} bytes) | ${ms(f.userList.p50Ms)} | ${ms(f.userList.p99Ms)} | ${ms(f.userList.maxMs)} |`,
    `| \`GET /api/admin/desktops\` (${f.adminList.desktops.toLocaleString('en-US')} desktops, ${f.adminList.bytes.toLocaleString('en-US')} bytes) | ${ms(f.adminList.p50Ms)} | ${ms(f.adminList.p99Ms)} | ${ms(f.adminList.maxMs)} |`,
    `| route table resync at one replica (${f.resync.routes.toLocaleString('en-US')} routes) | ${ms(f.resync.replicaP50Ms)} | — | ${ms(f.resync.replicaMaxMs)} |`,
    `| pub/sub cut until every replica resynced | ${ms(f.resync.allP50Ms)} | — | ${ms(f.resync.allMaxMs)} |`,
    '',
    `Reconciliation pass (every process listed, every row read), mean: ${ms(f.reconcileFleet.meanMs)} over ${f.reconcileFleet.passes} passes with the fleet running, ` +
      `${ms(f.reconcileEmpty.meanMs)} over ${f.reconcileEmpty.passes} with no desktop (RECONCILE_INTERVAL_MS ${s.reconcileIntervalMs}).`,
    `Lists: ${s.listRequests} requests each, one at a time, straight to the control plane, the user list round robin over the ${s.users} users. ` +
      `Resync: ${s.resyncs} times \`CLIENT KILL TYPE pubsub\` at Redis; a replica's own time is its \`deskhub_proxy_route_resync_seconds\` (snapshot read and swapped in), the wall time includes its reconnect back-off.`,
    '',
  ];
  return lines.join('\n');
}
