/**
 * A real Docker swarm of one or more engines for a test, on this one machine
 * (../shared/design/multi-host.md): each node is its own `dockerd` (own data-root, exec-root and
 * socket) in a network namespace the test creates, joined to the host by a veth pair on a bridge
 * the test creates. The host holds the bridge's first address, so deskhub's processes on the
 * host (control plane, proxies) reach every node, as they would reach the nodes of a LAN.
 *
 * Nothing touches the host's own engine: the first node is the manager. The engines run as
 * Debian starts dockerd (no DOCKER_SERVICE_PREFER_OFFLINE_IMAGE: the Swarm runtime pins images
 * so that no engine pulls them), and images come from the host's engine with `docker save |
 * docker load`.
 *
 * Only addresses this helper gave its own namespaces are used: a free 10.231.X.0/24 for the
 * nodes (X picked by which bridge name is free, so several test files can each form a swarm at
 * once), 10.232.X*8+i.0/24 for each node's docker0, and 10.233.X.0/24 as the swarm's pool for
 * overlay networks. close() removes everything, in order, also after a failed test.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface SwarmNode {
  /** "node1" (the manager), "node2", ...: also the namespace's suffix. */
  readonly name: string;
  /** Swarm node id. */
  id: string;
  /** Its address on the test bridge: where its published ports answer. */
  readonly address: string;
  /** unix:///…/docker.sock, for DOCKER_HOST or `docker -H`. */
  readonly dockerHost: string;
  readonly manager: boolean;
  /** Runs `docker` against this node; resolves with stdout. */
  docker(args: string[], options?: { timeoutMs?: number }): Promise<string>;
  /** Runs a program in the node's network namespace (iptables there, a probe from there); resolves with stdout. */
  exec(file: string, args: string[]): Promise<string>;
  /** Stops its engine (SIGTERM, then SIGKILL after 20 s): to the manager it is a node that went down. */
  stopEngine(): Promise<void>;
  /** Starts its engine again (it rejoins the swarm by itself). */
  startEngine(): Promise<void>;
}

export interface TestSwarm {
  readonly nodes: SwarmNode[];
  readonly manager: SwarmNode;
  /** The host's address on the bridge (where the nodes reach the host). */
  readonly hostAddress: string;
  /** The nodes' subnet, e.g. 10.231.4.0/24. */
  readonly subnet: string;
  /** Copies an image from the host's engine to every node (or the ones named). */
  loadImage(image: string, nodes?: SwarmNode[]): Promise<void>;
  /** Adds a node label (`docker node update --label-add`). */
  label(node: SwarmNode, key: string, value: string): Promise<void>;
  close(): Promise<void>;
}

export interface StartSwarmOptions {
  nodes: number;
  /** Extra environment for every dockerd (the test of the start-up check leaves one out). */
  engineEnv?: (node: string) => Record<string, string>;
}

const DOCKER = '/usr/bin/docker';
const DOCKERD = '/usr/sbin/dockerd';

