/**
 * The Docker runtime: runs each desktop as a container on Docker Engine (dockerode), with the
 * catalog entry's image, limits and environment, labelled so deskhub can find its containers
 * again after any crash, and networked so that desktops reach neither each other nor the host.
 *
 * Two network modes (DOCKER_NETWORK_MODE):
 * - `bridge` (default): containers join a user-defined bridge (DOCKER_NETWORK, default
 *   `deskhub-desktops`) created with inter-container traffic disabled; the proxy reaches each
 *   desktop at its address on that bridge. The host guard (host-guard.ts) closes the one
 *   gap Docker leaves: connections from containers to the host's own addresses.
 * - `published`: the same network, and the desktop port is also published on 127.0.0.1 with a
 *   port Docker picks; the proxy uses 127.0.0.1:<port>. For hosts where container addresses are
 *   not routable from the proxy (Docker Desktop, a proxy in another network namespace).
 *
 * Readiness probing is the lifecycle's job: create() resolves once the container is started.
 */
import Docker from 'dockerode';
import { ConfigError, env, loadConfig } from '@deskhub/config';
import type { Logger } from 'pino';
import type { CatalogEntry } from '../../catalog.ts';
import { parseSize } from '../../sizes.ts';
import type {
  Availability,
  DesktopRuntime,
  DesktopSpec,
  HomeStatus,
  RuntimeEvent,
  RuntimeInstance,
  RuntimeStatus,
} from '../types.ts';
import { EventWatcher } from './events.ts';
import { ensureImage, imagePresent, missingImageMessage } from './images.ts';
import { installHostGuard } from './host-guard.ts';
import { homeStorageEnvSpec, optionalHomeStorage, sharedHomesFor, type HomeStorage, type SharedHomes } from './shared-homes.ts';
import {
  asEngineError,
  demultiplex,
  desktopLabels,
  dockerClientFor,
  engineStatus,
  ensureHomeVolume,
  ExpectedEnds,
  instanceSetting,
  errorText,
  exitReason,
  factsFromInspect,
  factsFromListing,
  labelFilters,
  listHomeVolumes,
  removeHomeVolume,
  upstreamOf,
  upstreamSettingsFromLabels,
  unreachableMessage,
  type DockerNetworkMode,
  type UpstreamSettings,
} from './engine.ts';

export interface DockerRuntimeOptions {
  /** A dockerode client; default one follows DOCKER_HOST like the docker CLI (else /var/run/docker.sock). */
  docker?: Docker;
  networkMode?: DockerNetworkMode;
  /** The desktops' network, created if missing. */
  networkName?: string;
  /**
   * `iptables` (default): install the host guard when preparing the network; failing to is an
   * error (the runtime reports itself unavailable). `off`: leave the host firewall alone (you
   * installed the guard yourself, or accept that desktops reach services bound to 0.0.0.0).
   */
  hostGuard?: 'iptables' | 'off';
  /** Separates several deskhub installations (or test runs) on one engine; every container carries it. */
  instance?: string;
  /** Seconds a desktop gets to exit on stop before it is killed. */
  stopTimeoutSeconds?: number;
  /** Homes on storage of this driver and options (HOME_VOLUME_DRIVER, shared-homes.ts); else local volumes. */
  homeStorage?: HomeStorage;
  /** The image of the helpers that make, size and delete homes' folders on shared storage (HOME_HELPER_IMAGE). */
  homeHelperImage?: string;
  logger?: Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;
}

export const DEFAULT_NETWORK = 'deskhub-desktops';

/** The Docker runtime's own environment variables (DOCKER_HOST is dockerode's, read by it). */
export const dockerEnvSpec = {
  DOCKER_NETWORK_MODE: env.oneOf(['bridge', 'published'] as const, 'bridge'),
  DOCKER_NETWORK: env.custom((raw, name) => {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(raw)) throw new ConfigError(name, `"${raw}" is not a valid Docker network name`);
    return raw;
  }, DEFAULT_NETWORK),
  DOCKER_HOST_GUARD: env.oneOf(['iptables', 'off'] as const, 'iptables'),
  DESKHUB_INSTANCE: instanceSetting,
  ...homeStorageEnvSpec,
};

