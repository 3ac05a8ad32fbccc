/**
 * The Swarm runtime: runs each desktop as a Docker Swarm service with one task, so the swarm's
 * scheduler places desktops on the node with room for them (the type's memory and CPUs are
 * reservations as well as limits). The engine it talks to (SWARM_HOST, else DOCKER_HOST) must
 * be a swarm manager; a type runs here only when its catalog entry says `runtime: swarm`.
 *
 * A service is not a container, so every catalog field is mapped explicitly (swarmServiceSpec);
 * what a service cannot do is refused when the catalog loads (catalog.ts, swarmGaps):
 *   - restart condition `none`: Swarm never reschedules a desktop. A task that ends, or a node
 *     that goes down, makes the desktop failed with the node and the reason named; the owner
 *     starts it again, on any node that fits.
 *   - reached at a port published in host mode on the node that runs the task (never a routing
 *     mesh port), picked by deskhub from SWARM_PORTS so the node guard can limit those ports to
 *     the proxies' addresses. The upstream is the node's address and that port.
 *   - each desktop on an overlay network of its own: desktops never share a network, so they
 *     cannot reach each other (overlay networks have no switch for inter-container traffic).
 *   - shm_size: a tmpfs at /dev/shm of the type's size. No memory-swap setting exists for
 *     services (the engine's default applies: as much swap as memory, where the node has swap),
 *     no no-new-privileges (API 1.41), no devices.
 *
 * Task state stands in for container state: running, or ended with the task's own error and
 * the node it ran on. Exits are found by polling the manager (task changes are not events).
 */
import Docker from 'dockerode';
import { ConfigError, env, loadConfig } from '@deskhub/config';
import type { Logger } from 'pino';
import type { CatalogEntry } from '../../catalog.ts';
import { parseSize } from '../../sizes.ts';
import type { Availability, DesktopRuntime, DesktopSpec, HomeStatus, RuntimeEvent, RuntimeInstance, RuntimeStatus } from '../types.ts';
import {
  asEngineError,
  demultiplex,
  desktopLabels,
  dockerClientFor,
  engineAddress,
  engineStatus,
  ensureHomeVolume,
  ExpectedEnds,
  instanceSetting,
  errorText,
  labelFilters,
  listHomeVolumes,
  removeHomeVolume,
  unreachableMessage,
  upstreamSettingsFromLabels,
} from './engine.ts';

export interface SwarmRuntimeOptions {
  docker?: Docker;
  instance?: string;
  /** Host-mode ports deskhub picks from, inclusive. */
  ports?: { first: number; last: number };
  /** How often task states are read for watch(). */
  pollMs?: number;
  /** How long create() waits for the task to run (image load, scheduling) before giving up. */
  startTimeoutMs?: number;
  /** Encrypt each desktop's overlay network (IPsec between nodes). */
  encrypted?: boolean;
  /**
   * `nodes` (default): desktops run only where a guard on every node keeps them off the nodes'
   * own services and limits their ports to the proxies. That guard is not built yet, so with
   * `nodes` the runtime reports itself unavailable and says why. `off`: run without it, on nodes
   * and a network you trust (the tests' own swarm).
   */
  guard?: 'nodes' | 'off';
  logger?: Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;
}

function parsePorts(raw: string, name: string): { first: number; last: number } {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(raw.trim());
  const first = Number(m?.[1]);
  const last = Number(m?.[2]);
  if (!m || first < 1024 || last > 65535 || first > last) throw new ConfigError(name, `expected a port range like 30000-32767 (ports 1024-65535), got "${raw}"`);
  return { first, last };
}

export const swarmEnvSpec = {
  SWARM_HOST: env.string(),
  SWARM_PORTS: env.custom((raw, name) => parsePorts(raw, name), { first: 30000, last: 32767 }),
  SWARM_ENCRYPT: env.bool(false),
  SWARM_GUARD: env.oneOf(['nodes', 'off'] as const, 'nodes'),
  DESKHUB_INSTANCE: instanceSetting,
};