async function sh(file: string, args: string[], timeoutMs = 60_000): Promise<string> {
  try {
    const { stdout } = await run(file, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${file} ${args.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`);
  }
}

async function quiet(file: string, args: string[]): Promise<void> {
  await sh(file, args, 30_000).catch(() => undefined);
}

/** Engines still running when the test process exits are killed, so none outlives its test. */
const engines = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of engines) child.kill('SIGKILL');
});

/** Claims a free index X (bridge dhsw<X>) atomically: `ip link add` fails when the name exists. */
async function claimIndex(): Promise<number> {
  for (let x = 0; x < 60; x++) {
    const bridge = `dhsw${x}`;
    try {
      await run('ip', ['link', 'add', bridge, 'type', 'bridge']);
    } catch {
      continue;
    }
    // The subnet must be unused on this machine (another program may route 10.231.x.0/24).
    const routes = await sh('ip', ['-4', 'route', 'show', `10.231.${x}.0/24`]).catch(() => '');
    const inUse = (await sh('ip', ['-4', '-o', 'addr'])).includes(`10.231.${x}.`);
    if (routes.trim() || inUse) {
      await quiet('ip', ['link', 'del', bridge]);
      continue;
    }
    return x;
  }
  throw new Error('no free dhsw<N> bridge name and 10.231.N.0/24 subnet among 60');
}

async function waitForEngine(socket: string, log: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`dockerd exited with ${child.exitCode}; its log: ${log}`);
    if (existsSync(socket) && (await sh(DOCKER, ['-H', `unix://${socket}`, 'version', '--format', '{{.Server.Version}}'], 5000).then(() => true, () => false))) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`dockerd on ${socket} did not answer within 60 s; its log: ${log}`);
}

export async function startSwarm(options: StartSwarmOptions): Promise<TestSwarm> {
  const x = await claimIndex();
  const bridge = `dhsw${x}`;
  const hostAddress = `10.231.${x}.1`;
  // A folder of its own each time: an earlier run's engine state (a swarm it joined) never returns.
  const root = await mkdtemp(join(tmpdir(), `deskhub-swarm-${x}-`));
  const namespaces: string[] = [];
  const nodes: (SwarmNode & { child: ChildProcess | null; namespace: string; dir: string })[] = [];
  let closed = false;

  const close = async () => {
    if (closed) return;
    closed = true;
    const manager = nodes[0];
    if (manager?.child) {
      const services = (await manager.docker(['service', 'ls', '-q']).catch(() => '')).split('\n').filter(Boolean);
      if (services.length > 0) await manager.docker(['service', 'rm', ...services]).catch(() => undefined);
    }
    for (const node of nodes.slice(1)) if (node.child) await node.docker(['swarm', 'leave', '--force']).catch(() => undefined);
    for (const node of [...nodes].reverse()) {
      if (node.manager && node.child) await node.docker(['swarm', 'leave', '--force']).catch(() => undefined);
      await node.stopEngine().catch(() => undefined);
    }
    await quiet('iptables', ['-w', '5', '-D', 'FORWARD', '-i', bridge, '-o', bridge, '-j', 'ACCEPT']);
    for (const ns of namespaces) await quiet('ip', ['netns', 'del', ns]);
    await quiet('ip', ['link', 'del', bridge]);
    // dockerd leaves the network namespaces of overlay networks mounted under its exec-root:
    // unmount whatever is still mounted under this swarm's folder (deepest first), then delete
    // it; a mount that will not go keeps the folder (never an rm -rf through a mount).
    const under = async () => (await sh('findmnt', ['-rn', '-o', 'TARGET']).catch(() => '')).split('\n').filter((m) => m.startsWith(`${root}/`));
    for (const mount of (await under()).sort((a, b) => b.length - a.length)) await quiet('umount', ['-l', mount]);
    if ((await under()).length === 0) await rm(root, { recursive: true, force: true });
  };

  try {
    await sh('ip', ['addr', 'add', `${hostAddress}/24`, 'dev', bridge]);
    await sh('ip', ['link', 'set', bridge, 'up']);
    // Docker sets the host's FORWARD policy to DROP and br_netfilter sends bridged frames through
    // it: let the nodes talk to each other across the test bridge.
    await sh('iptables', ['-w', '5', '-I', 'FORWARD', '-i', bridge, '-o', bridge, '-j', 'ACCEPT']);

    for (let i = 1; i <= options.nodes; i++) {
      const name = `node${i}`;
      const namespace = `dhsw${x}n${i}`;
      const address = `10.231.${x}.${i + 1}`;
      const dir = join(root, name);
      const socket = join(dir, 'docker.sock');
      await mkdir(dir, { recursive: true });
      await sh('ip', ['netns', 'add', namespace]);
      namespaces.push(namespace);
      const outer = `dhsw${x}v${i}`;
      await sh('ip', ['link', 'add', outer, 'type', 'veth', 'peer', 'name', 'eth1', 'netns', namespace]);
      await sh('ip', ['link', 'set', outer, 'master', bridge, 'up']);
      const inNs = (args: string[]) => sh('ip', ['netns', 'exec', namespace, 'ip', ...args]);
      await inNs(['addr', 'add', `${address}/24`, 'dev', 'eth1']);
      await inNs(['link', 'set', 'eth1', 'up']);
      await inNs(['link', 'set', 'lo', 'up']);

      const node = {
        name,
        id: '',
        address,
        dockerHost: `unix://${socket}`,
        manager: i === 1,
        namespace,
        dir,
        child: null as ChildProcess | null,
        docker: (args: string[], o: { timeoutMs?: number } = {}) => sh(DOCKER, ['-H', `unix://${socket}`, ...args], o.timeoutMs ?? 60_000),
        exec: (file: string, args: string[]) => sh('nsenter', [`--net=/var/run/netns/${namespace}`, file, ...args]),
        async startEngine() {
          // nsenter, not `ip netns exec`: the latter mounts a fresh /sys, which hides the cgroup
          // mount, and dockerd then stops with "Devices cgroup isn't mounted".
          const child = spawn(
            'nsenter',
            [
              `--net=/var/run/netns/${namespace}`,
              DOCKERD,
              '--data-root', join(dir, 'data'),
              '--exec-root', join(dir, 'exec'),
              '--pidfile', join(dir, 'docker.pid'),
              '-H', `unix://${socket}`,
              '--bip', `10.232.${x * 8 + i}.1/24`,
            ],
            {
              stdio: ['ignore', 'ignore', 'pipe'],
              env: { ...process.env, ...(options.engineEnv?.(name) ?? {}) },
            },
          );
          let log = '';
          child.stderr!.on('data', (chunk: Buffer) => {
            log = (log + chunk.toString('utf8')).slice(-4000);
          });
          engines.add(child);
          child.once('exit', () => engines.delete(child));
          this.child = child;
          await waitForEngine(socket, log, child);
        },
        async stopEngine() {
          const child = this.child;
          if (!child) return;
          this.child = null;
          if (child.exitCode !== null) return;
          const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
          await exited;
          clearTimeout(timer);
        },
      };
      nodes.push(node);
      await node.startEngine();
    }

    const manager = nodes[0]!;
    await manager.docker(['swarm', 'init', '--advertise-addr', manager.address, '--listen-addr', `${manager.address}:2377`, '--default-addr-pool', `10.233.${x}.0/24`, '--default-addr-pool-mask-length', '28', '--dispatcher-heartbeat', '1s']);
    const token = (await manager.docker(['swarm', 'join-token', '-q', 'worker'])).trim();
    for (const node of nodes.slice(1)) {
      await node.docker(['swarm', 'join', '--advertise-addr', node.address, '--listen-addr', `${node.address}:2377`, '--token', token, `${manager.address}:2377`]);
    }
    for (const node of nodes) node.id = (await node.docker(['info', '--format', '{{.Swarm.NodeID}}'])).trim();
  } catch (err) {
    await close();
    throw err;
  }

  const manager = nodes[0]!;
  return {
    nodes,
    manager,
    hostAddress,
    subnet: `10.231.${x}.0/24`,
    async loadImage(image, only = nodes) {
      // Saved once, then loaded on every node side by side (a 350 MB image streamed per node
      // took three times as long).
      const archive = join(root, `image-${image.replace(/[^a-zA-Z0-9.-]/g, '_')}.tar`);
      if (!existsSync(archive)) await sh(DOCKER, ['save', '-o', archive, image], 180_000);
      await Promise.all(only.map((node) => sh(DOCKER, ['-H', node.dockerHost, 'load', '-q', '-i', archive], 180_000)));
    },
    async label(node, key, value) {
      await manager.docker(['node', 'update', '--label-add', `${key}=${value}`, node.id]);
    },
    close,
  };
}
