/**
 * The warm pool's figures (issue 26, section 3) and cold create→running (issue 31, section 3),
 * on the deployed topology (lib/deployed.ts). A create is `running` only once every live replica
 * confirmed its route, so create→running includes the route reaching every replica.
 *
 * Per runtime (Docker with the locally built kasm-test image when the engine answers and the image
 * is there; the process runtime with the shipped demo type always), the catalog holds the same type twice,
 * pooled (`pool: { size }`) and not. Measured from the harness over HTTP, as a browser would:
 * - create→running: hrtime before `POST /api/desktops` until the event stream
 *   (`/api/desktops/:id/events/stream`) delivers the event entering `running`. Pooled and cold
 *   alternate; before every pooled claim the pool is full (every member `running`), so each claim
 *   meets the steady state and never a refill under way; before a cold create the refill of the
 *   previous claim has finished too, so the two never share the machine. Each desktop is deleted
 *   (DELETE answers once its container is gone) before the next create.
 * - burst: with the pool full, `burst` creates at once; each claim's create→running, and the time
 *   until the pool is full again (every member running, none of them claimed), from the first POST
 *   and from the last 201.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { catalogYaml, shippedType, type CatalogTypeSource } from '../../services/control-plane/test/catalog-fixtures.ts';
import { waitFor } from '../../soak/lib/topology.ts';
import { Api, MARK, series, startDeployedTopology, timedCreate, type Created, type DesktopJson, type Series } from './deployed.ts';
import { median } from './stats.ts';

const run = promisify(execFile);

export type PoolRuntime = 'docker' | 'process';

export interface PoolSettings {
  /** Creates per series (pooled and cold each). */
  claims: number;
  /** Pool size of the pooled type; also the number of concurrent claims in the burst. */
  poolSize: number;
  replicas: number;
  /** POOL_INTERVAL_MS of the control plane (left at its default: a claim wakes a pass at once anyway). */
  poolIntervalMs: number;
}

export interface PoolRuntimeResult {
  runtime: PoolRuntime;
  /** What the desktops are (image or command). */
  desktop: string;
  pooled: Series;
  cold: Series;
  burst: {
    claims: number;
    /** Creates of the burst that were claims (the rest started cold: the pool had run dry). */
    fromPool: number;
    /** Each burst claim's create→running. */
    claim: Series;
    /** Until the pool was full again, from the first POST, ms. */
    refillFromFirstPostMs: number;
    /** The same from the last 201. */
    refillFromLastAnswerMs: number;
    /** When each member that refilled the pool was started (its row created) and ready, ms after the first POST (server clock). */
    refillStartedMs: number[];
    refillReadyMs: number[];
  };
  /**
   * `claims` creates of the cold type at once (issue 31: create→running, 20 one at a time and 20
   * at once): each one's create→running; none of them can be a claim.
   */
  coldBurst: Series;
  /** Pooled creates that were not claims (should be 0: the pool was full before each). */
  pooledNotClaimed: number;
  /** Events saying a replica did not confirm a route in time (should be 0). */
  laggingReplicaNotes: number;
}

export interface PoolResult {
  settings: PoolSettings;
  runtimes: PoolRuntimeResult[];
  /** Runtimes not measured, with why (no Docker Engine, no image). */
  notMeasured: string[];
}

const DOCKER_IMAGE = 'deskhub/kasm-test:local';

/** The shipped catalog's folder: what `{catalogDir}` in its entries means. */
const shippedCatalogDir = path.resolve(import.meta.dirname, '../../services/control-plane');

/**
 * The shipped demo type, as it is, runnable from a catalog written elsewhere, and marked (its env
 * carries MARK=runId) so the case can find its processes.
 */
export function demoType(runId: string): CatalogTypeSource {
  const demo = shippedType('demo');
  return {
    ...demo,
    command: (demo.command as string[]).map((arg) => arg.replaceAll('{catalogDir}', shippedCatalogDir)),
    // Its working folder by default is the catalog's, where `--import tsx` is found.
    workingDir: shippedCatalogDir,
    env: { ...(demo.env as Record<string, string>), [MARK]: runId },
  };
}

