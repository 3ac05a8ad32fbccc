/**
 * The runtime registry: builds the runtimes RUNTIME allows (all of them by default) and answers
 * which desktop types can run here, and why not. A runtime that does not answer stays in the
 * registry, reported as unavailable, so the catalog can say why.
 *
 * To add a runtime, add one entry to `runtimeFactories`: its key is the runtime's name, which
 * the catalog, the desktops table, RUNTIME and the runtime contract take from here.
 */
import type { Logger } from '@deskhub/config';
import type { Catalog, CatalogEntry } from '../catalog.ts';
import { ProcessRuntime } from './process.ts';
import { DockerRuntime, dockerRuntimeOptionsFromEnv } from './docker/docker-runtime.ts';
import { SwarmRuntime, swarmRuntimeOptionsFromEnv } from './docker/swarm-runtime.ts';
import type { Availability, DesktopRuntime } from './types.ts';

/** What a runtime factory gets: shared settings, plus the environment for its own variables. */
export interface RuntimeContext {
  dataDir: string;
  logger: Logger;
  /** Stop desktops when the control plane stops (the embedded start). */
  stopDesktopsOnClose: boolean;
  /** Read a runtime's own settings (e.g. DOCKER_HOST) from here with @deskhub/config's loadConfig. */
  env: NodeJS.ProcessEnv;
}

export type RuntimeFactory = (context: RuntimeContext) => DesktopRuntime;

/**
 * Every runtime by name; null would name a runtime left out of this build (the catalog then says
 * so). Not annotated: its keys are where RuntimeName comes from, and the contract's `name` is a
 * RuntimeName; the registry checks each entry is a RuntimeFactory where it reads it.
 */
export const runtimeFactories = {
  process: (context: RuntimeContext) => new ProcessRuntime({ dataDir: context.dataDir, logger: context.logger, stopOnClose: context.stopDesktopsOnClose }),
  // Settings: DOCKER_HOST, DOCKER_NETWORK_MODE, DOCKER_NETWORK, DOCKER_HOST_GUARD, DESKHUB_INSTANCE (docker/docker-runtime.ts).
  docker: (context: RuntimeContext) => new DockerRuntime({ ...dockerRuntimeOptionsFromEnv(context.env), logger: context.logger }),
  // Settings: SWARM_HOST (a manager; default DOCKER_HOST), SWARM_PORTS, SWARM_ENCRYPT, DESKHUB_INSTANCE (docker/swarm-runtime.ts).
  swarm: (context: RuntimeContext) => new SwarmRuntime({ ...swarmRuntimeOptionsFromEnv(context.env), logger: context.logger }),
};

export type RuntimeName = keyof typeof runtimeFactories;

/** The runtime names in name order (the order messages list them in). */
export const runtimeNames = (Object.keys(runtimeFactories) as RuntimeName[]).sort();

export interface RuntimeRegistry {
  /** The runtimes RUNTIME allows, answering or not. */
  readonly all: DesktopRuntime[];
  get(name: RuntimeName): DesktopRuntime | undefined;
  /** Whether a type can run here now, and why not (cached for a few seconds). */
  availability(type: CatalogEntry): Promise<Availability>;
  close(): Promise<void>;
}

export function createRuntimeRegistry(options: {
  selection: 'all' | RuntimeName;
  context: RuntimeContext;
  /** For tests: runtimes built elsewhere, used instead of the factories. */
  runtimes?: DesktopRuntime[];
  cacheMs?: number;
}): RuntimeRegistry {
  const runtimes: DesktopRuntime[] = options.runtimes ?? [];
  if (!options.runtimes) {
    for (const name of Object.keys(runtimeFactories) as RuntimeName[]) {
      const factory: RuntimeFactory | null = runtimeFactories[name];
      if (!factory || (options.selection !== 'all' && options.selection !== name)) continue;
      runtimes.push(factory(options.context));
    }
  }
  const byName = new Map(runtimes.map((r) => [r.name, r]));
  const cacheMs = options.cacheMs ?? 5000;
  const cache = new Map<string, { at: number; value: Promise<Availability> }>();

  const check = async (type: CatalogEntry): Promise<Availability> => {
    const runtime = byName.get(type.runtime);
    if (!runtime) {
      const factory: RuntimeFactory | null = runtimeFactories[type.runtime];
      if (!factory) return { ok: false, reason: `the ${type.runtime} runtime is not part of this deskhub build` };
      return { ok: false, reason: `the ${type.runtime} runtime is not enabled (RUNTIME=${options.selection})` };
    }
    try {
      const general = await runtime.available();
      if (!general.ok) return general;
      return await runtime.availableFor(type);
    } catch (err) {
      return { ok: false, reason: `the ${type.runtime} runtime did not answer: ${(err as Error).message}` };
    }
  };

  return {
    all: runtimes,
    get: (name) => byName.get(name),
    availability(type) {
      const hit = cache.get(type.id);
      if (hit && Date.now() - hit.at < cacheMs) return hit.value;
      const value = check(type);
      cache.set(type.id, { at: Date.now(), value });
      return value;
    },
    async close() {
      await Promise.all(runtimes.map((r) => r.close().catch(() => {})));
    },
  };
}

/** Logs, once at start, which runtimes answer and which types can run. */
export async function describeRuntimes(registry: RuntimeRegistry, catalog: Catalog, logger: Logger): Promise<void> {
  for (const runtime of registry.all) {
    const availability = await runtime.available().catch((err: Error) => ({ ok: false as const, reason: err.message }));
    if (availability.ok) logger.info({ runtime: runtime.name }, 'runtime available');
    else logger.warn({ runtime: runtime.name, reason: availability.reason }, 'runtime not available');
  }
  const unavailable: Record<string, string> = {};
  for (const type of catalog.entries) {
    const a = await registry.availability(type);
    if (!a.ok) unavailable[type.id] = a.reason;
  }
  if (Object.keys(unavailable).length > 0) logger.info({ unavailable }, 'desktop types that cannot run here');
}