/** Reads the runtime's settings; throws a ConfigError naming the variable on a bad value. */
export function dockerRuntimeOptionsFromEnv(source: NodeJS.ProcessEnv = process.env): DockerRuntimeOptions {
  const config = loadConfig(dockerEnvSpec, source);
  const docker = dockerClientFor(source);
  return {
    ...(docker ? { docker } : {}),
    networkMode: config.DOCKER_NETWORK_MODE,
    networkName: config.DOCKER_NETWORK,
    hostGuard: config.DOCKER_HOST_GUARD,
    instance: config.DESKHUB_INSTANCE,
    ...optionalHomeStorage(config),
  };
}

export class DockerRuntime implements DesktopRuntime {
  readonly name = 'docker' as const;
  readonly docker: Docker;
  readonly networkMode: DockerNetworkMode;
  readonly networkName: string;
  readonly instance: string;
  private readonly hostGuard: 'iptables' | 'off';
  private readonly stopTimeout: number;
  private readonly log: DockerRuntimeOptions['logger'];
  private prepared: Promise<{ bridge: string; networkId: string }> | null = null;
  /** Desktops deskhub itself is stopping or removing: their ends are not news. */
  private readonly expected = new ExpectedEnds();
  private readonly watchers = new Set<EventWatcher>();
  /** Homes on shared storage, when HOME_VOLUME_DRIVER says so. */
  private readonly shared: SharedHomes | undefined;

  constructor(options: DockerRuntimeOptions = {}) {
    this.docker = options.docker ?? new Docker();
    this.networkMode = options.networkMode ?? 'bridge';
    this.networkName = options.networkName ?? DEFAULT_NETWORK;
    this.instance = options.instance ?? 'default';
    this.hostGuard = options.hostGuard ?? 'iptables';
    this.stopTimeout = options.stopTimeoutSeconds ?? 10;
    this.log = options.logger;
    this.shared = sharedHomesFor(options, this.docker, this.instance);
  }

  /** Label filters that select this installation's desktops. */
  get labelFilters(): string[] {
    return labelFilters(this.instance);
  }