/** Desktop types: `<runtime>-pooled` and `<runtime>-cold`, identical but for the pool. */
function catalogText(runtimes: PoolRuntime[], poolSize: number, runId: string): string {
  const body: Record<PoolRuntime, CatalogTypeSource> = {
    // The shipped kasm-test entry, as it is (image deskhub/kasm-test:local).
    docker: shippedType('kasm-test'),
    // The shipped demo type (issue 31: create→running for the demo type).
    process: demoType(runId),
  };
  // A pooled desktop is made before anyone claims it, so nothing in it may name its owner or path:
  // the demo type's DESKTOP_NAME ({path}) becomes a fixed name in its pooled variant.
  const pooledEnv = (type: CatalogTypeSource) =>
    type.env && 'DESKTOP_NAME' in (type.env as object) ? { env: { ...(type.env as Record<string, string>), DESKTOP_NAME: 'pooled demo desktop' } } : {};
  return catalogYaml(
    runtimes.flatMap((rt) => [
      { ...body[rt], ...pooledEnv(body[rt]), id: `${rt}-pooled`, name: `${rt} desktop (pooled)`, pool: { size: poolSize, expireAfter: '4h' } },
      { ...body[rt], id: `${rt}-cold`, name: `${rt} desktop (cold)` },
    ]),
  );
}

/** Why Docker cannot be measured here, or null when it can. */
export async function dockerUnavailable(image = DOCKER_IMAGE): Promise<string | null> {
  const info = await run('docker', ['info', '--format', '{{.ServerVersion}}'], { timeout: 10_000 }).catch(() => null);
  if (!info) return 'Docker Engine does not answer (scripts/ensure-services.sh starts it)';
  const found = await run('docker', ['image', 'inspect', image, '--format', '{{.Id}}'], { timeout: 10_000 }).catch(() => null);
  if (!found) return `image ${image} missing (bash deploy/images/build.sh ${image.replace(/^deskhub\/|:local$/g, '')})`;
  return null;
}

interface PoolTopology {
  user: Api;
  admin: Api;
}

/** The pool's members of a type, as the admin API shows them. */
async function members(admin: Api, type: string): Promise<DesktopJson[]> {
  return (await admin.call<DesktopJson[]>('GET', '/api/admin/desktops')).json.filter((d) => d.pool && d.type === type);
}

/** Resolves once the pool of `type` holds `size` members, every one running. */
export function poolFull(admin: Api, type: string, size: number, timeoutMs = 180_000): Promise<true> {
  return waitFor(`the pool of ${type} full (${size} running)`, async () => {
    const list = await members(admin, type);
    return list.length === size && list.every((m) => m.state === 'running') ? true : undefined;
  }, timeoutMs, 50);
}

