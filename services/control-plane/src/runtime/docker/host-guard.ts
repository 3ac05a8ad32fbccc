/**
 * The host guard: iptables rules that stop desktop containers from opening connections to the
 * Docker host itself.
 *
 * Why it is needed: `enable_icc=false` on the desktops' bridge stops desktops reaching each
 * other, and Docker's isolation chains stop them reaching other Docker networks, but both live
 * in the FORWARD chain. A packet from a container to any address of the host (the bridge
 * gateway, the host's LAN address, docker0's address) is delivered locally and only passes the
 * INPUT chain, which Docker leaves open: any service bound to 0.0.0.0 on the host (a Postgres,
 * Redis or control plane listening on all addresses) would be reachable from every desktop.
 * Services bound to 127.0.0.1 are safe regardless: a container has its own loopback.
 *
 * The rules: INPUT jumps to the DESKHUB-INPUT chain for packets arriving on the desktops'
 * bridge interface; that chain accepts replies to connections the host opened (the proxy
 * talking to a desktop) and rejects everything else. Docker's embedded DNS (127.0.0.11) lives
 * inside each container's namespace, so name resolution keeps working. Docker never flushes the
 * INPUT chain, so the rules survive daemon restarts; they do not survive a reboot, which is why
 * the runtime installs them (idempotently) when it prepares the network and checks them at every
 * create.
 *
 * Run directly to install or remove them by hand (e.g. as root when the control plane itself
 * runs without CAP_NET_ADMIN):
 *   node --import tsx services/control-plane/src/runtime/docker/host-guard.ts install <bridge interface>
 *   node --import tsx services/control-plane/src/runtime/docker/host-guard.ts remove <bridge interface>
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);

export const GUARD_CHAIN = 'DESKHUB-INPUT';

/** The chain's rules, in iptables -S form (what `iptables -S DESKHUB-INPUT` prints back). */
export const guardChainRules: readonly string[] = [
  `-A ${GUARD_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  `-A ${GUARD_CHAIN} -p tcp -j REJECT --reject-with tcp-reset`,
  `-A ${GUARD_CHAIN} -j REJECT --reject-with icmp-port-unreachable`,
];

async function iptables(args: string[]): Promise<string> {
  // -w: wait for the xtables lock that Docker and other guards may hold.
  const { stdout } = await run('iptables', ['-w', '5', ...args], { timeout: 20_000 });
  return stdout;
}

async function succeeds(args: string[]): Promise<boolean> {
  try {
    await iptables(args);
    return true;
  } catch {
    return false;
  }
}

function checkInterfaceName(iface: string): void {
  // Linux interface names: at most 15 characters, no spaces or slashes.
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(iface)) throw new Error(`host guard: "${iface}" is not a network interface name`);
}

/** Installs (or repairs) the guard for one bridge interface. Needs root or CAP_NET_ADMIN and the iptables command. */
export async function installHostGuard(iface: string): Promise<void> {
  checkInterfaceName(iface);
  if (!(await succeeds(['-S', GUARD_CHAIN]))) {
    // Another guard may create it at the same moment; a failure here is fine if the chain exists after.
    await succeeds(['-N', GUARD_CHAIN]);
  }
  // Rules an operator added (e.g. -I DESKHUB-INPUT ... --dport 53 -j ACCEPT) are kept: ours are
  // only rewritten, at the end of the chain and in order, when one of them is missing.
  const ours = guardChainRules.map((rule) => rule.split(' ').slice(2));
  const present = await Promise.all(ours.map((rule) => succeeds(['-C', GUARD_CHAIN, ...rule])));
  if (present.some((p) => !p)) {
    for (const rule of ours) {
      for (let i = 0; i < 10 && (await succeeds(['-C', GUARD_CHAIN, ...rule])); i++) await iptables(['-D', GUARD_CHAIN, ...rule]);
    }
    for (const rule of ours) await iptables(['-A', GUARD_CHAIN, ...rule]);
  }
  const jump = ['INPUT', '-i', iface, '-j', GUARD_CHAIN];
  if (!(await succeeds(['-C', ...jump]))) await iptables(['-I', ...jump]);
}

/** Removes the jump for one bridge interface (the chain stays for other bridges). */
export async function removeHostGuard(iface: string): Promise<void> {
  checkInterfaceName(iface);
  const jump = ['INPUT', '-i', iface, '-j', GUARD_CHAIN];
  // Bounded: one jump per install, but tolerate duplicates from concurrent installs.
  for (let i = 0; i < 10 && (await succeeds(['-C', ...jump])); i++) await iptables(['-D', ...jump]);
}

/** Whether the guard is in place for this interface (false also when iptables cannot be read). */
export async function hostGuardInstalled(iface: string): Promise<boolean> {
  checkInterfaceName(iface);
  return succeeds(['-C', 'INPUT', '-i', iface, '-j', GUARD_CHAIN]);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [action, iface] = process.argv.slice(2);
  if ((action !== 'install' && action !== 'remove') || !iface) {
    process.stderr.write('usage: host-guard.ts install|remove <bridge interface, e.g. br-0123456789ab>\n');
    process.exit(2);
  }
  (action === 'install' ? installHostGuard(iface) : removeHostGuard(iface)).then(
    () => process.stdout.write(`host guard ${action === 'install' ? 'installed on' : 'removed from'} ${iface}\n`),
    (err: unknown) => {
      process.stderr.write(`host guard: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