  async available(): Promise<Availability> {
    try {
      await this.docker.ping();
    } catch (err) {
      return { ok: false, reason: unreachableMessage(this.docker, err) };
    }
    try {
      await this.prepare();
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
    return { ok: true };
  }

  async availableFor(type: CatalogEntry): Promise<Availability> {
    const engine = await this.available();
    if (!engine.ok) return engine;
    if (!type.image) return { ok: false, reason: `desktop type ${type.id} has no image` };
    if (type.home && this.shared) {
      const storage = await this.shared.availability(type.id);
      if (!storage.ok) return storage;
    }
    if ((type.pullPolicy ?? 'if-missing') !== 'never') return { ok: true };
    try {
      if (await imagePresent(this.docker, type.image)) return { ok: true };
    } catch (err) {
      return { ok: false, reason: `image ${type.image} could not be inspected: ${errorText(err)}` };
    }
    return { ok: false, reason: missingImageMessage(type.image) };
  }

  /** Creates the desktops' network when missing and installs the host guard; once per runtime (retried after a failure). */
  prepare(): Promise<{ bridge: string; networkId: string }> {
    if (!this.prepared) {
      this.prepared = this.prepareOnce().catch((err: unknown) => {
        this.prepared = null;
        throw err;
      });
    }
    return this.prepared;
  }

  private async prepareOnce(): Promise<{ bridge: string; networkId: string }> {
    let info = await this.inspectNetwork();
    if (!info) {
      try {
        await this.docker.createNetwork({
          Name: this.networkName,
          Driver: 'bridge',
          CheckDuplicate: true,
          Labels: { deskhub: '1' },
          Options: { 'com.docker.network.bridge.enable_icc': 'false' },
        });
      } catch (err) {
        // Another deskhub process may have created it in the meantime (409).
        if (engineStatus(err) !== 409) {
          throw new Error(`could not create Docker network ${this.networkName}: ${errorText(err)}`);
        }
      }
      info = await this.inspectNetwork();
      if (!info) throw new Error(`Docker network ${this.networkName} vanished right after it was created`);
      this.log?.info({ network: this.networkName }, 'created the desktops network');
    }
    if (info.Driver !== 'bridge') {
      throw new Error(`Docker network ${this.networkName} is a ${info.Driver} network; desktops need a bridge (DOCKER_NETWORK)`);
    }
    if (info.Options?.['com.docker.network.bridge.enable_icc'] !== 'false') {
      // Never run desktops where they can reach each other.
      throw new Error(
        `Docker network ${this.networkName} allows traffic between containers; remove it (docker network rm ${this.networkName}) so deskhub recreates it with enable_icc=false`,
      );
    }
    const bridge = info.Options?.['com.docker.network.bridge.name'] ?? `br-${info.Id.slice(0, 12)}`;
    if (this.hostGuard === 'iptables') {
      try {
        await installHostGuard(bridge);
      } catch (err) {
        throw new Error(
          `could not install the host guard on ${bridge} (iptables, needs root or CAP_NET_ADMIN): ${errorText(err)}; ` +
            `install it as root with: node --import tsx services/control-plane/src/runtime/docker/host-guard.ts install ${bridge}, then set DOCKER_HOST_GUARD=off`,
        );
      }
    }
    return { bridge, networkId: info.Id };
  }

  private async inspectNetwork(): Promise<{ Id: string; Driver: string; Options?: Record<string, string> } | null> {
    try {
      return (await this.docker.getNetwork(this.networkName).inspect()) as { Id: string; Driver: string; Options?: Record<string, string> };
    } catch (err) {
      if (engineStatus(err) === 404) return null;
      throw err;
    }
  }

  containerName(spec: DesktopSpec): string {
    const id = spec.desktopId.replace(/[^a-zA-Z0-9]/g, '').slice(0, 12);
    const scope = this.instance === 'default' ? '' : `${this.instance}-`;
    return `deskhub-${scope}${spec.proxyPath}-${id}`.replace(/[^a-zA-Z0-9_.-]/g, '-');
  }

  async create(spec: DesktopSpec, onEvent?: (event: RuntimeEvent) => void): Promise<RuntimeInstance> {
    try {
      return await this.createContainer(spec, onEvent);
    } catch (err) {
      throw asEngineError(this.docker, err);
    }
  }

  private async createContainer(spec: DesktopSpec, onEvent?: (event: RuntimeEvent) => void): Promise<RuntimeInstance> {
    const type = spec.type;
    let prepared = await this.prepare();
    // The network may have been removed (or recreated) behind deskhub's back: make it again.
    const network = await this.inspectNetwork();
    if (!network || network.Id !== prepared.networkId) {
      this.prepared = null;
      prepared = await this.prepare();
    } else if (this.hostGuard === 'iptables') {
      // Cheap when in place (a few iptables checks): repairs a guard flushed while deskhub runs.
      await installHostGuard(prepared.bridge);
    }
    const image = await ensureImage(this.docker, type, onEvent);
    const portKey = `${type.port}/tcp`;
    const limits = {
      ShmSize: type.shmSize ? parseSize(type.shmSize, `${type.id}.shmSize`) : undefined,
      Memory: type.memory ? parseSize(type.memory, `${type.id}.memory`) : undefined,
      NanoCpus: type.cpus ? Math.round(type.cpus * 1e9) : undefined,
      PidsLimit: type.pids,
    };
    const options: Docker.ContainerCreateOptions = {
      name: this.containerName(spec),
      Image: image,
      Env: Object.entries(spec.env).map(([key, value]) => `${key}=${value}`),
      Labels: desktopLabels(spec, this.instance),
      ExposedPorts: { [portKey]: {} },
      HostConfig: {
        ...limits,
        // Same as Memory: no swap on top of the limit.
        MemorySwap: limits.Memory,
        Privileged: false,
        // No setuid or file-capability escalation inside the desktop (an image that needs sudo will not get it).
        SecurityOpt: ['no-new-privileges:true'],
        // Raw sockets would let a desktop forge ARP on the shared bridge and pose as another desktop
        // to the proxy (which sends that desktop's credentials); enable_icc=false does not stop layer 2.
        CapDrop: ['NET_RAW'],
        // The control plane decides when a desktop runs; Docker must not resurrect one behind its back.
        RestartPolicy: { Name: 'no' },
        NetworkMode: this.networkName,
        PortBindings: this.networkMode === 'published' ? { [portKey]: [{ HostIp: '127.0.0.1', HostPort: '' }] } : undefined,
        LogConfig: { Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '2' } },
      },
    };

    if (spec.home) {
      // A named volume: Docker copies the image's directory (its files and owner, uid 1000 in a
      // Kasm image) into it when it is first mounted, so a new home is the user's to write.
      // On shared storage (HOME_VOLUME_DRIVER), a volume of that driver naming the home's own folder.
      await this.shared?.prepare(spec.home.id);
      const volume = await ensureHomeVolume(this.docker, spec, this.instance, this.shared?.driverConfig(spec.home.id));
      options.HostConfig!.Mounts = [{ Type: 'volume', Source: volume, Target: spec.home.path }];
    }

    onEvent?.({ kind: 'create', message: `creating container from ${image}` });
    let container: Docker.Container;
    try {
      container = await this.docker.createContainer(options);
    } catch (err) {
      if (engineStatus(err) !== 409) throw new Error(`could not create the container: ${errorText(err)}`);
      // A container of this very desktop left by a crash mid-create: replace it.
      await this.removeLeftover(options.name!, spec.desktopId);
      container = await this.docker.createContainer(options);
    }
    try {
      onEvent?.({ kind: 'start', message: 'starting container' });
      await container.start();
      return await this.instanceOf(container.id, type);
    } catch (err) {
      const logs = await this.logs(container.id, 20).catch(() => '');
      await container.remove({ force: true }).catch(() => undefined);
      throw new Error(`container of ${spec.proxyPath} did not start: ${errorText(err)}${logs ? `; last output: ${logs.trim()}` : ''}`);
    }
  }

