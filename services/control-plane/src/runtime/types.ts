/**
 * The contract between the control plane's lifecycle code and the runtimes that run desktops
 * (local processes, Docker). A runtime knows nothing of users, quotas or routes: it runs what
 * it is given and says where it can be reached.
 */
import type { Upstream } from '@deskhub/route-stream';

/** One desktop type from the catalog file (CATALOG), validated at start. */
export interface CatalogEntry {
  id: string;
  name: string;
  description?: string;
  runtime: 'docker' | 'process';
  /** docker: image reference, pinned tag. */
  image?: string;
  /** docker: when to pull. `never` for images built locally. */
  pullPolicy?: 'if-missing' | 'always' | 'never';
  /** process: argv; `{port}` is replaced by the port chosen for it. */
  command?: string[];
  /** process: working directory (the catalog file's folder unless the entry says otherwise). */
  workingDir?: string;
  /** Port the desktop listens on inside its container (docker) or the default for process. */
  port: number;
  scheme: 'http' | 'https';
  verifyTls: boolean;
  /** true for kasmweb images; false for linuxserver images that serve under SUBFOLDER. */
  stripPrefix: boolean;
  /** kasm: generate VNC_PW, inject Basic kasm_user:VNC_PW. basic: generate env[passwordEnv], inject Basic username:pw. */
  credentials: { kind: 'none' } | { kind: 'kasm' } | { kind: 'basic'; username: string; passwordEnv: string };
  /** Extra env; `{prefix}` (/desktop/<path>) and `{path}` are substituted. */
  env: Record<string, string>;
  /** docker limits */
  shmSize?: string;
  memory?: string;
  cpus?: number;
  pids?: number;
  readiness: { path: string; timeoutSeconds: number };
  /** Query the entry URL needs, `{prefix}`/`{path}` substituted, e.g. "path=desktop/{path}/websockify". */
  entryQuery: string;
  quota?: { perUser?: number; total?: number };
}

/** What the lifecycle code hands a runtime to create one desktop. */
export interface DesktopSpec {
  desktopId: string;
  ownerId: string;
  ownerName: string;
  proxyPath: string;
  type: CatalogEntry;
  /** Final environment: catalog env with placeholders substituted, generated secrets included. */
  env: Record<string, string>;
}

export interface RuntimeInstance {
  /** Container id, or the process runtime's own id. Stored in the database. */
  runtimeId: string;
  /** Where the proxy reaches it. */
  upstream: Upstream;
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

export type Availability = { ok: true } | { ok: false; reason: string };

export interface DesktopRuntime {
  readonly name: 'docker' | 'process';
  /** Whether this runtime can run desktops here, and why not. */
  available(): Promise<Availability>;
  /** Whether this particular type can run (image present or pullable, command found). */
  availableFor(type: CatalogEntry): Promise<Availability>;
  /** Creates and starts the desktop (pulling its image if needed); resolves once started, not yet ready. */
  create(spec: DesktopSpec, onEvent?: (event: RuntimeEvent) => void): Promise<RuntimeInstance>;
  /** Starts a stopped desktop again; the upstream may change. */
  start(runtimeId: string): Promise<RuntimeInstance>;
  stop(runtimeId: string): Promise<void>;
  /** Removes it; a missing desktop is not an error. */
  remove(runtimeId: string): Promise<void>;
  /** null when it no longer exists. */
  inspect(runtimeId: string): Promise<RuntimeStatus | null>;
  /** Every desktop this runtime runs for deskhub (by label or own bookkeeping), running or not. */
  list(): Promise<RuntimeStatus[]>;
  /** Calls back when a desktop dies or is removed outside deskhub. Returns an unsubscribe function. */
  watch(onExit: (status: RuntimeStatus) => void): () => void;
  /** Last lines of the desktop's output, for failure reasons. */
  logs(runtimeId: string, lines: number): Promise<string>;
  close(): Promise<void>;
}