async function measureRuntime(topo: PoolTopology, runtime: PoolRuntime, settings: PoolSettings, log: (m: string) => void): Promise<PoolRuntimeResult> {
  const pooledType = `${runtime}-pooled`;
  const coldType = `${runtime}-cold`;
  const { user, admin } = topo;
  const remove = (id: string) => user.call('DELETE', `/api/desktops/${id}`);
  log(`pool (${runtime}): waiting for the pool of ${settings.poolSize} to fill`);
  await poolFull(admin, pooledType, settings.poolSize);
  // One of each first, not counted: the first create of a type pays for code paths compiled once.
  for (const type of [pooledType, coldType]) {
    await remove((await timedCreate(user, type)).id);
    await poolFull(admin, pooledType, settings.poolSize);
  }
  const pooled: Created[] = [];
  const cold: Created[] = [];
  for (let i = 0; i < settings.claims; i++) {
    await poolFull(admin, pooledType, settings.poolSize);
    const p = await timedCreate(user, pooledType);
    pooled.push(p);
    await remove(p.id);
    await poolFull(admin, pooledType, settings.poolSize);
    const c = await timedCreate(user, coldType);
    cold.push(c);
    await remove(c.id);
    log(`pool (${runtime}): ${i + 1}/${settings.claims}: claim ${p.runningMs.toFixed(0)} ms, cold ${c.runningMs.toFixed(0)} ms`);
  }

  await poolFull(admin, pooledType, settings.poolSize);
  log(`pool (${runtime}): burst of ${settings.poolSize} claims at once`);
  const t0 = performance.now();
  const t0Wall = Date.now();
  const claimedIds = new Set<string>();
  const burst = await Promise.all(
    Array.from({ length: settings.poolSize }, async (_, i) => {
      const c = await timedCreate(user, pooledType, `burst-${i + 1}`);
      claimedIds.add(c.id);
      return c;
    }),
  );
  const lastAnswer = Math.max(...burst.map((c) => c.answeredMs));
  const refilled = await waitFor(`the pool of ${pooledType} refilled after the burst`, async () => {
    const list = await members(admin, pooledType);
    return list.length === settings.poolSize && list.every((m) => m.state === 'running' && !claimedIds.has(m.id)) ? list : undefined;
  }, 300_000, 50);
  const since = (at: string | null | undefined) => (at ? Date.parse(at) - t0Wall : NaN);
  const refillStartedMs = refilled.map((m) => since(m.createdAt)).sort((a, b) => a - b);
  const refillReadyMs = refilled.map((m) => since(m.readyAt)).sort((a, b) => a - b);
  const refill = performance.now() - t0;
  log(`pool (${runtime}): refilled ${(refill / 1000).toFixed(1)} s after the first POST of the burst`);
  for (const c of burst) await remove(c.id);

  // As many cold creates at once as were made one at a time: what a morning rush costs without a pool.
  await poolFull(admin, pooledType, settings.poolSize);
  log(`pool (${runtime}): ${settings.claims} cold creates at once`);
  const coldBurst = await Promise.all(Array.from({ length: settings.claims }, (_, i) => timedCreate(user, coldType, `rush-${i + 1}`)));
  log(`pool (${runtime}): cold rush running after median ${median(coldBurst.map((c) => c.runningMs)).toFixed(0)} ms, slowest ${Math.max(...coldBurst.map((c) => c.runningMs)).toFixed(0)} ms`);
  for (const c of coldBurst) await remove(c.id);

  return {
    runtime,
    desktop: runtime === 'docker' ? `${DOCKER_IMAGE} container` : 'the demo type, a Node process',
    pooled: series(pooled),
    cold: series(cold),
    burst: {
      claims: burst.length,
      fromPool: burst.filter((c) => c.claimed).length,
      claim: series(burst),
      refillFromFirstPostMs: refill,
      refillFromLastAnswerMs: refill - lastAnswer,
      refillStartedMs,
      refillReadyMs,
    },
    coldBurst: series(coldBurst),
    pooledNotClaimed: pooled.filter((c) => !c.claimed).length,
    laggingReplicaNotes: [...pooled, ...cold, ...burst, ...coldBurst].reduce((n, c) => n + c.lagging, 0),
  };
}

/**
 * The whole case: Docker first when it can run here, then the process runtime. A runtime whose
 * measurement fails is reported in `errors` and the other still runs.
 */
export async function poolFigures(
  runDir: string,
  settings: PoolSettings,
  log: (m: string) => void,
  errors: string[],
  /** Gets what stops everything this case started, for the harness's interrupt handler. */
  onStarted: (close: () => Promise<void>) => void = () => {},
): Promise<PoolResult> {
  const result: PoolResult = { settings, runtimes: [], notMeasured: [] };
  const runtimes: PoolRuntime[] = ['docker', 'process'];
  const noDocker = await dockerUnavailable();
  if (noDocker) {
    result.notMeasured.push(`docker: ${noDocker}`);
    runtimes.shift();
  }
  const deployed = await startDeployedTopology(
    runDir,
    {
      name: 'pool',
      catalog: (_dir, runId) => catalogText(runtimes, settings.poolSize, runId),
      docker: runtimes.includes('docker'),
      replicas: settings.replicas,
      env: { POOL_INTERVAL_MS: String(settings.poolIntervalMs) },
    },
    log,
  );
  onStarted(deployed.close);
  try {
    const topo: PoolTopology = { user: await deployed.signIn('bench'), admin: deployed.admin };
    for (const runtime of runtimes) {
      try {
        result.runtimes.push(await measureRuntime(topo, runtime, settings, log));
      } catch (err) {
        const message = `pool (${runtime}): ${(err as Error).message}`;
        log(`FAILED ${message}`);
        errors.push(message);
      }
    }
  } finally {
    await deployed.close();
  }
  return result;
}

