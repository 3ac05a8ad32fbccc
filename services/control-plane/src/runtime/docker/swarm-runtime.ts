/**
 * The Swarm runtime: runs each desktop as a Docker Swarm service with one task, so the swarm's
 * scheduler places desktops on the node with room for them (the type's memory and CPUs are
 * reservations as well as limits). The engine it talks to (SWARM_HOST, else DOCKER_HOST) must
 * be a swarm manager; a type runs here only when its catalog entry says `runtime: swarm`.
 *
 * A service is not a container, so every catalog field is mapped explicitly (swarmServiceSpec),
 * and every one of them has a meaning here:
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
 *   - images pinned (images.ts, pinnedImage), so no node pulls a tag.
 *   - a home lives on the node whose engine made its volume, and its desktops are placed there
 *     (homeNode); each node's own engine (SWARM_NODE_ENGINES) finds, sizes, moves and deletes it.
 *
 * Task state stands in for container state: running, or ended with the task's own error and
 * the node it ran on. Exits are found by polling the manager (task changes are not events).
 */
import { createHash } from 'node:crypto';
import { isIPv4 } from 'node:net';
import Docker from 'dockerode';
import { ConfigError, env, loadConfig, StandingCondition } from '@deskhub/config';
import type { Logger } from 'pino';
import type { CatalogEntry } from '../../catalog.ts';
import { parseSize } from '../../sizes.ts';
import { ensureImage, pinnedImage } from './images.ts';
import { HEALTH_FILE, parseCidrs, parsePortRange } from './node-guard.ts';
import { homeStorageEnvSpec, optionalHomeStorage, sharedHomesFor, type HomeStorage, type SharedHomes } from './shared-homes.ts';
import { HomeUnreachable, type NodeView, type Availability, type DesktopRuntime, type DesktopSpec, type HomeMount, type HomeStatus, type RuntimeEvent, type RuntimeInstance, type RuntimeStatus } from '../types.ts';
import {
  asEngineError,
  demultiplex,
  desktopLabels,
  dockerClientAt,
  dockerClientFor,
  engineCerts,
  type EngineCerts,
  engineAddress,
  engineStatus,
  homeVolumeLabels,
  homeVolumeName,
  ExpectedEnds,
  instanceSetting,
  errorText,
  labelFilters,
  listHomeVolumes,
  removeHomeVolume,
  createHelper,
  runToOutput,
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
   * `nodes` (default): desktops run only on nodes where the node guard (node-guard.ts, a global
   * service this runtime keeps) has put its rules in place. `off`: run without it, on nodes and a
   * network you trust.
   */
  guard?: 'nodes' | 'off';
  /** The networks the proxies connect to desktops from (SWARM_PROXIES); needed with the guard. */
  proxies?: string[];
  /** Networks desktops may not reach besides the nodes and the proxies (SWARM_PROTECT). */
  protect?: string[];
  /** The image the node guard runs (deskhub's own; it needs node, tsx and iptables). */
  guardImage?: string;
  /** A desktop network with no service this long after it was made is a crash's leftover, removed by watch(). */
  orphanNetworkAfterMs?: number;
  /**
   * How the control plane reaches each node's own engine, where homes live (SWARM_NODE_ENGINES):
   * a swarm manager's API neither lists, sizes nor removes another node's volumes. Without it,
   * types with a home cannot run here.
   */
  nodeEngines?: NodeEngines;
  /** Homes on storage every node reaches (HOME_VOLUME_DRIVER, shared-homes.ts): not pinned to a node. */
  homeStorage?: HomeStorage;
  /** The image of the helpers that make, size and delete homes' folders there, run on the manager's engine (HOME_HELPER_IMAGE). */
  homeHelperImage?: string;
  logger?: Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;
}

export const swarmEnvSpec = {
  SWARM_HOST: env.string(),
  SWARM_PORTS: env.custom((raw, name) => parsePortRange(raw, name), { first: 30000, last: 32767 }),
  SWARM_ENCRYPT: env.bool(false),
  SWARM_GUARD: env.oneOf(['nodes', 'off'] as const, 'nodes'),
  SWARM_PROXIES: env.custom((raw, name) => cidrSetting(raw, name), [] as string[]),
  SWARM_PROTECT: env.custom((raw, name) => cidrSetting(raw, name), ['169.254.0.0/16']),
  SWARM_GUARD_IMAGE: env.string('deskhub/deskhub:local'),
  SWARM_NODE_ENGINES: env.custom((raw, name) => parseNodeEngines(raw, name), undefined as NodeEngineSetting | undefined),
  SWARM_NODE_CERT_PATH: env.string(),
  DESKHUB_INSTANCE: instanceSetting,
  ...homeStorageEnvSpec,
};

/** SWARM_NODE_ENGINES: one address for every node with `{address}` in it, or `node=address,…` per node. */
type NodeEngineSetting = { template: string } | { byNode: Map<string, string> };

/** Finds a node's own engine client (undefined: not reachable this way). */
export type NodeEngines = (node: Pick<SwarmNode, 'ID' | 'Description' | 'Spec' | 'Status' | 'ManagerStatus'>) => Docker | undefined;

