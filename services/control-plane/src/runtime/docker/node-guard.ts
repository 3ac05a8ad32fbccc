/**
 * The node guard: the Swarm runtime's isolation on every node, as the host guard is the Docker
 * runtime's on its one host. It runs as a global swarm service (one task per node, host network,
 * CAP_NET_ADMIN, deskhub's own image) that the Swarm runtime creates and keeps current; desktops
 * are placed only on nodes where it has run (a node label the runtime sets).
 *
 * What a swarm desktop could reach without it: each desktop has an overlay network of its own,
 * so desktops never share a network, but every task on an overlay network also has an address on
 * its node's `docker_gwbridge` (its way out, and where its host-mode port is published):
 *   - its own node: a packet to any address of the node is delivered locally through INPUT,
 *     which Docker leaves open (the engine's API if it listens on TCP, the swarm's ports 2377 and
 *     7946, a Postgres on the node). The host guard's chain, DESKHUB-INPUT, is put on
 *     docker_gwbridge: replies to connections the node opened pass, everything else is refused.
 *   - other nodes and deskhub's own machines: forwarded out of docker_gwbridge and masqueraded.
 *     The DESKHUB-SWARM chain, jumped to from DOCKER-USER, refuses new connections from
 *     docker_gwbridge to the protected networks: every node's address (the runtime passes them),
 *     the proxies' networks and SWARM_PROTECT (169.254.0.0/16, cloud metadata, by default).
 *   - other desktops: their host-mode ports answer on every address of their node, by two
 *     paths. Packets from outside are DNATed to the task and forwarded into docker_gwbridge (as
 *     are packets routed to a task's docker_gwbridge address directly): DESKHUB-SWARM lets new
 *     connections into docker_gwbridge through only from the proxies' networks (SWARM_PROXIES). Packets from the node's other bridges (docker0: Docker
 *     skips its DNAT for them) reach docker-proxy through INPUT: DESKHUB-SWARM-INPUT, jumped to
 *     from INPUT, lets those ports be opened only from the proxies' networks and the node itself
 *     (loopback). Desktops on one node never reach each other through docker_gwbridge (Docker
 *     creates it with inter-container traffic off).
 *
 * Every container on docker_gwbridge is treated as a desktop: run deskhub's own services on
 * guarded nodes with docker-compose or as plain containers, not as swarm services on overlay
 * networks. IPv4 only (Docker's default; the nodes must not give desktops IPv6).
 *
 * The rules are kernel state: they outlive the guard's container (a guard that stops or is
 * updated leaves them, so a node never goes unguarded in between) and are replaced as a whole,
 * atomically (iptables-restore --noflush rewrites only this chain). They are lost at a reboot; the
 * node's guard task puts them back when the node rejoins, before it is labelled again.
 *
 * Run in the guard's container: `node-guard.ts run` (applies the rules, checks them every 5 s,
 * and touches HEALTH_FILE after each check that found them in place: the service's healthcheck
 * reads its age, and swarm reports the task running only once it is healthy).
 */
import { execFile, spawn } from 'node:child_process';
import { isIPv4 } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '@deskhub/config';
import { hostGuardInstalled, installHostGuard } from './host-guard.ts';

const run = promisify(execFile);

export const SWARM_CHAIN = 'DESKHUB-SWARM';
export const SWARM_INPUT_CHAIN = 'DESKHUB-SWARM-INPUT';
export const GWBRIDGE = 'docker_gwbridge';
export const HEALTH_FILE = '/tmp/deskhub-node-guard.ok';

export interface NodeGuardSettings {
  /** Networks desktops may not open connections to (CIDRs). */
  protect: string[];
  /** Networks the proxies connect from: the only sources let through to desktops' ports. */
  proxies: string[];
  /** The desktops' host-mode ports (SWARM_PORTS), inclusive. */
  ports: { first: number; last: number };
}