/** The case's Markdown: create→running side by side, then the burst. */
export function poolMarkdown(p: PoolResult): string {
  const s = p.settings;
  const f = (ms: number) => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms).toLocaleString('en-US')} ms`);
  const lines: string[] = [];
  lines.push(
    `Warm pool (issue 26): create→running, from \`POST /api/desktops\` until its event stream says \`running\` (every one of ${s.replicas} proxy replicas holds the route), ` +
      `${s.claims} creates each, pooled and cold alternating, the pool (size ${s.poolSize}) full before each claim, every desktop deleted before the next create. ` +
      `p99 is nearest-rank: with ${s.claims} samples it is the slowest one.`,
  );
  lines.push('');
  lines.push('| runtime | figure | from the pool | cold start | cold ÷ pool |');
  lines.push('|---|---|---:|---:|---:|');
  for (const r of p.runtimes) {
    const row = (label: string, a: number, b: number) => `| ${r.runtime} (${r.desktop}) | ${label} | ${f(a)} | ${f(b)} | ${(b / a).toFixed(1)}x |`;
    lines.push(row('create→running median', r.pooled.medianMs, r.cold.medianMs));
    lines.push(row('create→running p99', r.pooled.p99Ms, r.cold.p99Ms));
    lines.push(row('POST answered (201), median', r.pooled.answeredMedianMs, r.cold.answeredMedianMs));
  }
  lines.push('');
  for (const r of p.runtimes) {
    const b = r.burst;
    lines.push(
      `Burst (${r.runtime}): ${b.claims} creates at once on a full pool of ${s.poolSize}, ${b.fromPool} claimed from it; each running after median ${f(b.claim.medianMs)}, ` +
        `slowest ${f(b.claim.maxMs)}; the pool full again (${s.poolSize} members running) ${f(b.refillFromFirstPostMs)} after the first POST ` +
        `(${f(b.refillFromLastAnswerMs)} after the last 201; POOL_INTERVAL_MS ${s.poolIntervalMs}); the new members started at ${b.refillStartedMs.map((v) => (v / 1000).toFixed(1)).join(', ')} s ` +
        `and were ready at ${b.refillReadyMs.map((v) => (v / 1000).toFixed(1)).join(', ')} s.` +
        (r.pooledNotClaimed ? ` **${r.pooledNotClaimed} pooled creates were not claims.**` : '') +
        (r.laggingReplicaNotes ? ` **${r.laggingReplicaNotes} route changes not confirmed by every replica in time.**` : ''),
    );
  }
  for (const r of p.runtimes) {
    const c = r.coldBurst;
    if (!c) continue;
    lines.push(
      `Cold, ${c.samplesMs.length} at once (${r.runtime}): create→running median ${f(c.medianMs)}, p99 ${f(c.p99Ms)} (one at a time: median ${f(r.cold.medianMs)}, p99 ${f(r.cold.p99Ms)}); POST answered after median ${f(c.answeredMedianMs)}.`,
    );
  }
  for (const n of p.notMeasured) lines.push(`Not measured: ${n}.`);
  const target = p.runtimes.map((r) => `${r.runtime} p99 ${f(r.pooled.p99Ms)} (${r.pooled.p99Ms < 1000 ? 'met' : '**not met**'})`);
  if (target.length) lines.push('', `Target (issue 26): create→running from the pool under 1 s at p99: ${target.join(', ')}.`);
  lines.push('');
  return lines.join('\n');
}