export function swarmRuntimeOptionsFromEnv(source: NodeJS.ProcessEnv = process.env): SwarmRuntimeOptions {
  const config = loadConfig(swarmEnvSpec, source);
  const docker = dockerClientFor(source, config.SWARM_HOST ? 'SWARM_HOST' : 'DOCKER_HOST');
  return { ...(docker ? { docker } : {}), instance: config.DESKHUB_INSTANCE, ports: config.SWARM_PORTS, encrypted: config.SWARM_ENCRYPT, guard: config.SWARM_GUARD };
}

/** A task as the manager reports it (the fields read here). */
interface SwarmTask {
  ID: string;
  ServiceID: string;
  NodeID?: string;
  Version?: { Index: number };
  CreatedAt?: string;
  DesiredState: string;
  Status: { State: string; Message?: string; Err?: string; Timestamp?: string; ContainerStatus?: { ExitCode?: number }; PortStatus?: { Ports?: Array<{ TargetPort: number; PublishedPort: number; PublishMode: string }> } };
}

interface SwarmService {
  ID: string;
  Version: { Index: number };
  Spec: { Name: string; Labels?: Record<string, string>; Mode?: { Replicated?: { Replicas?: number } }; EndpointSpec?: { Ports?: Array<{ PublishedPort?: number; TargetPort?: number }> }; TaskTemplate?: { Networks?: Array<{ Target: string }> } } & Record<string, unknown>;
}

interface SwarmNode {
  ID: string;
  Description?: { Hostname?: string };
  Spec?: { Labels?: Record<string, string>; Availability?: string };
  Status: { State: string; Addr?: string; Message?: string };
}

/** Task states, in the order a task moves through them (docker/swarmkit api/types.proto). */
const ENDED = new Set(['complete', 'shutdown', 'failed', 'rejected', 'orphaned', 'remove']);

/** The service's name: its path and a slice of its id, like the Docker runtime's container names. */
function serviceName(spec: DesktopSpec, instance: string): string {
  const id = spec.desktopId.replace(/[^a-zA-Z0-9]/g, '').slice(0, 12);
  const scope = instance === 'default' ? '' : `${instance}-`;
  // Service names: at most 63 characters, letters, digits and dashes.
  return `deskhub-${scope}${spec.proxyPath}-${id}`.replace(/[^a-zA-Z0-9-]/g, '-').slice(0, 63).replace(/-+$/, '');
}

/** How a type's fields become a service: every field is named here; swarmGaps() lists the ones that cannot be. */
export function swarmServiceSpec(spec: DesktopSpec, options: { name: string; instance: string; network: string; publishedPort: number; image: string; homeVolume?: string }): Record<string, unknown> {
  const type = spec.type;
  const memory = type.memory ? parseSize(type.memory, `${type.id}.memory`) : undefined;
  const nanoCpus = type.cpus ? Math.round(type.cpus * 1e9) : undefined;
  const mounts: Array<Record<string, unknown>> = [];
  if (type.shmSize) {
    // Services have no shm_size: a tmpfs of that size at /dev/shm does the same.
    mounts.push({ Type: 'tmpfs', Target: '/dev/shm', TmpfsOptions: { SizeBytes: parseSize(type.shmSize, `${type.id}.shmSize`), Mode: 0o1777 } });
  }
  if (options.homeVolume && spec.home) mounts.push({ Type: 'volume', Source: options.homeVolume, Target: spec.home.path });
  const labels = desktopLabels(spec, options.instance);
  return {
    Name: options.name,
    Labels: { ...labels, 'deskhub.published-port': String(options.publishedPort), 'deskhub.network': options.network },
    TaskTemplate: {
      ContainerSpec: {
        Image: options.image,
        Env: Object.entries(spec.env).map(([key, value]) => `${key}=${value}`),
        Labels: labels,
        Mounts: mounts,
        // Raw sockets would let a desktop forge frames on its network (as in the Docker runtime).
        CapabilityDrop: ['CAP_NET_RAW'],
        StopGracePeriod: 10e9,
      },
      Resources: {
        Limits: { ...(memory ? { MemoryBytes: memory } : {}), ...(nanoCpus ? { NanoCPUs: nanoCpus } : {}), ...(type.pids ? { Pids: type.pids } : {}) },
        // Reserved as well as limited: the scheduler places desktops by free capacity.
        Reservations: { ...(memory ? { MemoryBytes: memory } : {}), ...(nanoCpus ? { NanoCPUs: nanoCpus } : {}) },
      },
      // Never rescheduled: a desktop that ends is failed, and its owner starts it again.
      RestartPolicy: { Condition: 'none', MaxAttempts: 0 },
      Placement: {
        Constraints: type.placement?.constraints ?? [],
        Preferences: (type.placement?.spread ?? []).map((descriptor) => ({ Spread: { SpreadDescriptor: descriptor } })),
      },
      Networks: [{ Target: options.network }],
      LogDriver: { Name: 'json-file', Options: { 'max-size': '10m', 'max-file': '2' } },
    },
    Mode: { Replicated: { Replicas: 1 } },
    EndpointSpec: {
      // DNS round robin: no virtual IP is needed for a service nobody reaches by name.
      Mode: 'dnsrr',
      Ports: [{ Protocol: 'tcp', TargetPort: type.port, PublishedPort: options.publishedPort, PublishMode: 'host' }],
    },
  };
}