  private async removeLeftover(name: string, desktopId: string): Promise<void> {
    const existing = await this.docker.getContainer(name).inspect();
    if (existing.Config.Labels?.['deskhub.desktop'] !== desktopId || existing.Config.Labels?.['deskhub.instance'] !== this.instance) {
      throw new Error(`a container named ${name} exists and does not belong to desktop ${desktopId}`);
    }
    this.expected.expect(existing.Id);
    await this.docker.getContainer(existing.Id).remove({ force: true });
  }

  /** Reads back where a running container can be reached. */
  private async instanceOf(runtimeId: string, type?: CatalogEntry): Promise<RuntimeInstance> {
    const info = await this.docker.getContainer(runtimeId).inspect();
    const upstream = upstreamOf(factsFromInspect(info, this.networkName), type ?? this.settingsOf(info), this.networkMode);
    if (!upstream) throw new Error(`container ${runtimeId.slice(0, 12)} has no address on ${this.networkName}${this.networkMode === 'published' ? ' or published port' : ''}`);
    return { runtimeId: info.Id, upstream };
  }

  /** What start() needs from a container it did not create in this process: stored on it as labels. */
  private settingsOf(info: Docker.ContainerInspectInfo): UpstreamSettings {
    return upstreamSettingsFromLabels(info.Config.Labels ?? {}, Number(Object.keys(info.Config.ExposedPorts ?? {})[0]?.split('/')[0] ?? 0));
  }

  async start(runtimeId: string): Promise<RuntimeInstance> {
    this.expected.forget(runtimeId);
    try {
      await this.docker.getContainer(runtimeId).start();
    } catch (err) {
      // 304: already running.
      if (engineStatus(err) !== 304) throw new Error(`could not start container ${runtimeId.slice(0, 12)}: ${errorText(err)}`);
    }
    return this.instanceOf(runtimeId);
  }

