// Bridge mode isolation, tried from inside a real desktop container: another desktop and a
// server on the host's side of the bridge (the gateway address, where a service bound to
// 0.0.0.0 would be reachable) must not answer, while the same targets answer the host (so a
// failure means isolation, not a dead target). The only addresses used are loopback, the
// test's own containers, and the bridge gateway of the test's own network.
import t from 'tap';
import { connect, createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { GUARD_CHAIN, hostGuardInstalled } from '../src/runtime/docker/host-guard.ts';
import { buildImage, connectFrom, kasmTestType, specFor, testRuntime, waitForHttps } from './docker-helpers.ts';

await buildImage('kasm-test');
const { runtime, cleanup } = testRuntime();
t.teardown(cleanup);

const a = await runtime.create(specFor(kasmTestType()));
const b = await runtime.create(specFor(kasmTestType()));
await waitForHttps(a.upstream.host, a.upstream.port);
await waitForHttps(b.upstream.host, b.upstream.port);
const network = (await runtime.docker.getNetwork(runtime.networkName).inspect()) as {
  Id: string;
  Options: Record<string, string>;
  IPAM: { Config: Array<{ Gateway?: string; Subnet?: string }> };
};
const gateway = network.IPAM.Config[0]?.Gateway;
const bridge = network.Options['com.docker.network.bridge.name'] ?? `br-${network.Id.slice(0, 12)}`;

t.test('the network forbids traffic between containers and the host guard is in place', async (t) => {
  t.equal(network.Options['com.docker.network.bridge.enable_icc'], 'false');
  t.ok(await hostGuardInstalled(bridge), `INPUT jumps to ${GUARD_CHAIN} for ${bridge}`);
});

t.test('a desktop reaches itself (the probe works) but not another desktop', async (t) => {
  t.equal(await connectFrom(runtime.docker, a.runtimeId, '127.0.0.1', 6901), 'connected', 'control: its own port');
  t.equal(await connectFrom(runtime.docker, a.runtimeId, a.upstream.host, 6901), 'connected', 'control: its own bridge address');
  const toB = await connectFrom(runtime.docker, a.runtimeId, b.upstream.host, 6901);
  t.not(toB, 'connected', `desktop A cannot open desktop B (${toB})`);
  t.match(toB, /^(timeout|refused)$/);
});

t.test('a desktop cannot reach a service listening on the host side of the bridge', async (t) => {
  t.ok(gateway, 'the network has a gateway address');
  // A stand-in for Postgres/Redis/the control plane bound to all addresses: listening on the
  // gateway address is what 0.0.0.0 would expose to the containers.
  const server: Server = createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.end('hello\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, gateway, () => resolve());
  });
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as AddressInfo).port;
  const fromHost = await new Promise<string>((resolve) => {
    const s = connect({ host: gateway!, port }, () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(`error:${e.code}`));
  });
  t.equal(fromHost, 'connected', 'control: the host itself reaches the server');
  const fromDesktop = await connectFrom(runtime.docker, a.runtimeId, gateway!, port);
  t.equal(fromDesktop, 'refused', 'the host guard rejects it');
  // Postgres and Redis listen on 127.0.0.1 on the host; from a container that address is its own loopback.
  t.not(await connectFrom(runtime.docker, a.runtimeId, gateway!, 5432), 'connected', 'no Postgres through the gateway');
  t.not(await connectFrom(runtime.docker, a.runtimeId, '127.0.0.1', 5432), 'connected', "the container's loopback is its own");
});

t.test('the proxy side (the host) still reaches every desktop', async (t) => {
  await waitForHttps(a.upstream.host, a.upstream.port, 10_000);
  await waitForHttps(b.upstream.host, b.upstream.port, 10_000);
  t.pass('both answer the host after the probes');
});

t.test('without the host guard the same kind of server is reachable (why the guard exists)', async (t) => {
  const open = testRuntime({ hostGuard: 'off' });
  t.teardown(open.cleanup);
  const c = await open.runtime.create(specFor(kasmTestType()));
  const info = (await open.runtime.docker.getNetwork(open.runtime.networkName).inspect()) as typeof network;
  const openGateway = info.IPAM.Config[0]?.Gateway;
  const openBridge = info.Options['com.docker.network.bridge.name'] ?? `br-${info.Id.slice(0, 12)}`;
  t.notOk(await hostGuardInstalled(openBridge), 'no guard on this network');
  const server: Server = createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.end('hello\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, openGateway, () => resolve());
  });
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as AddressInfo).port;
  t.equal(await connectFrom(open.runtime.docker, c.runtimeId, openGateway!, port), 'connected', 'reachable without the guard');
});

t.test('installing the guard again keeps rules an operator added and restores missing ones', async (t) => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { guardChainRules, installHostGuard } = await import('../src/runtime/docker/host-guard.ts');
  const iptables = (args: string[]) => promisify(execFile)('iptables', ['-w', '5', ...args]);
  // An allowance for a port nothing uses, tagged so this test removes exactly what it added.
  const operatorRule = ['-p', 'udp', '--dport', '9', '-m', 'comment', '--comment', `deskhub-test-${runtime.instance}`, '-j', 'ACCEPT'];
  await iptables(['-I', GUARD_CHAIN, ...operatorRule]);
  t.teardown(() => iptables(['-D', GUARD_CHAIN, ...operatorRule]).catch(() => undefined));
  const catchAll = guardChainRules.at(-1)!.split(' ').slice(2);
  await iptables(['-D', GUARD_CHAIN, ...catchAll]);

  await installHostGuard(bridge);
  const chain = (await iptables(['-S', GUARD_CHAIN])).stdout;
  t.match(chain, `deskhub-test-${runtime.instance}`, "the operator's rule is still there");
  for (const rule of guardChainRules) t.ok(chain.includes(rule), `restored: ${rule}`);
  t.equal(await connectFrom(runtime.docker, a.runtimeId, gateway!, 5432), 'refused', 'and the host is refused again');
});