/** Catalog fields a swarm service cannot honour, as `field: why` (catalog.ts refuses the type with them). */
export function swarmGaps(type: Pick<CatalogEntry, 'pullPolicy' | 'home'>): { field: string; why: string }[] {
  const gaps: { field: string; why: string }[] = [];
  if (type.pullPolicy === 'always') {
    gaps.push({ field: 'pullPolicy', why: 'a swarm task pulls only a missing image on engines with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1, which deskhub requires; use if-missing' });
  }
  if (type.pullPolicy === 'never') {
    gaps.push({ field: 'pullPolicy', why: 'a swarm engine pulls an image that its node lacks whatever the service says; put the image on every node and use if-missing' });
  }
  if (type.home) {
    gaps.push({ field: 'home', why: 'homes of swarm desktops are not kept yet: a volume lives on one node and Swarm may place the next desktop elsewhere' });
  }
  return gaps;
}

export class SwarmRuntime implements DesktopRuntime {
  readonly name = 'swarm' as const;
  readonly docker: Docker;
  readonly instance: string;
  private readonly ports: { first: number; last: number };
  private readonly pollMs: number;
  private readonly startTimeoutMs: number;
  private readonly encrypted: boolean;
  private readonly guard: 'nodes' | 'off';
  private readonly log: SwarmRuntimeOptions['logger'];
  /** Desktops deskhub itself is stopping or removing: their ends are not news. */
  private readonly expected = new ExpectedEnds();
  private readonly watchers = new Set<{ timer: NodeJS.Timeout; read: Promise<void> }>();

  constructor(options: SwarmRuntimeOptions = {}) {
    this.docker = options.docker ?? new Docker();
    this.instance = options.instance ?? 'default';
    this.ports = options.ports ?? { first: 30000, last: 32767 };
    this.pollMs = options.pollMs ?? 2000;
    this.startTimeoutMs = options.startTimeoutMs ?? 120_000;
    this.encrypted = options.encrypted ?? false;
    this.guard = options.guard ?? 'nodes';
    this.log = options.logger;
  }

  get labelFilters(): string[] {
    return labelFilters(this.instance);
  }

