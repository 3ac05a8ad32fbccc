// The Swarm runtime on a real one-node swarm (a dockerd of the test's own, in a network
// namespace the test creates: @deskhub/testkit/swarm), with the kasm-test image: the runtime
// contract suite (runtime-suite.ts), run behind the node guard, then what only this runtime
// does: the catalog's fields read back from the service spec, limits as reservations, a
// host-mode port of SWARM_PORTS on the node's address, a network per desktop, the image pinned by
// its ID (the test engine runs without DOCKER_SERVICE_PREFER_OFFLINE_IMAGE), the guard's rules and
// what they stop, settings refused with the variable named.
import t from 'tap';
import { execFile } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { startSwarm, type TestSwarm } from '@deskhub/testkit/swarm';
import { nodeEnginesFrom, SwarmRuntime, swarmRuntimeOptionsFromEnv } from '../src/runtime/docker/swarm-runtime.ts';
import { basicAuth, buildImage, connectFrom, httpsGet, kasmTestType, specFor } from './docker-helpers.ts';
import { waitFor } from './helpers.ts';
import { runtimeContractSuite } from './runtime-suite.ts';

// Image builds, a swarm of its own, and every step through real engines: minutes, more under load.
t.setTimeout(900_000);

const run = async (file: string, args: string[]) => (await promisify(execFile)(file, args)).stdout;

await buildImage('kasm-test');
await buildImage('deskhub');