function parseNodeEngines(raw: string, name: string): NodeEngineSetting {
  const check = (address: string) => {
    if (!/^(unix|tcp):\/\/\S+$/.test(address)) throw new ConfigError(name, `expected unix:// or tcp:// addresses, got "${address}"`);
    return address;
  };
  if (raw.includes('{address}')) return { template: check(raw.trim()) };
  const byNode = new Map<string, string>();
  for (const entry of raw.split(',').map((e) => e.trim()).filter(Boolean)) {
    const at = entry.indexOf('=');
    if (at <= 0) throw new ConfigError(name, `expected tcp://{address}:2376 or node=address pairs (node: its id, its deskhub.name label or its hostname), got "${entry}"`);
    byNode.set(entry.slice(0, at), check(entry.slice(at + 1)));
  }
  if (byNode.size === 0) throw new ConfigError(name, 'is empty');
  return { byNode };
}

/** The node-engine finder for a setting: by template, or by the node's id (or a 12-character prefix), deskhub.name label or hostname. */
export function nodeEnginesFrom(setting: NodeEngineSetting, certs?: EngineCerts): NodeEngines {
  const clients = new Map<string, Docker>();
  const client = (address: string) => {
    let docker = clients.get(address);
    if (!docker) clients.set(address, (docker = dockerClientAt(address, 'SWARM_NODE_ENGINES', certs)));
    return docker;
  };
  return (node) => {
    if ('template' in setting) {
      const address = nodeAddress(node);
      return address ? client(setting.template.replaceAll('{address}', address)) : undefined;
    }
    const keys = [node.ID, node.ID.slice(0, 12), node.Spec?.Labels?.['deskhub.name'], node.Description?.Hostname];
    const address = keys.map((k) => (k ? setting.byNode.get(k) : undefined)).find(Boolean);
    return address ? client(address) : undefined;
  };
}

/** The node engines' client certificates, read at start-up: SWARM_NODE_CERT_PATH, else DOCKER_CERT_PATH, else none (plain tcp:// or unix://). */
function nodeCerts(own: string | undefined, source: NodeJS.ProcessEnv): EngineCerts | undefined {
  if (own) return engineCerts(own, 'SWARM_NODE_CERT_PATH');
  return source.DOCKER_CERT_PATH ? engineCerts(source.DOCKER_CERT_PATH, 'DOCKER_CERT_PATH') : undefined;
}

function cidrSetting(raw: string, name: string): string[] {
  try {
    return parseCidrs(raw);
  } catch (err) {
    throw new ConfigError(name, `${(err as Error).message}; expected a comma-separated list of IPv4 addresses or CIDRs`);
  }
}