  async available(): Promise<Availability> {
    let info: { Swarm?: { LocalNodeState?: string; ControlAvailable?: boolean } };
    try {
      info = (await this.docker.info()) as typeof info;
    } catch (err) {
      return { ok: false, reason: unreachableMessage(this.docker, err) };
    }
    if (info.Swarm?.LocalNodeState !== 'active') return { ok: false, reason: `the engine at ${engineAddress(this.docker)} is not part of a swarm (docker swarm init)` };
    if (!info.Swarm.ControlAvailable) return { ok: false, reason: `the engine at ${engineAddress(this.docker)} is a swarm worker; SWARM_HOST must name a manager` };
    if (this.guard === 'nodes') {
      return {
        ok: false,
        reason:
          "the swarm's node guard (desktops kept off the nodes' own services and each other, their ports open to the proxies only) is not part of this deskhub yet; " +
          'set SWARM_GUARD=off to run swarm desktops without it, on nodes and a network you trust',
      };
    }
    return { ok: true };
  }

  async availableFor(type: CatalogEntry): Promise<Availability> {
    const swarm = await this.available();
    if (!swarm.ok) return swarm;
    if (!type.image) return { ok: false, reason: `desktop type ${type.id} has no image` };
    const ready = (await this.nodes()).filter((n) => n.Status.State === 'ready' && (n.Spec?.Availability ?? 'active') === 'active');
    if (ready.length === 0) return { ok: false, reason: 'no swarm node is ready and active' };
    return { ok: true };
  }

  private async nodes(): Promise<SwarmNode[]> {
    return (await this.docker.listNodes()) as SwarmNode[];
  }

  private async services(): Promise<SwarmService[]> {
    try {
      return (await this.docker.listServices({ filters: { label: this.labelFilters } } as Docker.ServiceListOptions)) as unknown as SwarmService[];
    } catch (err) {
      // An engine that is in no swarm at all has no services, so no desktops: an empty list, not
      // an error each reconcile pass (most installations never use this runtime). A manager
      // without quorum is an error: its desktops are not known to be gone.
      if (engineStatus(err) === 503) {
        const info = (await this.docker.info().catch(() => null)) as { Swarm?: { LocalNodeState?: string } } | null;
        if (info?.Swarm?.LocalNodeState === 'inactive') return [];
      }
      throw err;
    }
  }

  private async tasksOf(serviceId: string): Promise<SwarmTask[]> {
    const tasks = (await this.docker.listTasks({ filters: { service: [serviceId] } })) as SwarmTask[];
    // Newest first: a service scaled down and up again has its old tasks too.
    return tasks.sort((a, b) => (b.Version?.Index ?? 0) - (a.Version?.Index ?? 0) || String(b.CreatedAt).localeCompare(String(a.CreatedAt)));
  }

  /** A port of SWARM_PORTS that none of this swarm's services publishes. */
  private async freePort(): Promise<number> {
    const all = (await this.docker.listServices()) as unknown as SwarmService[];
    const used = new Set(all.flatMap((s) => (s.Spec.EndpointSpec?.Ports ?? []).map((p) => p.PublishedPort ?? 0)));
    const size = this.ports.last - this.ports.first + 1;
    const start = Math.floor(Math.random() * size);
    for (let i = 0; i < size; i++) {
      const port = this.ports.first + ((start + i) % size);
      if (!used.has(port)) return port;
    }
    throw new Error(`every port of SWARM_PORTS (${this.ports.first}-${this.ports.last}) is taken by a service`);
  }

  async create(spec: DesktopSpec, onEvent?: (event: RuntimeEvent) => void): Promise<RuntimeInstance> {
    try {
      return await this.createService(spec, onEvent);
    } catch (err) {
      throw asEngineError(this.docker, err);
    }
  }