/** Parses an IPv4 CIDR list ("10.0.0.0/8, 192.168.1.7"); a bare address is a /32. Throws naming the entry. */
export function parseCidrs(raw: string): string[] {
  const out: string[] = [];
  for (const entry of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [address, prefix = '32', extra] = entry.split('/');
    const bits = Number(prefix);
    if (extra !== undefined || !isIPv4(address ?? '') || !/^\d{1,2}$/.test(prefix) || bits > 32) {
      throw new Error(`"${entry}" is not an IPv4 address or CIDR (like 10.0.0.0/8)`);
    }
    // As iptables prints it back: the network's own address (10.1.2.3/8 is 10.0.0.0/8).
    const value = address!.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
    const network = bits === 0 ? 0 : value - (value % 2 ** (32 - bits));
    out.push(`${[24, 16, 8, 0].map((shift) => Math.floor(network / 2 ** shift) % 256).join('.')}/${bits}`);
  }
  return out;
}

/** A port range like 30000-32767 (SWARM_PORTS, and GUARD_PORTS as the runtime passes it on); throws naming `name`. */
export function parsePortRange(raw: string, name: string): { first: number; last: number } {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(raw.trim());
  const first = Number(m?.[1]);
  const last = Number(m?.[2]);
  if (!m || first < 1024 || last > 65535 || first > last) throw new ConfigError(name, `expected a port range like 30000-32767 (ports 1024-65535), got "${raw}"`);
  return { first, last };
}

/** The guard's own chains and their rules, in the form `iptables -S` prints them back. */
export function nodeGuardRules(settings: NodeGuardSettings): Record<string, string[]> {
  const ports = `${settings.ports.first}:${settings.ports.last}`;
  const toPort = `-p tcp -m tcp --dport ${ports}`;
  const input = [
    `-A ${SWARM_INPUT_CHAIN} -i lo -j RETURN`,
    ...settings.proxies.map((cidr) => `-A ${SWARM_INPUT_CHAIN} -s ${cidr} ${toPort} -j RETURN`),
    `-A ${SWARM_INPUT_CHAIN} ${toPort} -j REJECT --reject-with tcp-reset`,
  ];
  const forward = [
    // Replies, and connections the proxies opened, pass.
    `-A ${SWARM_CHAIN} -i ${GWBRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN`,
    ...settings.protect.flatMap((cidr) => [
      `-A ${SWARM_CHAIN} -d ${cidr} -i ${GWBRIDGE} -p tcp -j REJECT --reject-with tcp-reset`,
      `-A ${SWARM_CHAIN} -d ${cidr} -i ${GWBRIDGE} -j REJECT --reject-with icmp-port-unreachable`,
    ]),
    // Into docker_gwbridge, by its published port or its address there: the proxies only.
    `-A ${SWARM_CHAIN} -o ${GWBRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN`,
    ...settings.proxies.map((cidr) => `-A ${SWARM_CHAIN} -s ${cidr} -o ${GWBRIDGE} -j RETURN`),
    `-A ${SWARM_CHAIN} -o ${GWBRIDGE} -p tcp -j REJECT --reject-with tcp-reset`,
    `-A ${SWARM_CHAIN} -o ${GWBRIDGE} -j REJECT --reject-with icmp-port-unreachable`,
  ];
  return { [SWARM_CHAIN]: forward, [SWARM_INPUT_CHAIN]: input };
}

async function iptables(args: string[]): Promise<string> {
  const { stdout } = await run('iptables', ['-w', '5', ...args], { timeout: 20_000 });
  return stdout;
}

async function succeeds(args: string[]): Promise<boolean> {
  return iptables(args).then(() => true, () => false);
}

const JUMPS = [
  ['DOCKER-USER', '-j', SWARM_CHAIN],
  ['INPUT', '-j', SWARM_INPUT_CHAIN],
];

