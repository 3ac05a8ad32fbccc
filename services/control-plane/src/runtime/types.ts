/**
 * The contract between the control plane's lifecycle code and the runtimes that run desktops
 * (local processes, Docker). A runtime knows nothing of users, quotas or routes: it runs what
 * it is given and says where it can be reached.
 */
import type { Upstream } from '@deskhub/route-stream';
import type { CatalogEntry } from '../catalog.ts';
import type { RuntimeName } from './index.ts';

/** What the lifecycle code hands a runtime to create one desktop. */
export interface DesktopSpec {
  desktopId: string;
  ownerId: string;
  ownerName: string;
  proxyPath: string;
  type: CatalogEntry;
  /** Final environment: catalog env with placeholders substituted, generated secrets included. */
  env: Record<string, string>;
  /** Its home (catalog `home`), made on first use and kept after the desktop is removed. */
  home?: HomeMount;
}

/** A home to mount: `id` names its storage in the runtime (a volume, a directory). */
export interface HomeMount {
  id: string;
  /** Where it appears inside the desktop (the process runtime sets HOME to its directory instead). */
  path: string;
  /** Its name and owner, for reasons ("home "home" of alice lives on node …"). */
  name?: string;
  /** Where the runtime said its storage lives (RuntimeInstance.homeLocation), once a desktop has run with it; null before. */
  location?: string | null;
}

export interface HomeStatus {
  homeId: string;
  /** Bytes used, when the runtime can tell. */
  sizeBytes: number | null;
  /** The node that holds it, on a runtime of several nodes (Swarm): its id and how people tell it apart. */
  node?: { id: string; name: string };
}

/** A node of a runtime of several (Swarm), as the admin view shows it. */
export interface NodeView {
  id: string;
  /** How people tell it apart: its deskhub.name label or hostname, id prefix and address. */
  name: string;
  /** ready, down, unknown, disconnected. */
  state: string;
  /** active, pause, drain. */
  availability: string;
  /** Ready, active and its engine reachable (SWARM_NODE_ENGINES): a home can be moved there now. */
  takesHomes: boolean;
}

export interface RuntimeInstance {
  /** Container id, or the process runtime's own id. Stored in the database. */
  runtimeId: string;
  /** Where the proxy reaches it. */
  upstream: Upstream;
  /** Where its home's storage lives, on a runtime whose storage is not everywhere (Swarm: the node id); recorded with the home. */
  homeLocation?: string;
}

export interface RuntimeStatus {
  runtimeId: string;
  desktopId: string;
  running: boolean;
  /** Set when known: why it is not running (exit code, OOM, removed). */
  reason?: string;
  upstream?: Upstream;
}

/** Progress a runtime reports while it creates a desktop (pull percentages, start). */
export interface RuntimeEvent {
  kind: 'pull' | 'create' | 'start' | 'log';
  message: string;
  /** 0..100 when known (image pull). */
  progress?: number;
}

/**
 * A desktop cannot start because the node that holds its home is down, drained, gone or not
 * answering (a runtime whose homes live on one node, Swarm). The lifecycle records this kind of
 * failure, so the owner can be offered what the operator allows (HOME_NODE_LOST).
 */
export class HomeUnreachable extends Error {
  readonly code = 'home-unreachable';
}

export type Availability = { ok: true } | { ok: false; reason: string };

export interface DesktopRuntime {
  readonly name: RuntimeName;
  /** Whether this runtime can run desktops here, and why not. */
  available(): Promise<Availability>;
  /** Whether this particular type can run (image present or pullable, command found). */
  availableFor(type: CatalogEntry): Promise<Availability>;
  /** Creates and starts the desktop (pulling its image if needed); resolves once started, not yet ready. */
  create(spec: DesktopSpec, onEvent?: (event: RuntimeEvent) => void): Promise<RuntimeInstance>;
  /** Starts a stopped desktop again; the upstream may change. */
  start(runtimeId: string, home?: HomeMount): Promise<RuntimeInstance>;
  stop(runtimeId: string): Promise<void>;
  /** Removes it; a missing desktop is not an error. */
  remove(runtimeId: string): Promise<void>;
  /** null when it no longer exists. */
  inspect(runtimeId: string): Promise<RuntimeStatus | null>;
  /** Every desktop this runtime runs for deskhub (by label or own bookkeeping), running or not. */
  list(): Promise<RuntimeStatus[]>;
  /** Calls back when a desktop dies or is removed outside deskhub. Returns an unsubscribe function. */
  watch(onExit: (status: RuntimeStatus) => void): () => void;
  /** Every home this runtime keeps for deskhub, with its size when it can tell. */
  listHomes(): Promise<HomeStatus[]>;
  /** Deletes a home's storage; a missing one is not an error; one an existing desktop mounts is refused. */
  removeHome(homeId: string): Promise<void>;
  /**
   * Only where storage lives on one node of several (Swarm): copies the home to `node`, checks
   * the copy, removes the original, and resolves with the new location. Never while a desktop runs with it.
   */
  moveHome?(homeId: string, node: string): Promise<string>;
  /** Only where homes live on one node of several (Swarm, without shared storage): the nodes, and whether each can take a home now. */
  homeNodes?(): Promise<NodeView[]>;
  /** Last lines of the desktop's output, for failure reasons. */
  logs(runtimeId: string, lines: number): Promise<string>;
  close(): Promise<void>;
}
