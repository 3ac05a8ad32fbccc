/**
 * What a scenario leaves behind, counted against the control plane's own view (its API) and the
 * engine's (this run's containers):
 * - stale routes: at a live replica, a desktop path that answers otherwise than its desktop's
 *   state says (a running desktop not served, a stopped, failed or deleted one still routed, or a
 *   route that leads to a container that is gone: 502);
 * - orphan containers: a container of this run that no desktop names, a second one for a
 *   desktop, or one still running for a desktop that is not running;
 * - wrong states: a desktop `running` whose container is not, or one left in creating, starting
 *   or stopping (stuck);
 * - orphan processes: processes of this run that outlived their parent (processes.ts).
 */
import { instanceContainers, type Container } from './docker.ts';
import { orphanProcesses } from './processes.ts';
import type { Desktop, ReplicaName, Topology } from './topology.ts';

export interface Leftovers {
  staleRoutes: number;
  orphanContainers: number;
  orphanProcesses: number;
  wrongStates: number;
  /** One line per thing counted, for the report. */
  details: string[];
}

const TRANSITIONAL = new Set(['creating', 'starting', 'stopping']);

async function routeProblems(topology: Topology, desktops: Desktop[], gone: string[]): Promise<string[]> {
  const problems: string[] = [];
  for (const name of ['A', 'B'] as ReplicaName[]) {
    const replica = topology.replicas[name];
    if (!replica.service) continue;
    const expectations: [string, boolean][] = [
      ...desktops.filter((d) => !TRANSITIONAL.has(d.state)).map((d) => [d.proxyPath, d.state === 'running'] as [string, boolean]),
      ...gone.filter((p) => !desktops.some((d) => d.proxyPath === p)).map((p) => [p, false] as [string, boolean]),
    ];
    for (const [p, routed] of expectations) {
      const res = await fetch(`${replica.url}/desktop/${p}/?path=desktop/${p}/websockify`, { redirect: 'manual', headers: { accept: 'application/json' }, signal: AbortSignal.timeout(10_000) }).catch(
        (err: Error) => ({ status: 0, text: async () => err.message }),
      );
      const body = await res.text();
      const served = res.status > 0 && res.status < 400;
      const notRouted = res.status === 404 && body.includes('There is no desktop');
      if (routed && !served) problems.push(`replica ${name}: running ${p} answers ${res.status}`);
      if (!routed && !notRouted) problems.push(`replica ${name}: ${p} (not running) is still routed (${res.status})`);
    }
  }
  return problems;
}

function containerProblems(desktops: Desktop[], containers: Container[]): { orphans: string[]; wrong: string[] } {
  const orphans: string[] = [];
  const wrong: string[] = [];
  const byDesktop = new Map<string, Container[]>();
  for (const c of containers) byDesktop.set(c.desktopId, [...(byDesktop.get(c.desktopId) ?? []), c]);
  const known = new Map(desktops.map((d) => [d.id, d]));
  for (const [desktopId, list] of byDesktop) {
    const d = known.get(desktopId);
    if (!d) {
      orphans.push(...list.map((c) => `container ${c.id.slice(0, 12)} (${c.state}) of desktop ${desktopId}, which does not exist`));
      continue;
    }
    if (list.length > 1) orphans.push(`${list.length} containers for ${d.proxyPath}`);
    for (const c of list) {
      if (c.state === 'running' && d.state !== 'running' && !TRANSITIONAL.has(d.state)) orphans.push(`container ${c.id.slice(0, 12)} running for ${d.proxyPath}, which is ${d.state}`);
    }
  }
  for (const d of desktops) {
    if (TRANSITIONAL.has(d.state)) wrong.push(`${d.proxyPath} stuck in ${d.state}`);
    else if (d.state === 'running' && !(byDesktop.get(d.id) ?? []).some((c) => c.state === 'running')) wrong.push(`${d.proxyPath} is running but its container is not`);
  }
  return { orphans, wrong };
}

/** One look at everything. `gone`: proxy paths of desktops deleted during the run. */
export async function leftovers(topology: Topology, runId: string, gone: string[]): Promise<Leftovers> {
  const desktops = await topology.listDesktops();
  const containers = await instanceContainers(topology.instance);
  const routes = await routeProblems(topology, desktops, gone);
  const { orphans, wrong } = containerProblems(desktops, containers);
  const processes = orphanProcesses(runId).map((pid) => `process ${pid} outlived its parent`);
  return {
    staleRoutes: routes.length,
    orphanContainers: orphans.length,
    orphanProcesses: processes.length,
    wrongStates: wrong.length,
    details: [...routes, ...orphans, ...wrong, ...processes],
  };
}

/**
 * Looks until nothing is left over or `timeoutMs` has passed (the system converges: replicas
 * resync, reconciliation runs every RECONCILE_INTERVAL_MS); returns the last look and how long
 * it took to be clean (null: never within the time).
 */
export async function settle(topology: Topology, runId: string, gone: string[], timeoutMs: number): Promise<{ leftovers: Leftovers; cleanAfterMs: number | null }> {
  const start = Date.now();
  let last: Leftovers | null = null;
  for (;;) {
    try {
      last = await leftovers(topology, runId, gone);
      if (last.details.length === 0) return { leftovers: last, cleanAfterMs: Date.now() - start };
    } catch (err) {
      last = { staleRoutes: 0, orphanContainers: 0, orphanProcesses: 0, wrongStates: 0, details: [`could not look: ${(err as Error).message}`], ...(last ?? {}) };
    }
    if (Date.now() - start > timeoutMs) return { leftovers: last, cleanAfterMs: null };
    await new Promise((r) => setTimeout(r, 500));
  }
}