/** Installs the rules (replacing the chain as a whole) and the jumps to them. Needs CAP_NET_ADMIN. */
export async function applyNodeGuard(settings: NodeGuardSettings): Promise<void> {
  await installHostGuard(GWBRIDGE);
  const chains = nodeGuardRules(settings);
  const table = ['*filter', ...Object.keys(chains).map((chain) => `:${chain} - [0:0]`), ...Object.values(chains).flat(), 'COMMIT', ''].join('\n');
  await new Promise<void>((resolve, reject) => {
    const child = spawn('iptables-restore', ['-w', '5', '--noflush'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`iptables-restore: ${stderr.trim() || `exit ${code}`}`))));
    child.stdin.end(table);
  });
  // Docker creates DOCKER-USER when it starts and keeps what is in it across restarts.
  if (!(await succeeds(['-S', 'DOCKER-USER']))) throw new Error('the DOCKER-USER chain is missing: is this a node of a Docker swarm?');
  for (const jump of JUMPS) if (!(await succeeds(['-C', ...jump]))) await iptables(['-I', ...jump]);
}

/** Whether the rules are in place exactly as these settings make them (false when iptables cannot be read). */
export async function nodeGuardInPlace(settings: NodeGuardSettings): Promise<boolean> {
  for (const [name, expected] of Object.entries(nodeGuardRules(settings))) {
    const rules = (await iptables(['-S', name]).catch(() => '')).split('\n').filter((line) => line.startsWith('-A '));
    if (rules.length !== expected.length || rules.some((rule, i) => rule !== expected[i])) return false;
  }
  for (const jump of JUMPS) if (!(await succeeds(['-C', ...jump]))) return false;
  return hostGuardInstalled(GWBRIDGE);
}

/** The guard container's settings, as the Swarm runtime passes them. Throws naming the variable. */
export function nodeGuardSettingsFromEnv(source: NodeJS.ProcessEnv): NodeGuardSettings {
  const read = (name: string, parse: (raw: string) => string[]) => {
    try {
      return parse(source[name] ?? '');
    } catch (err) {
      throw new Error(`${name}: ${(err as Error).message}`);
    }
  };
  const protect = read('GUARD_PROTECT', parseCidrs);
  const proxies = read('GUARD_PROXIES', parseCidrs);
  if (proxies.length === 0) throw new Error('GUARD_PROXIES: at least one network is needed (the proxies\' addresses)');
  return { protect, proxies, ports: parsePortRange(source.GUARD_PORTS ?? '', 'GUARD_PORTS') };
}

/** The guard container's main loop: keep the rules in place, say so in HEALTH_FILE, log as JSON lines. */
async function runGuard(settings: NodeGuardSettings): Promise<void> {
  const log = (level: number, msg: string, extra: Record<string, unknown> = {}) =>
    process.stdout.write(`${JSON.stringify({ level, time: Date.now(), name: 'node-guard', msg, ...extra })}\n`);
  let stopping = false;
  process.once('SIGTERM', () => (stopping = true));
  process.once('SIGINT', () => (stopping = true));
  log(30, 'node guard starting', { protect: settings.protect, proxies: settings.proxies, ports: settings.ports });
  while (!stopping) {
    try {
      if (!(await nodeGuardInPlace(settings))) {
        await applyNodeGuard(settings);
        log(30, 'rules applied');
      }
      if (await nodeGuardInPlace(settings)) await writeFile(HEALTH_FILE, String(Date.now()));
      else log(50, 'rules not in place after applying them');
    } catch (err) {
      log(50, 'applying the rules failed', { err: (err as Error).message });
    }
    for (let i = 0; i < 50 && !stopping; i++) await new Promise((r) => setTimeout(r, 100));
  }
  // The rules stay: a node is never unguarded between one guard task and the next.
  log(30, 'node guard stopping; its rules stay in place');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const action = process.argv[2];
  if (action !== 'run') {
    process.stderr.write('usage: node-guard.ts run   (settings from GUARD_PROTECT, GUARD_PROXIES, GUARD_PORTS)\n');
    process.exit(2);
  }
  let settings: NodeGuardSettings;
  try {
    settings = nodeGuardSettingsFromEnv(process.env);
  } catch (err) {
    process.stderr.write(`node guard: ${(err as Error).message}\n`);
    process.exit(2);
  }
  runGuard(settings).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`node guard: ${(err as Error).message}\n`);
      process.exit(1);
    },
  );
}