  async stop(runtimeId: string): Promise<void> {
    this.expected.expect(runtimeId);
    try {
      await this.docker.getContainer(runtimeId).stop({ t: this.stopTimeout });
    } catch (err) {
      const code = engineStatus(err);
      // 304: already stopped; 404: gone, which is stopped too.
      if (code !== 304 && code !== 404) throw new Error(`could not stop container ${runtimeId.slice(0, 12)}: ${errorText(err)}`);
    }
  }

  async remove(runtimeId: string): Promise<void> {
    this.expected.expect(runtimeId);
    try {
      await this.docker.getContainer(runtimeId).remove({ force: true, v: true });
    } catch (err) {
      const code = engineStatus(err);
      // 404: already gone; 409: removal already in progress.
      if (code !== 404 && code !== 409) throw new Error(`could not remove container ${runtimeId.slice(0, 12)}: ${errorText(err)}`);
    }
  }

  async listHomes(): Promise<HomeStatus[]> {
    if (this.shared) return this.shared.list(this.labelFilters);
    return listHomeVolumes(this.docker, this.labelFilters);
  }

  async removeHome(homeId: string): Promise<void> {
    if (this.shared) return this.shared.remove(homeId, [this.docker]);
    await removeHomeVolume(this.docker, homeId);
  }

  async inspect(runtimeId: string): Promise<RuntimeStatus | null> {
    let info: Docker.ContainerInspectInfo;
    try {
      info = await this.docker.getContainer(runtimeId).inspect();
    } catch (err) {
      if (engineStatus(err) === 404) return null;
      throw err;
    }
    const facts = factsFromInspect(info, this.networkName);
    const status: RuntimeStatus = {
      runtimeId: info.Id,
      desktopId: facts.Labels['deskhub.desktop'] ?? '',
      running: facts.running,
    };
    const upstream = upstreamOf(facts, this.settingsOf(info), this.networkMode);
    if (upstream) status.upstream = upstream;
    if (!facts.running) status.reason = exitReason(info.State);
    return status;
  }

  async list(): Promise<RuntimeStatus[]> {
    const containers = await this.docker.listContainers({ all: true, filters: { label: this.labelFilters } }).catch((err: unknown) => {
      throw asEngineError(this.docker, err);
    });
    return containers.map((c) => {
      const facts = factsFromListing(c, this.networkName);
      const status: RuntimeStatus = { runtimeId: c.Id, desktopId: facts.Labels['deskhub.desktop'] ?? '', running: facts.running };
      const upstream = upstreamOf(facts, upstreamSettingsFromLabels(facts.Labels, c.Ports?.[0]?.PrivatePort), this.networkMode);
      if (upstream) status.upstream = upstream;
      if (!facts.running) status.reason = c.Status;
      return status;
    });
  }

  watch(onExit: (status: RuntimeStatus) => void): () => void {
    const watcher = new EventWatcher({
      docker: this.docker,
      labels: this.labelFilters,
      onStatus: (status) => {
        if (this.expected.has(status.runtimeId)) return;
        onExit(status);
      },
      onError: (err) => this.log?.warn({ err: err.message }, 'docker event stream failed; reopening'),
    });
    this.watchers.add(watcher);
    return () => {
      watcher.close();
      this.watchers.delete(watcher);
    };
  }

  /** Resolves once every watch() stream is open (tests use it to know no event is missed). */
  async watching(): Promise<void> {
    await Promise.all([...this.watchers].map((w) => w.ready));
  }

  async logs(runtimeId: string, lines: number): Promise<string> {
    try {
      const output = (await this.docker.getContainer(runtimeId).logs({
        stdout: true,
        stderr: true,
        tail: Math.max(1, Math.floor(lines)),
        follow: false,
      })) as unknown as Buffer;
      return demultiplex(output);
    } catch (err) {
      if (engineStatus(err) === 404) return '';
      throw err;
    }
  }

  async close(): Promise<void> {
    for (const watcher of this.watchers) watcher.close();
    this.watchers.clear();
  }
}