  private async createService(spec: DesktopSpec, onEvent?: (event: RuntimeEvent) => void): Promise<RuntimeInstance> {
    const name = serviceName(spec, this.instance);
    const leftover = await this.serviceByName(name);
    if (leftover) {
      // A service of this very desktop left by a crash mid-create: replace it.
      if (leftover.Spec.Labels?.['deskhub.desktop'] !== spec.desktopId || leftover.Spec.Labels?.['deskhub.instance'] !== this.instance) {
        throw new Error(`a swarm service named ${name} exists and does not belong to desktop ${spec.desktopId}`);
      }
      await this.remove(leftover.ID);
    }
    const network = await this.ensureNetwork(name, spec);
    const homeVolume = spec.home ? await ensureHomeVolume(this.docker, spec, this.instance) : undefined;
    onEvent?.({ kind: 'create', message: `creating swarm service from ${spec.type.image}` });
    let service: SwarmService | undefined;
    for (let attempt = 0; attempt < 5 && !service; attempt++) {
      const publishedPort = await this.freePort();
      try {
        const created = await this.docker.createService(swarmServiceSpec(spec, { name, instance: this.instance, network, publishedPort, image: spec.type.image!, ...(homeVolume ? { homeVolume } : {}) }) as unknown as Docker.CreateServiceOptions);
        service = { ID: (created as unknown as { id: string }).id } as SwarmService;
      } catch (err) {
        // 409: another create took the port (or the name) in the meantime; pick again.
        if (engineStatus(err) !== 409 || attempt === 4) {
          await this.removeNetwork(network);
          throw new Error(`could not create the swarm service: ${errorText(err)}`);
        }
      }
    }
    try {
      return await this.waitForTask(service!.ID, onEvent);
    } catch (err) {
      const logs = await this.logs(service!.ID, 20).catch(() => '');
      await this.remove(service!.ID).catch(() => undefined);
      throw new Error(`desktop ${spec.proxyPath} did not start: ${(err as Error).message}${logs ? `; last output: ${logs.trim()}` : ''}`);
    }
  }

  private async serviceByName(name: string): Promise<SwarmService | undefined> {
    const services = (await this.docker.listServices({ filters: { name: [name] } } as Docker.ServiceListOptions)) as unknown as SwarmService[];
    return services.find((s) => s.Spec.Name === name);
  }

  /** The desktop's own overlay network, labelled like it so list() and remove() find it again. */
  private async ensureNetwork(name: string, spec: DesktopSpec): Promise<string> {
    try {
      await this.docker.createNetwork({
        Name: name,
        Driver: 'overlay',
        CheckDuplicate: true,
        Attachable: false,
        Labels: { deskhub: '1', 'deskhub.instance': this.instance, 'deskhub.desktop': spec.desktopId },
        Options: this.encrypted ? { encrypted: 'true' } : {},
      });
    } catch (err) {
      if (engineStatus(err) !== 409) throw new Error(`could not create the desktop's overlay network ${name}: ${errorText(err)}`);
    }
    return name;
  }

  /** Removes the desktop's network and waits until the manager has let it go (removal is deferred while a task holds it). */
  private async removeNetwork(name: string): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      try {
        await this.docker.getNetwork(name).remove();
      } catch (err) {
        const code = engineStatus(err);
        if (code === 404) return;
        if (code !== 403 && code !== 409 && code !== 500) throw err;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    this.log?.warn({ network: name }, 'desktop network still in use after 30 s; the manager removes it once its task lets go');
  }

