// The Swarm runtime on a real one-node swarm (a dockerd of the test's own, in a network
// namespace the test creates: @deskhub/testkit/swarm), with the kasm-test image: the runtime
// contract suite (runtime-suite.ts), then what only this runtime does: the catalog's fields
// read back from the service spec, limits as reservations, a host-mode port of SWARM_PORTS on
// the node's address, a network per desktop, settings refused with the variable named.
import t from 'tap';
import Docker from 'dockerode';
import { startSwarm, type TestSwarm } from '@deskhub/testkit/swarm';
import { SwarmRuntime, swarmRuntimeOptionsFromEnv } from '../src/runtime/docker/swarm-runtime.ts';
import { basicAuth, buildImage, httpsGet, kasmTestType, specFor } from './docker-helpers.ts';
import { runtimeContractSuite } from './runtime-suite.ts';

await buildImage('kasm-test');

let swarm: TestSwarm;
let runtime: SwarmRuntime;
const instance = `t-${Math.random().toString(36).slice(2, 8)}`;
const swarmType = (overrides: Parameters<typeof kasmTestType>[0] = {}) => kasmTestType({ runtime: 'swarm', pullPolicy: 'if-missing', ...overrides });
const socketOf = (dockerHost: string) => dockerHost.replace(/^unix:\/\//, '');

t.before(async () => {
  swarm = await startSwarm({ nodes: 1 });
  await swarm.loadImage('deskhub/kasm-test:local');
  runtime = new SwarmRuntime({ docker: new Docker({ socketPath: socketOf(swarm.manager.dockerHost) }), instance, pollMs: 300, guard: 'off' });
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
  freshRuntime: () => new SwarmRuntime({ docker: runtime.docker, instance, pollMs: 300, guard: 'off' }),
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
    // The node has no route out: its pull fails at once and the task is rejected.
    message: /did not start: task rejected on .*No such image: deskhub\/does-not-exist:local/,
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

t.test('without the node guard (SWARM_GUARD=nodes, the default) the runtime is unavailable and says why', async (t) => {
  const guarded = new SwarmRuntime({ docker: runtime.docker, instance });
  t.teardown(() => guarded.close());
  t.match(await guarded.available(), { ok: false, reason: /node guard .* is not part of this deskhub yet; set SWARM_GUARD=off/ });
  t.match(swarmRuntimeOptionsFromEnv({}), { guard: 'nodes' });
  t.throws(() => swarmRuntimeOptionsFromEnv({ SWARM_GUARD: 'maybe' }), /SWARM_GUARD/);
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