let swarm: TestSwarm;
let runtime: SwarmRuntime;
const instance = `t-${Math.random().toString(36).slice(2, 8)}`;
const swarmType = (overrides: Parameters<typeof kasmTestType>[0] = {}) => kasmTestType({ runtime: 'swarm', pullPolicy: 'if-missing', ...overrides });
const socketOf = (dockerHost: string) => dockerHost.replace(/^unix:\/\//, '');
/** The runtime as deployed: behind the node guard, the proxies (this process) at the host's bridge address. */
const guardedRuntime = () =>
  new SwarmRuntime({
    docker: new Docker({ socketPath: socketOf(swarm.manager.dockerHost) }),
    instance,
    pollMs: 300,
    proxies: [`${swarm.hostAddress}/32`],
    nodeEngines: nodeEnginesFrom({ template: swarm.manager.dockerHost }),
  });

t.before(async () => {
  swarm = await startSwarm({ nodes: 1 });
  await swarm.loadImage('deskhub/kasm-test:local');
  await swarm.loadImage('deskhub/deskhub:local');
  runtime = guardedRuntime();
  // The guard's task starts, turns healthy, and its node is labelled: a few seconds.
  await waitFor('the node guard to hold the node', async () => {
    await runtime.available();
    const labels = JSON.parse(await swarm.manager.docker(['node', 'inspect', swarm.manager.id, '--format', '{{json .Spec.Labels}}']));
    return labels[runtime.guardLabel] === 'on' ? true : undefined;
  }, 90_000, 500);
});
t.teardown(async () => {
  await runtime?.close();
  await swarm?.close();
});

/** The container of a service's newest task, on the node that runs it. */
async function containerOf(serviceId: string): Promise<string> {
  const ids = (await swarm.manager.docker(['ps', '-q', '--filter', `label=com.docker.swarm.service.id=${serviceId}`])).trim().split('\n').filter(Boolean);
  if (!ids[0]) throw new Error(`no container for service ${serviceId}`);
  return ids[0];
}

runtimeContractSuite(t, 'swarm', async () => ({
  runtime,
  freshRuntime: guardedRuntime,
  watching: (r) => (r as SwarmRuntime).watching(),
  desktop: () => specFor(swarmType()),
  answers: async (created, spec) => (await httpsGet(created.upstream.host, created.upstream.port, '/', basicAuth(spec.env.VNC_PW!))).status === 200,
  createEvents: ['create', 'start'],
  stoppedReason: /^(exited with code \d+|stopped \(no task\)|task shutdown)/,
  // Like Kasm images, the test image refuses a VNC_PW shorter than 6 characters.
  crashing: { spec: () => specFor(swarmType(), { VNC_PW: 'abc' }), reason: /^exited with code 2 on \S+ \(\w{12}, 10\.231\.\d+\.2\)$/, output: /VNC_PW: must be at least 6 characters/ },
  kill: async (serviceId) => {
    await swarm.manager.docker(['kill', await containerOf(serviceId)]);
  },
  killedReason: /^exited with code 137 on \S+ \(\w{12}, 10\.231\.\d+\.2\)$/,
  adoptedKilledReason: /^exited with code 137 on \S+ \(\w{12}, 10\.231\.\d+\.2\)$/,
  missing: {
    spec: () => specFor(swarmType({ image: 'deskhub/does-not-exist:local' })),
    // The manager's engine pulls it (if-missing) and has no route out: the pull fails at once.
    message: /image deskhub\/does-not-exist:local could not be pulled/,
    reason: null,
  },
  portTaken: async () => {
    const holder = `--import=data:text/javascript,import{createServer}from'node:net';createServer().listen(6901)`;
    return { spec: specFor(swarmType(), { NODE_OPTIONS: holder }), output: /EADDRINUSE|address already in use/i, release: async () => {} };
  },
  engineGone: () => ({
    runtime: new SwarmRuntime({ docker: new Docker({ socketPath: '/tmp/deskhub-no-such-docker.sock' }), instance }),
    reason: /^Docker Engine not reachable at \/tmp\/deskhub-no-such-docker\.sock/,
  }),
  leftovers: async () => {
    const services = (await swarm.manager.docker(['service', 'ls', '-q', '--filter', `label=deskhub.instance=${instance}`])).trim().split('\n').filter(Boolean);
    const networks = (await swarm.manager.docker(['network', 'ls', '-q', '--filter', `label=deskhub.instance=${instance}`])).trim().split('\n').filter(Boolean);
    return [...services.map((s) => `service ${s}`), ...networks.map((n) => `network ${n}`)];
  },
}));

t.test('the service spec: limits reserved, a host-mode port of SWARM_PORTS, a network of its own, never restarted', async (t) => {
  const spec = specFor(swarmType({ memory: '256m', cpus: 0.5, pids: 200, shmSize: '64m' }));
  const created = await runtime.create(spec);
  t.teardown(() => runtime.remove(created.runtimeId));
  const service = (await runtime.docker.getService(created.runtimeId).inspect()) as { Spec: Record<string, any> };
  const task = service.Spec.TaskTemplate;
  t.same(task.Resources.Limits, { MemoryBytes: 256 * 1024 ** 2, NanoCPUs: 5e8, Pids: 200 }, 'limits');
  t.same(task.Resources.Reservations, { MemoryBytes: 256 * 1024 ** 2, NanoCPUs: 5e8 }, 'reserved too: placed by free capacity');
  t.same(task.RestartPolicy.Condition, 'none', 'never rescheduled');
  t.match(task.ContainerSpec.Mounts, [{ Type: 'tmpfs', Target: '/dev/shm', TmpfsOptions: { SizeBytes: 64 * 1024 ** 2 } }], 'shmSize as a tmpfs at /dev/shm');
  t.same(task.ContainerSpec.CapabilityDrop, ['CAP_NET_RAW']);
  const port = service.Spec.EndpointSpec.Ports[0];
  t.match(port, { PublishMode: 'host', TargetPort: 6901 }, 'published in host mode, no routing mesh');
  t.ok(port.PublishedPort >= 30000 && port.PublishedPort <= 32767, `a port of SWARM_PORTS (${port.PublishedPort})`);
  t.same(created.upstream, { scheme: 'https', host: swarm.manager.address, port: port.PublishedPort, verifyTls: false }, "the node's address and that port");
  const networks = task.Networks.map((n: { Target: string }) => n.Target);
  t.equal(networks.length, 1);
  const network = (await runtime.docker.getNetwork(networks[0]).inspect()) as { Driver: string; Containers?: Record<string, unknown>; Labels: Record<string, string> };
  t.equal(network.Driver, 'overlay');
  t.equal(network.Labels['deskhub.desktop'], spec.desktopId, 'the network is the desktop own');
  const container = await containerOf(created.runtimeId);
  const inside = JSON.parse(await swarm.manager.docker(['inspect', container, '--format', '{{json .HostConfig}}']));
  t.equal(inside.Memory, 256 * 1024 ** 2, 'the container got the memory limit');
  t.equal(inside.RestartPolicy.Name, '', 'the container itself has no restart policy either');
});

t.test('settings: bad SWARM_PORTS or SWARM_HOST name the variable', async (t) => {
  t.throws(() => swarmRuntimeOptionsFromEnv({ SWARM_PORTS: '80-90' }), /SWARM_PORTS: expected a port range/);
  t.throws(() => swarmRuntimeOptionsFromEnv({ SWARM_PORTS: '40000-30000' }), /SWARM_PORTS/);
  t.throws(() => swarmRuntimeOptionsFromEnv({ SWARM_HOST: 'ftp://x' }), /SWARM_HOST: expected unix:\/\/ or tcp:\/\//);
  t.match(swarmRuntimeOptionsFromEnv({ SWARM_PORTS: '31000-31009' }), { ports: { first: 31000, last: 31009 } });
});

t.test('the node guard: a global service on the node, its rules in place, desktops placed behind it', async (t) => {
  const spec = specFor(swarmType());
  const created = await runtime.create(spec);
  t.teardown(() => runtime.remove(created.runtimeId));
  const service = (await runtime.docker.getService(created.runtimeId).inspect()) as { Spec: Record<string, any> };
  const image = service.Spec.TaskTemplate.ContainerSpec.Image as string;
  const hostId = JSON.parse(await run('docker', ['image', 'inspect', 'deskhub/kasm-test:local', '--format', '{{json .Id}}']));
  t.equal(image, hostId, 'the image is named by its ID, which no registry can change, so the node never pulls it');
  t.same(service.Spec.TaskTemplate.Placement.Constraints, [`node.labels.${runtime.guardLabel}==on`], 'placed only where the guard holds');

  const guard = JSON.parse(await swarm.manager.docker(['service', 'inspect', runtime.guardName, '--format', '{{json .Spec}}']));
  t.ok(guard.Mode.Global, 'one guard task per node');
  t.same(guard.TaskTemplate.Networks.map((n: { Target: string }) => n.Target).length, 1);
  t.same(guard.TaskTemplate.ContainerSpec.CapabilityAdd, ['CAP_NET_ADMIN']);
  const node = JSON.parse(await swarm.manager.docker(['node', 'inspect', swarm.manager.id, '--format', '{{json .Spec.Labels}}']));
  t.equal(node[runtime.guardLabel], 'on', 'the node carries the guard label');
  const rules = await swarm.manager.exec('iptables', ['-S']);
  t.match(rules, /-A INPUT -i docker_gwbridge -j DESKHUB-INPUT/, 'the host guard chain on docker_gwbridge');
  t.match(rules, /-A DOCKER-USER -j DESKHUB-SWARM/, 'the swarm chain first in DOCKER-USER');
  t.match(rules, new RegExp(`-A DESKHUB-SWARM -d ${swarm.manager.address}/32 -i docker_gwbridge -p tcp -j REJECT`), "the node's own address is protected");
  t.match(rules, new RegExp(`-A DESKHUB-SWARM -s ${swarm.hostAddress}/32 -o docker_gwbridge -j RETURN`), 'the proxies may reach desktops');
  t.match(rules, new RegExp(`-A DESKHUB-SWARM-INPUT -s ${swarm.hostAddress}/32 -p tcp -m tcp --dport 30000:32767 -j RETURN`), "and the desktops' ports on the node");

  // From inside the desktop: the node's swarm port, and a listener at the proxies' address.
  const desktop = await containerOf(created.runtimeId);
  const node1 = new Docker({ socketPath: socketOf(swarm.manager.dockerHost) });
  t.equal(await connectFrom(node1, desktop, swarm.manager.address, 2377), 'refused', "the node's swarm port (2377) is refused");
  let accepted = 0;
  const listener = createServer((socket) => {
    accepted++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => listener.listen(0, swarm.hostAddress, resolve));
  t.teardown(() => new Promise<void>((resolve) => listener.close(() => resolve())));
  const { port } = listener.address() as AddressInfo;
  t.equal(await connectFrom(node1, desktop, swarm.hostAddress, port), 'refused', 'a service at the proxies\' address is refused');
  t.equal(accepted, 0, 'and never saw a connection');

  // A container on the node that is not a proxy (on docker0) cannot reach the desktop's port.
  const bystander = (await swarm.manager.docker(['run', '-d', '--rm', '--entrypoint', '/usr/local/bin/node', 'deskhub/kasm-test:local', '-e', 'setInterval(() => {}, 1e9)'])).trim();
  t.teardown(() => swarm.manager.docker(['rm', '-f', bystander]).catch(() => undefined));
  t.equal(await connectFrom(node1, bystander, swarm.manager.address, created.upstream.port), 'refused', "a bystander on the node is refused at the desktop's port");
  const gwbridge = JSON.parse(await swarm.manager.docker(['network', 'inspect', 'docker_gwbridge', '--format', '{{json .Containers}}'])) as Record<string, { IPv4Address: string }>;
  const direct = gwbridge[desktop.length === 64 ? desktop : Object.keys(gwbridge).find((id) => id.startsWith(desktop))!]!.IPv4Address.split('/')[0]!;
  t.equal(await connectFrom(node1, bystander, direct, 6901), 'refused', `and at its docker_gwbridge address (${direct}:6901)`);
  t.equal((await httpsGet(created.upstream.host, created.upstream.port, '/', basicAuth(spec.env.VNC_PW!))).status, 200, 'the proxies reach it');

  // A rule removed behind the guard's back is put back within its 5 s check.
  await swarm.manager.exec('iptables', ['-D', 'DOCKER-USER', '-j', 'DESKHUB-SWARM']);
  await waitFor('the guard to repair its jump', async () => ((await swarm.manager.exec('iptables', ['-S', 'DOCKER-USER'])).includes('-j DESKHUB-SWARM') ? true : undefined), 20_000, 250);
  t.pass('repaired');
});

t.test('without SWARM_PROXIES, or without its image, the guarded runtime is unavailable and says why', async (t) => {
  const noProxies = new SwarmRuntime({ docker: runtime.docker, instance });
  t.teardown(() => noProxies.close());
  t.match(await noProxies.available(), { ok: false, reason: /^SWARM_PROXIES is not set/ });
  const noImage = new SwarmRuntime({ docker: runtime.docker, instance: `${instance}x`, proxies: ['10.0.0.0/8'], guardImage: 'deskhub/no-such-guard:local' });
  t.teardown(() => noImage.close());
  t.match(await noImage.available(), { ok: false, reason: /node guard's image \(SWARM_GUARD_IMAGE\).*deskhub\/no-such-guard:local/ });
  t.match(swarmRuntimeOptionsFromEnv({}), { guard: 'nodes', proxies: [], protect: ['169.254.0.0/16'], guardImage: 'deskhub/deskhub:local' });
  t.match(swarmRuntimeOptionsFromEnv({ SWARM_PROXIES: '10.1.2.3, 192.168.7.9/16' }), { proxies: ['10.1.2.3/32', '192.168.0.0/16'] });
  t.throws(() => swarmRuntimeOptionsFromEnv({ SWARM_PROXIES: '10.0.0.0/33' }), /SWARM_PROXIES: "10.0.0.0\/33" is not an IPv4 address or CIDR/);
  t.throws(() => swarmRuntimeOptionsFromEnv({ SWARM_PROTECT: 'example.net' }), /SWARM_PROTECT/);
  t.throws(() => swarmRuntimeOptionsFromEnv({ SWARM_GUARD: 'maybe' }), /SWARM_GUARD/);
  t.throws(() => swarmRuntimeOptionsFromEnv({ SWARM_NODE_ENGINES: 'node1' }), /SWARM_NODE_ENGINES: expected tcp:\/\/\{address\}:2376 or node=address pairs/);
  t.throws(() => swarmRuntimeOptionsFromEnv({ SWARM_NODE_ENGINES: 'node1=ftp://x' }), /SWARM_NODE_ENGINES: expected unix:\/\/ or tcp:\/\/ addresses/);
  t.throws(() => swarmRuntimeOptionsFromEnv({ SWARM_NODE_ENGINES: 'tcp://{address}:2376', SWARM_NODE_CERT_PATH: '/nonexistent' }), /SWARM_NODE_CERT_PATH: cannot read \/nonexistent\/ca\.pem/);
  const engines = swarmRuntimeOptionsFromEnv({ SWARM_NODE_ENGINES: 'worker-2=unix:///run/w2.sock, abcdefabcdef=tcp://10.0.0.3:2375' }).nodeEngines!;
  t.ok(engines({ ID: 'x', Spec: { Labels: { 'deskhub.name': 'worker-2' } }, Status: { State: 'ready' } }), 'a node found by its deskhub.name label');
  t.ok(engines({ ID: 'abcdefabcdef0123456789', Status: { State: 'ready' } }), 'and by the first 12 characters of its id');
  t.notOk(engines({ ID: 'other', Status: { State: 'ready' } }), 'a node not named has no engine');
  t.same(await new SwarmRuntime({ docker: runtime.docker, instance, guard: 'off' }).availableFor(swarmType({ home: { path: '/home/kasm-user', scope: 'user', name: 'h' } })), { ok: false, reason: 'desktop type kasm-test keeps a home, and homes on a swarm live on one node: set SWARM_NODE_ENGINES so deskhub can find, size, move and delete them on each node' });
});

t.test('a worker engine or an engine outside any swarm is refused with the reason', async (t) => {
  const plain = new SwarmRuntime({ docker: new Docker({ socketPath: '/var/run/docker.sock' }), instance });
  t.teardown(() => plain.close());
  const info = (await plain.docker.info()) as { Swarm?: { LocalNodeState?: string } };
  if (info.Swarm?.LocalNodeState === 'active') {
    t.pass('the host engine is in a swarm here; skipped');
    return;
  }
  t.match(await plain.available(), { ok: false, reason: /is not part of a swarm \(docker swarm init\)/ });
});