  /**
   * Scales the service to no task and waits until its tasks are gone from every node that is up
   * (their containers removed, with their hold on the network and the home volume). Tasks on a
   * node that is down stay until it comes back; they are not waited for.
   */
  private async scaleToNone(serviceId: string): Promise<void> {
    const service = (await this.docker.getService(serviceId).inspect()) as SwarmService;
    if ((service.Spec.Mode?.Replicated?.Replicas ?? 0) !== 0) await this.scale(service, 0);
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const [tasks, nodes] = await Promise.all([this.tasksOf(serviceId), this.nodeMap()]);
      if (tasks.every((t) => !t.NodeID || nodes.get(t.NodeID)?.Status.State !== 'ready')) {
        // The manager forgets a task a moment before its node has removed the container; the
        // manager's own engine (where a one-node swarm runs everything) is asked directly.
        const local = await this.docker.listContainers({ all: true, filters: { label: [`com.docker.swarm.service.id=${serviceId}`] } });
        if (local.length === 0) return;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error('its task was not gone within 30 s');
  }

  private async nodeName(nodeId: string | undefined): Promise<string> {
    const node = nodeId ? ((await this.docker.getNode(nodeId).inspect().catch(() => undefined)) as SwarmNode | undefined) : undefined;
    return whereRan(nodeId, node);
  }

  /**
   * Waits until the service's newest task runs (its upstream), or ended (why, on which node).
   * `older`: tasks from before a restart, never the one waited for.
   */
  private async waitForTask(serviceId: string, onEvent?: (event: RuntimeEvent) => void, older: Set<string> = new Set()): Promise<RuntimeInstance> {
    const deadline = Date.now() + this.startTimeoutMs;
    const started = Date.now();
    let last = '';
    let placed = false;
    while (Date.now() < deadline) {
      const task = (await this.tasksOf(serviceId)).find((t) => !older.has(t.ID));
      if (task) {
        const state = task.Status.State;
        last = state;
        if (!placed && task.NodeID) {
          // Where the single engine reports pull progress, a task is `preparing` on its node (the
          // node loads, or pulls, the image) and then starting: said once, with the node.
          placed = true;
          onEvent?.({ kind: 'start', message: `placed on ${await this.nodeName(task.NodeID)}: preparing and starting` });
        }
        if (state === 'running') return this.instanceOf(serviceId);
        if (ENDED.has(state)) throw new Error(endedReason(task, await this.nodeName(task.NodeID)));
        // Unschedulable (no node fits): it would wait forever.
        if (state === 'pending' && task.Status.Err && Date.now() - started > 10_000) throw new Error(`no node can run it: ${task.Status.Err}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`its task was not running after ${Math.round(this.startTimeoutMs / 1000)} s (state ${last || 'none'})`);
  }

  private async instanceOf(serviceId: string): Promise<RuntimeInstance> {
    const status = await this.inspect(serviceId);
    if (!status?.running || !status.upstream) throw new Error(`service ${serviceId.slice(0, 12)} is not running${status?.reason ? `: ${status.reason}` : ''}`);
    return { runtimeId: serviceId, upstream: status.upstream };
  }

  async start(runtimeId: string): Promise<RuntimeInstance> {
    this.expected.forget(runtimeId);
    try {
      const service = (await this.docker.getService(runtimeId).inspect()) as SwarmService;
      const [task] = await this.tasksOf(runtimeId);
      if ((service.Spec.Mode?.Replicated?.Replicas ?? 0) === 1 && task && !ENDED.has(task.Status.State)) return await this.waitForTask(runtimeId);
      // A task that ended is never restarted: the service goes to no task, then to a new one,
      // placed anew. (Scaled up while its ended task is still there, the orchestrator counts that
      // task's slot as taken and makes none.)
      await this.scaleToNone(runtimeId);
      await this.scale((await this.docker.getService(runtimeId).inspect()) as SwarmService, 1);
      return await this.waitForTask(runtimeId);
    } catch (err) {
      if (engineStatus(err) === 404) throw new Error(`swarm service ${runtimeId.slice(0, 12)} no longer exists`);
      throw asEngineError(this.docker, err);
    }
  }

  private async scale(service: SwarmService, replicas: number): Promise<void> {
    const spec = { ...service.Spec, Mode: { Replicated: { Replicas: replicas } } };
    await this.docker.getService(service.ID).update({ version: service.Version.Index, ...spec } as unknown as Record<string, unknown>);
  }

  async stop(runtimeId: string): Promise<void> {
    this.expected.expect(runtimeId);
    try {
      // Stopped means no task, as a stopped container is not running.
      await this.scaleToNone(runtimeId);
    } catch (err) {
      if (engineStatus(err) === 404) return;
      throw new Error(`could not stop swarm service ${runtimeId.slice(0, 12)}: ${errorText(err)}`);
    }
  }

  async remove(runtimeId: string): Promise<void> {
    this.expected.expect(runtimeId);
    let network: string | undefined;
    try {
      const service = (await this.docker.getService(runtimeId).inspect()) as SwarmService;
      network = service.Spec.Labels?.['deskhub.network'];
      // Gone means gone, as a removed container is: the task's container (and its hold on the
      // network and the home volume) first, then the service.
      await this.scaleToNone(runtimeId).catch((err: unknown) => this.log?.warn({ service: runtimeId, err: errorText(err) }, 'removing a desktop whose task does not end'));
      await this.docker.getService(runtimeId).remove();
    } catch (err) {
      if (engineStatus(err) !== 404) throw new Error(`could not remove swarm service ${runtimeId.slice(0, 12)}: ${errorText(err)}`);
    }
    if (network) await this.removeNetwork(network);
  }

  async inspect(runtimeId: string): Promise<RuntimeStatus | null> {
    let service: SwarmService;
    try {
      service = (await this.docker.getService(runtimeId).inspect()) as SwarmService;
    } catch (err) {
      if (engineStatus(err) === 404) return null;
      throw asEngineError(this.docker, err);
    }
    return this.statusOf(service, await this.tasksOf(service.ID), await this.nodeMap());
  }

  private async nodeMap(): Promise<Map<string, SwarmNode>> {
    return new Map((await this.nodes()).map((n) => [n.ID, n]));
  }

  private statusOf(service: SwarmService, tasks: SwarmTask[], nodes: Map<string, SwarmNode>): RuntimeStatus {
    const labels = service.Spec.Labels ?? {};
    const status: RuntimeStatus = { runtimeId: service.ID, desktopId: labels['deskhub.desktop'] ?? '', running: false };
    const task = tasks[0];
    const replicas = service.Spec.Mode?.Replicated?.Replicas ?? 0;
    if (!task) {
      status.reason = replicas === 0 ? 'stopped (no task)' : 'no task yet';
      return status;
    }
    const node = task.NodeID ? nodes.get(task.NodeID) : undefined;
    const where = whereRan(task.NodeID, node);
    if (node && node.Status.State !== 'ready' && !ENDED.has(task.Status.State)) {
      // A lost node's tasks keep their last state for a while: the node's state is the news.
      status.reason = `node ${where} is ${node.Status.State}${node.Status.Message ? ` (${node.Status.Message})` : ''}`;
      return status;
    }
    if (task.Status.State === 'running' && task.DesiredState === 'running') {
      status.running = true;
      const settings = upstreamSettingsFromLabels(labels, undefined);
      const published = task.Status.PortStatus?.Ports?.find((p) => p.TargetPort === settings.port)?.PublishedPort ?? Number(labels['deskhub.published-port']);
      const host = node?.Status.Addr;
      if (host && published) status.upstream = { scheme: settings.scheme, host, port: published, verifyTls: settings.verifyTls };
      return status;
    }
    if (ENDED.has(task.Status.State)) {
      status.reason = endedReason(task, where);
      return status;
    }
    status.reason = `task ${task.Status.State} on ${where}`;
    return status;
  }

  async list(): Promise<RuntimeStatus[]> {
    try {
      const [services, nodes] = await Promise.all([this.services(), this.nodeMap()]);
      if (services.length === 0) return [];
      const tasks = (await this.docker.listTasks({ filters: { service: services.map((s) => s.ID) } })) as SwarmTask[];
      const byService = new Map<string, SwarmTask[]>();
      for (const task of tasks) byService.set(task.ServiceID, [...(byService.get(task.ServiceID) ?? []), task]);
      return services.map((s) => {
        const own = (byService.get(s.ID) ?? []).sort((a, b) => (b.Version?.Index ?? 0) - (a.Version?.Index ?? 0));
        return this.statusOf(s, own, nodes);
      });
    } catch (err) {
      throw asEngineError(this.docker, err);
    }
  }

  watch(onExit: (status: RuntimeStatus) => void): () => void {
    // Task changes are not engine events: read them every pollMs and report each desktop that
    // was running and is not any more (or is gone).
    const running = new Map<string, RuntimeStatus>();
    let markRead!: () => void;
    const read = new Promise<void>((resolve) => (markRead = resolve));
    let primed = false;
    let busy = false;
    const poll = async () => {
      if (busy) return;
      busy = true;
      try {
        const statuses = await this.list();
        const seen = new Set<string>();
        for (const status of statuses) {
          seen.add(status.runtimeId);
          if (status.running) running.set(status.runtimeId, status);
          else if (running.delete(status.runtimeId) && primed && !this.expected.has(status.runtimeId)) onExit(status);
        }
        for (const [id, status] of running) {
          if (seen.has(id)) continue;
          running.delete(id);
          if (primed && !this.expected.has(id)) onExit({ runtimeId: id, desktopId: status.desktopId, running: false, reason: 'service removed' });
        }
        primed = true;
        markRead();
      } catch (err) {
        this.log?.warn({ err: (err as Error).message }, 'reading swarm task states failed; trying again');
      } finally {
        busy = false;
      }
    };
    const timer = setInterval(() => void poll(), this.pollMs);
    const watcher = { timer, read };
    this.watchers.add(watcher);
    void poll();
    return () => {
      clearInterval(timer);
      markRead();
      this.watchers.delete(watcher);
    };
  }

  /** Resolves once every watch() has read the task states once (it then sees the next exit). */
  async watching(): Promise<void> {
    await Promise.all([...this.watchers].map((w) => w.read));
  }

  // Homes are named volumes as on a single engine, seen through the manager's own engine: right
  // on a one-node swarm. On several nodes a volume lives where it was made, so the catalog
  // refuses homes on swarm types (swarmGaps) until homes follow their user across nodes.
  async listHomes(): Promise<HomeStatus[]> {
    return listHomeVolumes(this.docker, this.labelFilters);
  }

  async removeHome(homeId: string): Promise<void> {
    await removeHomeVolume(this.docker, homeId);
  }

  async logs(runtimeId: string, lines: number): Promise<string> {
    try {
      const output = (await this.docker.getService(runtimeId).logs({ stdout: true, stderr: true, tail: Math.max(1, Math.floor(lines)), follow: false } as never)) as unknown as Buffer;
      return demultiplex(Buffer.isBuffer(output) ? output : Buffer.from(String(output)));
    } catch (err) {
      if (engineStatus(err) === 404) return '';
      throw err;
    }
  }

  async close(): Promise<void> {
    for (const watcher of this.watchers) clearInterval(watcher.timer);
    this.watchers.clear();
  }
}

/** Where a task ran, for reasons: the node as people tell it apart, or its id when it is not known. */
function whereRan(nodeId: string | undefined, node: SwarmNode | undefined): string {
  if (node) return describeNode(node);
  return nodeId ? `node ${nodeId.slice(0, 12)}` : 'no node';
}

/** The one wording of why a task ended, for a create that waited on it and for inspect and list alike. */
function endedReason(task: SwarmTask, where: string): string {
  const { State: state, ContainerStatus } = task.Status;
  const why = task.Status.Err || task.Status.Message || state;
  const code = ContainerStatus?.ExitCode;
  // A container that exited (a failed task says "non-zero exit"); a rejected or orphaned task never ran one.
  const exited = code !== undefined && (state === 'complete' || state === 'shutdown' || (state === 'failed' && /exit/.test(why)));
  return exited ? `exited with code ${code} on ${where}` : `task ${state} on ${where}: ${why}`;
}

/** A node as people tell nodes apart (hostnames repeat: the test swarm's engines share one). */
export function describeNode(node: SwarmNode): string {
  const label = node.Spec?.Labels?.['deskhub.name'];
  const host = node.Description?.Hostname;
  return `${label ?? host ?? 'node'} (${node.ID.slice(0, 12)}${node.Status.Addr ? `, ${node.Status.Addr}` : ''})`;
}