export function swarmRuntimeOptionsFromEnv(source: NodeJS.ProcessEnv = process.env): SwarmRuntimeOptions {
  const config = loadConfig(swarmEnvSpec, source);
  const docker = dockerClientFor(source, config.SWARM_HOST ? 'SWARM_HOST' : 'DOCKER_HOST');
  return {
    ...(docker ? { docker } : {}),
    instance: config.DESKHUB_INSTANCE,
    ports: config.SWARM_PORTS,
    encrypted: config.SWARM_ENCRYPT,
    guard: config.SWARM_GUARD,
    proxies: config.SWARM_PROXIES,
    protect: config.SWARM_PROTECT,
    guardImage: config.SWARM_GUARD_IMAGE,
    ...optionalHomeStorage(config),
    ...(config.SWARM_NODE_ENGINES ? { nodeEngines: nodeEnginesFrom(config.SWARM_NODE_ENGINES, nodeCerts(config.SWARM_NODE_CERT_PATH, source)) } : {}),
  };
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

export interface SwarmNode {
  ID: string;
  Version?: { Index: number };
  Description?: { Hostname?: string };
  Spec?: { Labels?: Record<string, string>; Availability?: string; Role?: string };
  Status: { State: string; Addr?: string; Message?: string };
  ManagerStatus?: { Addr?: string };
}

/** Where a node answers: its address, or its manager address where the engine reports 0.0.0.0 (moby#45526). */
function nodeAddress(node: Pick<SwarmNode, 'Status' | 'ManagerStatus'> | undefined): string | undefined {
  const addr = node?.Status.Addr;
  if (addr && addr !== '0.0.0.0') return addr;
  return node?.ManagerStatus?.Addr?.replace(/:\d+$/, '');
}

/** What the node guard's state is, as create() and available() need it. */
type GuardState = { ok: true; constraints: string[] } | { ok: false; reason: string; starting?: true };

/** Task states, in the order a task moves through them (docker/swarmkit api/types.proto). */
const ENDED = new Set(['complete', 'shutdown', 'failed', 'rejected', 'orphaned', 'remove']);

/** The service's name: its path and a slice of its id, like the Docker runtime's container names. */
function serviceName(spec: DesktopSpec, instance: string): string {
  const id = spec.desktopId.replace(/[^a-zA-Z0-9]/g, '').slice(0, 12);
  const scope = instance === 'default' ? '' : `${instance}-`;
  // Service names: at most 63 characters, letters, digits and dashes.
  return `deskhub-${scope}${spec.proxyPath}-${id}`.replace(/[^a-zA-Z0-9-]/g, '-').slice(0, 63).replace(/-+$/, '');
}

/** How a type's fields become a service: every field is named here. */
export function swarmServiceSpec(spec: DesktopSpec, options: { name: string; instance: string; network: string; publishedPort: number; image: string; constraints?: string[]; homeDriver?: { Name: string; Options: Record<string, string> } }): Record<string, unknown> {
  const type = spec.type;
  const memory = type.memory ? parseSize(type.memory, `${type.id}.memory`) : undefined;
  const nanoCpus = type.cpus ? Math.round(type.cpus * 1e9) : undefined;
  const mounts: Array<Record<string, unknown>> = [];
  if (type.shmSize) {
    // Services have no shm_size: a tmpfs of that size at /dev/shm does the same.
    mounts.push({ Type: 'tmpfs', Target: '/dev/shm', TmpfsOptions: { SizeBytes: parseSize(type.shmSize, `${type.id}.shmSize`), Mode: 0o1777 } });
  }
  if (spec.home) {
    // Made by the engine of the node the task lands on, at its first start, with these labels:
    // a local volume's node is where the home is (homeCopies finds it there); a shared driver's
    // volume on every node names the same storage.
    const volumeOptions = { Labels: homeVolumeLabels(spec, options.instance), ...(options.homeDriver ? { DriverConfig: options.homeDriver } : {}) };
    mounts.push({ Type: 'volume', Source: homeVolumeName(spec.home.id), Target: spec.home.path, VolumeOptions: volumeOptions });
  }
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
        // The type's own, and deskhub's: only on nodes its guard holds.
        Constraints: [...(type.placement?.constraints ?? []), ...(options.constraints ?? [])],
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

export class SwarmRuntime implements DesktopRuntime {
  readonly name = 'swarm' as const;
  readonly docker: Docker;
  readonly instance: string;
  private readonly ports: { first: number; last: number };
  private readonly pollMs: number;
  private readonly startTimeoutMs: number;
  private readonly encrypted: boolean;
  private readonly guard: 'nodes' | 'off';
  private readonly proxies: string[];
  private readonly protect: string[];
  private readonly guardImage: string;
  private guardRead?: { at: number; state: Promise<GuardState> };
  private readonly orphanNetworkAfterMs: number;
  private readonly nodeEngines: NodeEngines | undefined;
  /** Networks this process is creating a desktop on (never swept), and when the last sweep ran. */
  private readonly creating = new Set<string>();
  private sweptAt = 0;
  private readonly log: SwarmRuntimeOptions['logger'];
  /** Desktops deskhub itself is stopping or removing: their ends are not news. */
  private readonly expected = new ExpectedEnds();
  private readonly watchers = new Set<{ timer: NodeJS.Timeout; read: Promise<void> }>();
  private readonly shared: SharedHomes | undefined;

  constructor(options: SwarmRuntimeOptions = {}) {
    this.docker = options.docker ?? new Docker();
    this.instance = options.instance ?? 'default';
    this.ports = options.ports ?? { first: 30000, last: 32767 };
    this.pollMs = options.pollMs ?? 2000;
    this.startTimeoutMs = options.startTimeoutMs ?? 120_000;
    this.encrypted = options.encrypted ?? false;
    this.guard = options.guard ?? 'nodes';
    this.proxies = options.proxies ?? [];
    this.protect = options.protect ?? ['169.254.0.0/16'];
    this.guardImage = options.guardImage ?? 'deskhub/deskhub:local';
    this.orphanNetworkAfterMs = options.orphanNetworkAfterMs ?? 120_000;
    this.nodeEngines = options.nodeEngines;
    this.log = options.logger;
    this.shared = sharedHomesFor(options, this.docker, this.instance);
  }

  /** Whether this home lives on one node (a local volume), so its desktops are placed there. */
  private pinned(home: HomeMount | undefined): home is HomeMount {
    return !!home && !this.shared;
  }

  /**
   * What waitForTask needs to know of a desktop's home: nothing without a pinned home; with one,
   * its location comes back, and `where` (the home and its node) names a node that cannot run it.
   */
  private homeWait(home: HomeMount | undefined, node: SwarmNode | undefined, owner?: string): { where?: string } | undefined {
    if (!this.pinned(home)) return undefined;
    return node ? { where: `${homeLabel(home, owner)} lives on node ${describeNode(node)}` } : {};
  }

  /** The engines to ask directly: the manager's, and every ready node's that SWARM_NODE_ENGINES reaches (each once). */
  private readyEngines(nodes: Iterable<SwarmNode>): Docker[] {
    const engines = new Set([this.docker]);
    for (const node of nodes) {
      const engine = node.Status.State === 'ready' ? this.nodeEngines?.(node) : undefined;
      if (engine) engines.add(engine);
    }
    return [...engines];
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
    // A guard that is still starting (its first seconds) is waited for by create().
    const guard = await this.guardState();
    return guard.ok || guard.starting ? { ok: true } : { ok: false, reason: guard.reason };
  }

  /** The node guard's service name (one per deskhub installation). */
  get guardName(): string {
    return this.instance === 'default' ? 'deskhub-node-guard' : `deskhub-node-guard-${this.instance}`.slice(0, 63);
  }

  /** The node label that says this installation's guard holds a node; desktops are constrained to it. */
  get guardLabel(): string {
    return `deskhub.guard.${this.instance}`;
  }

  /** The guard's state, read at most once a second however many callers ask. */
  private guardState(): Promise<GuardState> {
    if (this.guardRead && Date.now() - this.guardRead.at < 1000) return this.guardRead.state;
    const state = this.syncGuard().catch((err: unknown): GuardState => ({ ok: false, reason: `the node guard could not be checked: ${errorText(err)}` }));
    this.guardRead = { at: Date.now(), state };
    return state;
  }

  /**
   * Keeps the node guard current and the node labels true: the guard's global service exists
   * with today's settings (every node's address among the protected networks), a node whose
   * guard task runs (healthy, so its rules are in place) gets the label, and a node that is down
   * loses it (its rules may not survive; its desktops have failed). A label is never taken from
   * a node that is up: swarm's constraint enforcer would stop the desktops on it, and a guard
   * that stops leaves its rules in place.
   */
  private async syncGuard(): Promise<GuardState> {
    if (this.guard === 'off') return { ok: true, constraints: [] };
    if (this.proxies.length === 0) {
      return { ok: false, reason: 'SWARM_PROXIES is not set: the node guard opens desktops\' ports to the proxies\' addresses only (or set SWARM_GUARD=off, on nodes and a network you trust)' };
    }
    const nodes = await this.nodes();
    const addresses = nodes.map(nodeAddress).filter((a): a is string => !!a && isIPv4(a));
    const protect = [...new Set([...addresses.map((a) => `${a}/32`), ...this.protect, ...this.proxies])].sort();
    let image: string;
    try {
      await ensureImage(this.docker, { id: 'node guard', image: this.guardImage, pullPolicy: 'if-missing' } as CatalogEntry);
      image = await pinnedImage(this.docker, this.guardImage);
    } catch (err) {
      return { ok: false, reason: `the node guard's image (SWARM_GUARD_IMAGE): ${errorText(err)}` };
    }
    const env = [`GUARD_PROTECT=${protect.join(',')}`, `GUARD_PROXIES=${this.proxies.join(',')}`, `GUARD_PORTS=${this.ports.first}-${this.ports.last}`];
    const hash = createHash('sha256').update(JSON.stringify([image, env])).digest('hex').slice(0, 16);
    const spec = {
      Name: this.guardName,
      Labels: { 'deskhub.node-guard': this.instance, 'deskhub.guard-hash': hash },
      TaskTemplate: {
        ContainerSpec: {
          Image: image,
          // Args, not Command: the image's entrypoint (tini) stays.
          Args: ['node', '--import', 'tsx', 'services/control-plane/src/runtime/docker/node-guard.ts', 'run'],
          User: 'root',
          Env: env,
          CapabilityAdd: ['CAP_NET_ADMIN'],
          Labels: { 'deskhub.node-guard': this.instance },
          // Healthy while the loop finds its rules in place (it touches the file every 5 s);
          // swarm reports the task running only once it is healthy.
          Healthcheck: { Test: ['CMD-SHELL', `test -n "$(find ${HEALTH_FILE} -newermt '-20 seconds' 2>/dev/null)"`], Interval: 1e9, Timeout: 5e9, Retries: 3, StartPeriod: 60e9 },
        },
        Networks: [{ Target: 'host' }],
        RestartPolicy: { Condition: 'any', Delay: 2e9 },
        Resources: { Limits: { MemoryBytes: 256 * 1024 * 1024 } },
        LogDriver: { Name: 'json-file', Options: { 'max-size': '1m', 'max-file': '2' } },
      },
      Mode: { Global: {} },
      // The new task runs before the old one stops: a node is never without a guard task.
      UpdateConfig: { Parallelism: 0, Order: 'start-first', FailureAction: 'continue' },
    };
    const existing = await this.serviceByName(this.guardName);
    if (!existing) {
      await this.docker.createService(spec as unknown as Docker.CreateServiceOptions).catch((err: unknown) => {
        if (engineStatus(err) !== 409) throw err;
      });
    } else if (existing.Spec.Labels?.['deskhub.guard-hash'] !== hash) {
      await this.docker.getService(existing.ID).update({ version: existing.Version.Index, ...spec } as unknown as Record<string, unknown>);
    }
    const service = existing ?? (await this.serviceByName(this.guardName));
    const tasks = service ? ((await this.docker.listTasks({ filters: { service: [service.ID] } })) as SwarmTask[]) : [];
    const guarded = new Set(tasks.filter((t) => t.DesiredState === 'running' && t.Status.State === 'running' && t.NodeID).map((t) => t.NodeID!));
    let held = 0;
    for (const node of nodes) {
      const up = node.Status.State === 'ready';
      const labelled = node.Spec?.Labels?.[this.guardLabel] === 'on';
      if (up && (labelled || guarded.has(node.ID))) held++;
      if (!labelled && up && guarded.has(node.ID)) await this.labelNode(node, 'on');
      else if (labelled && !up) await this.labelNode(node, undefined);
    }
    if (held === 0) {
      // Starting, unless one of its tasks already failed (a node without the image, say).
      const failed = tasks.find((t) => t.Status.State === 'failed' || t.Status.State === 'rejected');
      const why = failed ? `${failed.Status.Err || failed.Status.Message} on ${await this.nodeName(failed.NodeID)}` : tasks.map((t) => t.Status.Message).find(Boolean);
      return { ok: false, ...(failed ? {} : { starting: true as const }), reason: `the node guard (service ${this.guardName}) runs on no node yet${why ? `: ${why}` : ''}` };
    }
    return { ok: true, constraints: [`node.labels.${this.guardLabel}==on`] };
  }

  /** The guard's state once it holds a node: a guard still starting (its first minute) is waited for. */
  private async guardReady(onEvent?: (event: RuntimeEvent) => void): Promise<{ constraints: string[] }> {
    const deadline = Date.now() + 60_000;
    let said = false;
    for (;;) {
      const guard = await this.guardState();
      if (guard.ok) return guard;
      if (!guard.starting || Date.now() > deadline) throw new Error(guard.reason);
      if (!said) onEvent?.({ kind: 'create', message: 'waiting for the node guard to start on the swarm\'s nodes' });
      said = true;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  private async labelNode(node: SwarmNode, value: string | undefined): Promise<void> {
    const labels = { ...(node.Spec?.Labels ?? {}) };
    if (value === undefined) delete labels[this.guardLabel];
    else labels[this.guardLabel] = value;
    try {
      await this.docker.getNode(node.ID).update({ version: node.Version?.Index, ...node.Spec, Labels: labels } as never);
      this.log?.info({ node: describeNode(node), label: this.guardLabel, value: value ?? null }, value ? 'node guard in place: node labelled for desktops' : 'node down: guard label removed');
    } catch (err) {
      // Another control plane updated it first: the next read sees its version.
      this.log?.warn({ node: node.ID, err: errorText(err) }, 'could not update the node guard label; trying again later');
    }
  }

  async availableFor(type: CatalogEntry): Promise<Availability> {
    const swarm = await this.available();
    if (!swarm.ok) return swarm;
    if (!type.image) return { ok: false, reason: `desktop type ${type.id} has no image` };
    if (type.home && this.shared) {
      const storage = await this.shared.availability(type.id);
      if (!storage.ok) return storage;
    } else if (type.home && !this.nodeEngines) {
      return { ok: false, reason: `desktop type ${type.id} keeps a home, and homes on a swarm live on one node: set SWARM_NODE_ENGINES so deskhub can find, size, move and delete them on each node` };
    }
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
    const name = serviceName(spec, this.instance);
    this.creating.add(name);
    try {
      return await this.createService(spec, onEvent);
    } catch (err) {
      throw asEngineError(this.docker, err);
    } finally {
      this.creating.delete(name);
    }
  }

  /**
   * Removes desktop networks that no service uses: a control plane stopped between making a
   * desktop's network and its service leaves one (list() sees services only, so the reconciler
   * never hears of it). Old enough that no create still in flight elsewhere made it.
   */
  private async sweepNetworks(): Promise<void> {
    if (Date.now() - this.sweptAt < Math.min(30_000, this.orphanNetworkAfterMs)) return;
    this.sweptAt = Date.now();
    const used = new Set((await this.services()).map((s) => s.Spec.Labels?.['deskhub.network']));
    const networks = (await this.docker.listNetworks({ filters: { label: this.labelFilters, driver: ['overlay'] } })) as Array<{ Name: string; Created: string }>;
    for (const network of networks) {
      if (used.has(network.Name) || this.creating.has(network.Name) || Date.now() - Date.parse(network.Created) < this.orphanNetworkAfterMs) continue;
      try {
        await this.docker.getNetwork(network.Name).remove();
        this.log?.info({ network: network.Name }, 'removed a desktop network that no service uses (left by an interrupted create)');
      } catch (err) {
        if (engineStatus(err) !== 404) this.log?.warn({ network: network.Name, err: errorText(err) }, 'could not remove a leftover desktop network');
      }
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
    const guard = await this.guardReady(onEvent);
    // The manager's engine holds the image (pulled there as the pull policy says, with progress)
    // and the service names it so no registry can change it (pinnedImage).
    await ensureImage(this.docker, spec.type, onEvent);
    const image = spec.type.pullPolicy === 'never' ? ((await this.docker.getImage(spec.type.image!).inspect()) as { Id: string }).Id : await pinnedImage(this.docker, spec.type.image!);
    // A home that lives on a node is placed there, or the create fails saying why: never an empty home elsewhere.
    const homeNode = this.pinned(spec.home) ? await this.homeNode(spec.home, spec.ownerName) : undefined;
    if (spec.home) await this.shared?.prepare(spec.home.id);
    const constraints = [...guard.constraints, ...(homeNode ? [`node.id==${homeNode.ID}`] : [])];
    const network = await this.ensureNetwork(name, spec);
    onEvent?.({ kind: 'create', message: `creating swarm service from ${spec.type.image} (${image.replace(/^(.*@)?sha256:/, '$1').slice(0, 24)})` });
    let service: SwarmService | undefined;
    for (let attempt = 0; attempt < 5 && !service; attempt++) {
      const publishedPort = await this.freePort();
      try {
        const created = await this.docker.createService(swarmServiceSpec(spec, { name, instance: this.instance, network, publishedPort, image, constraints, ...(spec.home && this.shared ? { homeDriver: this.shared.driverConfig(spec.home.id) } : {}) }) as unknown as Docker.CreateServiceOptions);
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
      return await this.waitForTask(service!.ID, onEvent, this.homeWait(spec.home, homeNode, spec.ownerName));
    } catch (err) {
      const logs = await this.logs(service!.ID, 20).catch(() => '');
      await this.remove(service!.ID).catch(() => undefined);
      const message = `desktop ${spec.proxyPath} did not start: ${(err as Error).message}${logs ? `; last output: ${logs.trim()}` : ''}`;
      throw err instanceof HomeUnreachable ? new HomeUnreachable(message) : new Error(message);
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
        // The manager forgets a task a moment before its node has removed the container (and let
        // go of the home's volume): the engines are asked directly, the manager's own (where a
        // one-node swarm runs everything) and every node's that SWARM_NODE_ENGINES reaches.
        const left = await Promise.all(this.readyEngines(nodes.values()).map((engine) => withTimeout(engine.listContainers({ all: true, filters: { label: [`com.docker.swarm.service.id=${serviceId}`] } }), 10_000).catch(() => [])));
        if (left.every((containers) => containers.length === 0)) return;
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
   * `home` (homeWait): the desktop mounts a home that lives on one node, whose location (the
   * task's node) comes back with it. With `where`, the desktop is placed on its home's node, so a
   * task no node can run means that node cannot (full, or the type's own constraints exclude it):
   * reported as HomeUnreachable, a lost home's node.
   */
  private async waitForTask(serviceId: string, onEvent?: (event: RuntimeEvent) => void, home?: { where?: string }): Promise<RuntimeInstance> {
    const deadline = Date.now() + this.startTimeoutMs;
    const started = Date.now();
    let last = '';
    let placed = false;
    while (Date.now() < deadline) {
      const [task] = await this.tasksOf(serviceId);
      if (task) {
        const state = task.Status.State;
        last = state;
        if (!placed && task.NodeID) {
          // Where the single engine reports pull progress, a task is `preparing` on its node (the
          // node loads, or pulls, the image) and then starting: said once, with the node.
          placed = true;
          onEvent?.({ kind: 'start', message: `placed on ${await this.nodeName(task.NodeID)}: preparing and starting` });
        }
        // A home's volume is on the node its task runs on: that is the home's location.
        if (state === 'running') return { ...(await this.instanceOf(serviceId)), ...(home && task.NodeID ? { homeLocation: task.NodeID } : {}) };
        if (ENDED.has(state)) throw new Error(endedReason(task, await this.nodeName(task.NodeID)));
        // Unschedulable (no node fits): it would wait forever.
        if (state === 'pending' && task.Status.Err && Date.now() - started > 10_000) {
          if (home?.where) throw new HomeUnreachable(`${home.where}, which cannot run it now: ${task.Status.Err}`);
          throw new Error(`no node can run it: ${task.Status.Err}`);
        }
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

  async start(runtimeId: string, home?: HomeMount): Promise<RuntimeInstance> {
    this.expected.forget(runtimeId);
    try {
      const service = (await this.docker.getService(runtimeId).inspect()) as SwarmService;
      const [task] = await this.tasksOf(runtimeId);
      if ((service.Spec.Mode?.Replicated?.Replicas ?? 0) === 1 && task && !ENDED.has(task.Status.State)) return await this.waitForTask(runtimeId, undefined, this.homeWait(home, undefined));
      // A task that ended is never restarted: the service goes to no task, then to a new one,
      // placed anew. (Scaled up while its ended task is still there, the orchestrator counts that
      // task's slot as taken and makes none.)
      await this.scaleToNone(runtimeId);
      const current = (await this.docker.getService(runtimeId).inspect()) as SwarmService;
      // Placed where its home lives now (it may have been moved while the desktop was stopped).
      const homeNode = this.pinned(home) ? await this.homeNode(home) : undefined;
      await this.scale(current, 1, homeNode?.ID);
      return await this.waitForTask(runtimeId, undefined, this.homeWait(home, homeNode));
    } catch (err) {
      if (engineStatus(err) === 404) throw new Error(`swarm service ${runtimeId.slice(0, 12)} no longer exists`);
      throw asEngineError(this.docker, err);
    }
  }

  /** Scales the service; with `homeNode`, its placement's home constraint becomes that node. */
  private async scale(service: SwarmService, replicas: number, homeNode?: string): Promise<void> {
    const spec: SwarmService['Spec'] = { ...service.Spec, Mode: { Replicated: { Replicas: replicas } } };
    if (homeNode) {
      const template = spec.TaskTemplate as { Placement?: { Constraints?: string[] } };
      const others = (template.Placement?.Constraints ?? []).filter((c) => !c.startsWith('node.id=='));
      spec.TaskTemplate = { ...template, Placement: { ...template.Placement, Constraints: [...others, `node.id==${homeNode}`] } } as SwarmService['Spec']['TaskTemplate'];
    }
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
      const host = nodeAddress(node);
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
    const reading = this.log && new StandingCondition(this.log);
    const poll = async () => {
      if (busy) return;
      busy = true;
      try {
        // Keeps the node labels true (a node that went down loses its label) between creates.
        if (this.guard === 'nodes') await this.guardState();
        const statuses = await this.list();
        await this.sweepNetworks();
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
        reading?.ok('tasks', {}, 'swarm task states read again');
      } catch (err) {
        reading?.failing('tasks', (err as Error).message, {}, 'reading swarm task states failed; trying again');
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

  // Homes: a named volume lives on the node whose engine made it (at its first desktop's start),
  // and a swarm manager's API does not see other nodes' volumes. Each node's own engine
  // (SWARM_NODE_ENGINES) is asked: that is where homes are found, sized, deleted and moved.

  /** Where a home's volume is, node by node: found, absent, or the node cannot be asked (down, no engine address, no answer). */
  private async homeCopies(homeId: string, nodes?: SwarmNode[]): Promise<Array<{ node: SwarmNode; state: 'found' | 'absent' | 'unreachable' }>> {
    const all = nodes ?? (await this.nodes());
    return Promise.all(
      all.map(async (node) => {
        const engine = this.nodeEngines?.(node);
        if (!engine || node.Status.State !== 'ready') return { node, state: 'unreachable' as const };
        try {
          await withTimeout(engine.getVolume(homeVolumeName(homeId)).inspect(), 10_000);
          return { node, state: 'found' as const };
        } catch (err) {
          return { node, state: engineStatus(err) === 404 ? ('absent' as const) : ('unreachable' as const) };
        }
      }),
    );
  }

  /**
   * The node a desktop with this home must run on: where its volume is (or was last recorded to
   * be); undefined for a home that never ran anywhere (the scheduler places it, and its first
   * node keeps it). Throws, naming the node and the home, when that node cannot run it now.
   */
  private async homeNode(home: HomeMount, owner?: string): Promise<SwarmNode | undefined> {
    const nodes = await this.nodes();
    const copies = await this.homeCopies(home.id, nodes);
    const which = homeLabel(home, owner);
    const holders = copies.filter((c) => c.state === 'found').map((c) => c.node);
    if (holders.length > 1) {
      throw new Error(`${which} is on ${holders.length} nodes (${holders.map(describeNode).join(', ')}): delete the copy that is not wanted (docker volume rm ${homeVolumeName(home.id)} on that node)`);
    }
    const recorded = home.location ? nodes.find((n) => n.ID === home.location) : undefined;
    const node = holders[0] ?? recorded;
    if (!node) {
      if (home.location) throw new HomeUnreachable(`${which} lives on node ${home.location.slice(0, 12)}, which has left the swarm`);
      return undefined;
    }
    const availability = node.Spec?.Availability ?? 'active';
    if (node.Status.State !== 'ready') throw new HomeUnreachable(`${which} lives on node ${describeNode(node)}, which is ${node.Status.State}`);
    if (availability !== 'active') throw new HomeUnreachable(`${which} lives on node ${describeNode(node)}, which is ${availability === 'drain' ? 'drained' : availability}`);
    if (!holders[0]) {
      const copy = copies.find((c) => c.node.ID === node.ID);
      if (copy?.state === 'unreachable') throw new HomeUnreachable(`${which} lives on node ${describeNode(node)}, whose engine does not answer (SWARM_NODE_ENGINES)`);
      throw new Error(`${which} should be on node ${describeNode(node)}, which does not have it (its volume ${homeVolumeName(home.id)} was removed outside deskhub)`);
    }
    return node;
  }

  async listHomes(): Promise<HomeStatus[]> {
    if (this.shared) return this.shared.list(this.labelFilters);
    if (!this.nodeEngines) return [];
    const nodes = (await this.nodes()).filter((n) => n.Status.State === 'ready');
    const listed = await Promise.all(
      nodes.map(async (node) => {
        const engine = this.nodeEngines!(node);
        if (!engine) return [];
        const homes = await withTimeout(listHomeVolumes(engine, this.labelFilters), 10_000).catch((err: unknown) => {
          this.log?.warn({ node: describeNode(node), err: errorText(err) }, "could not list a node's homes");
          return [] as HomeStatus[];
        });
        return homes.map((h) => ({ ...h, node: { id: node.ID, name: describeNode(node) } }));
      }),
    );
    return listed.flat();
  }

  async homeNodes(): Promise<NodeView[]> {
    if (this.shared) return [];
    return (await this.nodes()).map((node) => {
      const state = node.Status.State;
      const availability = node.Spec?.Availability ?? 'active';
      return { id: node.ID, name: describeNode(node), state, availability, takesHomes: state === 'ready' && availability === 'active' && !!this.nodeEngines?.(node) };
    });
  }

  async removeHome(homeId: string): Promise<void> {
    if (this.shared) {
      // Every node that ran one of its desktops has a volume object naming the storage: each is
      // removed where its engine can be asked (SWARM_NODE_ENGINES), the manager's always.
      return this.shared.remove(homeId, this.readyEngines(this.nodeEngines ? await this.nodes() : []));
    }
    const copies = await this.homeCopies(homeId);
    const found = copies.filter((c) => c.state === 'found');
    for (const { node } of found) await removeHomeVolume(this.nodeEngines!(node)!, homeId);
    const unsure = copies.filter((c) => c.state === 'unreachable');
    if (found.length === 0 && unsure.length > 0) {
      throw new Error(`it may live on ${unsure.map((c) => `node ${describeNode(c.node)}`).join(', ')}, which cannot be asked now (down, or not in SWARM_NODE_ENGINES); delete it once the node is back`);
    }
  }

  /**
   * Moves a home to another node while no desktop runs with it: a helper container on each
   * node (the guard's image, pinned), the tree streamed from one engine's archive API to the
   * other's (owners, modes and times kept), the two trees' checksums compared, then the
   * original removed. Resolves with the new node's id.
   */
  async moveHome(homeId: string, to: string): Promise<string> {
    if (this.shared) throw new Error('homes here are on shared storage (HOME_VOLUME_DRIVER), which every node reaches: there is nothing to move');
    const nodes = await this.nodes();
    const target = nodes.find((n) => n.ID === to || n.ID.slice(0, 12) === to || n.Spec?.Labels?.['deskhub.name'] === to);
    if (!target) throw new Error(`no node ${to} in this swarm`);
    if (target.Status.State !== 'ready' || (target.Spec?.Availability ?? 'active') !== 'active') throw new Error(`node ${describeNode(target)} is ${target.Status.State}/${target.Spec?.Availability}: it cannot take a home now`);
    const copies = await this.homeCopies(homeId, nodes);
    const holders = copies.filter((c) => c.state === 'found');
    if (holders.length !== 1) throw new Error(holders.length === 0 ? 'its volume is on no node that answers' : `its volume is on ${holders.length} nodes`);
    const source = holders[0]!.node;
    if (source.ID === target.ID) return target.ID;
    const from = this.nodeEngines!(source)!;
    const into = this.nodeEngines!(target);
    if (!into) throw new Error(`node ${describeNode(target)} has no engine address in SWARM_NODE_ENGINES`);
    const volume = homeVolumeName(homeId);
    const labels = ((await from.getVolume(volume).inspect()) as { Labels?: Record<string, string> }).Labels ?? {};
    const image = await pinnedImage(this.docker, this.guardImage);
    const helper = (engine: Docker, readOnly: boolean, script: string, env: string[] = []) =>
      createHelper(engine, {
        image,
        instance: this.instance,
        script,
        env,
        workingDir: '/home-tree',
        labels: { 'deskhub.home-move': homeId },
        mount: { Type: 'volume', Source: volume, Target: '/home-tree', ReadOnly: readOnly },
      });
    const made: Docker.Container[] = [];
    let copied = false;
    try {
      // The source's tree sum, and its top folder's owner and mode (an archive's "./" does not set them on the folder it lands in).
      const src = await helper(from, true, `stat -c '%u:%g %a' . && ${TREE_SUM}`);
      made.push(src);
      const [top = '', before = ''] = (await runToOutput(src)).split('\n');
      const [owner, mode] = top.split(' ');
      const exists = await into.getVolume(volume).inspect().then(() => true, () => false);
      if (exists) throw new Error(`node ${describeNode(target)} already has a volume ${volume}`);
      await into.createVolume({ Name: volume, Labels: labels });
      copied = true;
      const dst = await helper(into, false, `chown "$TOP_OWNER" . && chmod "$TOP_MODE" . && ${TREE_SUM}`, [`TOP_OWNER=${owner}`, `TOP_MODE=${mode}`]);
      made.push(dst);
      const tree = (await src.getArchive({ path: '/home-tree/.' })) as unknown as NodeJS.ReadableStream;
      await dst.putArchive(tree, { path: '/home-tree' });
      const after = await runToOutput(dst);
      if (!/^[0-9a-f]{64}$/.test(before) || before !== after) throw new Error(`the copy on ${describeNode(target)} does not match (checksums ${before.slice(0, 16)} and ${after.slice(0, 16)})`);
      for (const container of made.splice(0)) await container.remove({ force: true }).catch(() => undefined);
      await removeHomeVolume(from, homeId);
      this.log?.info({ home: homeId, from: describeNode(source), to: describeNode(target), checksum: before.slice(0, 16) }, 'home moved');
      return target.ID;
    } catch (err) {
      for (const container of made) await container.remove({ force: true }).catch(() => undefined);
      if (copied) await into.getVolume(volume).remove().catch(() => undefined);
      throw new Error(`moving home ${homeId} from ${describeNode(source)} to ${describeNode(target)} failed: ${errorText(err)}`);
    }
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

/** A home as reasons name it: `home "home" of alice`. */
function homeLabel(home: HomeMount, owner?: string): string {
  return `home "${home.name ?? home.id}"${owner ? ` of ${owner}` : ''}`;
}

/** A node as people tell nodes apart (hostnames repeat: the test swarm's engines share one). */
export function describeNode(node: SwarmNode): string {
  const label = node.Spec?.Labels?.['deskhub.name'];
  const host = node.Description?.Hostname;
  const address = nodeAddress(node);
  return `${label ?? host ?? 'node'} (${node.ID.slice(0, 12)}${address ? `, ${address}` : ''})`;
}

/**
 * The checksum of a home's tree, run in the move's helpers: every entry's path, type, mode,
 * owner and link target, then every file's content, in one sha256 (folder sizes differ between
 * filesystems, so they are left out).
 */
const TREE_SUM = "{ find . -printf '%p %y %m %U %G %l\\n' | LC_ALL=C sort; find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum; } | sha256sum | cut -c1-64";

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer!: NodeJS.Timeout;
  return Promise.race([promise, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms)))]).finally(() => clearTimeout(timer));
}
