// The Docker runtime against the real engine with the kasm-test image: the runtime contract
// suite (runtime-suite.ts), then what only this runtime does: settings, limits and labels read
// back with inspect, the Kasm contract answered at the upstream the runtime returned, published
// mode, events for containers removed behind deskhub's back or killed for memory, the event
// stream reopened, installations kept apart, leftovers replaced, the network and host guard
// made again.
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import WebSocket from 'ws';
import { DockerRuntime, dockerRuntimeOptionsFromEnv } from '../src/runtime/docker/docker-runtime.ts';
import { parseSize } from '../src/sizes.ts';
import type { RuntimeStatus } from '../src/runtime/types.ts';
import { basicAuth, buildImage, httpsGet, kasmTestType, specFor, testRuntime, waitForHttps } from './docker-helpers.ts';
import { runtimeContractSuite } from './runtime-suite.ts';

const run = promisify(execFile);

await buildImage('kasm-test');
const { runtime, cleanup } = testRuntime();
t.teardown(cleanup);
const sameInstallation = () => new DockerRuntime({ docker: runtime.docker, instance: runtime.instance, networkName: runtime.networkName });

runtimeContractSuite(t, 'docker', async () => ({
  runtime,
  freshRuntime: sameInstallation,
  watching: (r) => (r as DockerRuntime).watching(),
  desktop: () => specFor(kasmTestType()),
  answers: async (instance, spec) => (await httpsGet(instance.upstream.host, instance.upstream.port, '/', basicAuth(spec.env.VNC_PW!))).status === 200,
  createEvents: ['create', 'start'],
  stoppedReason: /^exited with code \d+/,
  // Like Kasm images, the test image refuses a VNC_PW shorter than 6 characters.
  crashing: { spec: () => specFor(kasmTestType(), { VNC_PW: 'abc' }), reason: /^exited with code 2$/, output: /VNC_PW: must be at least 6 characters/ },
  kill: async (runtimeId) => {
    await run('docker', ['kill', runtimeId]);
  },
  killedReason: /^exited with code 137$/,
  adoptedKilledReason: /^exited with code 137$/,
  missing: {
    spec: () => specFor(kasmTestType({ image: 'deskhub/does-not-exist:local' })),
    message: 'image deskhub/does-not-exist:local not present and its pull policy is never (pull it ahead with: docker pull deskhub/does-not-exist:local)',
    reason: 'image deskhub/does-not-exist:local not present and its pull policy is never (pull it ahead with: docker pull deskhub/does-not-exist:local)',
  },
  // Another process in the container holds the desktop's port first (node preloads this module).
  portTaken: async () => {
    const holder = `--import=data:text/javascript,import{createServer}from'node:net';createServer().listen(6901)`;
    return { spec: specFor(kasmTestType(), { NODE_OPTIONS: holder }), output: /EADDRINUSE|address already in use/i, release: async () => {} };
  },
  engineGone: () => ({
    runtime: new DockerRuntime({ docker: new Docker({ socketPath: '/tmp/deskhub-no-such-docker.sock' }), instance: runtime.instance, networkName: runtime.networkName }),
    reason: /^Docker Engine not reachable at \/tmp\/deskhub-no-such-docker\.sock/,
  }),
  leftovers: async () => (await runtime.docker.listContainers({ all: true, filters: { label: [`deskhub.instance=${runtime.instance}`] } })).map((c) => c.Id),
}));

t.test('sizes and settings are parsed, bad values name the setting', async (t) => {
  t.equal(parseSize('512m', 'x'), 512 * 1024 ** 2);
  t.equal(parseSize('2g', 'x'), 2 * 1024 ** 3);
  t.throws(() => parseSize('1GB', 'web.memory'), /web.memory: "1GB" is not a size/, 'the catalog grammar only');
  t.equal(parseSize('1048576', 'x'), 1048576);
  t.throws(() => parseSize('lots', 'kasm.shmSize'), /kasm\.shmSize: "lots"/);
  t.same(dockerRuntimeOptionsFromEnv({}), { networkMode: 'bridge', networkName: 'deskhub-desktops', hostGuard: 'iptables', instance: 'default' });
  t.equal(dockerRuntimeOptionsFromEnv({ DOCKER_NETWORK_MODE: 'published' }).networkMode, 'published');
  t.throws(() => dockerRuntimeOptionsFromEnv({ DOCKER_NETWORK_MODE: 'host' }), /DOCKER_NETWORK_MODE/);
  t.throws(() => dockerRuntimeOptionsFromEnv({ DOCKER_HOST_GUARD: 'maybe' }), /DOCKER_HOST_GUARD/);
  t.throws(() => dockerRuntimeOptionsFromEnv({ DOCKER_NETWORK: 'bad name' }), /DOCKER_NETWORK/);
  t.throws(() => dockerRuntimeOptionsFromEnv({ DOCKER_HOST: 'ssh://somewhere' }), /DOCKER_HOST: expected unix/);
  t.equal((dockerRuntimeOptionsFromEnv({ DOCKER_HOST: 'unix:///tmp/other.sock' }).docker?.modem as { socketPath?: string }).socketPath, '/tmp/other.sock');
});

t.test('availability of a missing deskhub image says how to build it', async (t) => {
  const local = await sameInstallation().availableFor(kasmTestType({ image: 'deskhub/desktop-browser:local' }));
  if (!local.ok) t.match(local.reason, 'build it with: bash deploy/images/build.sh desktop --with-browser');
  else t.pass('the image is built here');
});

t.test('limits and labels applied, the Kasm contract at the upstream, start keeps the container port', async (t) => {
  const type = kasmTestType({ shmSize: '128m', memory: '256m', cpus: 0.5, pids: 200 });
  const spec = specFor(type);
  const instance = await runtime.create(spec);

  const info = await runtime.docker.getContainer(instance.runtimeId).inspect();
  t.equal(info.HostConfig.ShmSize, 128 * 1024 ** 2, 'shm size');
  t.equal(info.HostConfig.Memory, 256 * 1024 ** 2, 'memory');
  t.equal(info.HostConfig.MemorySwap, 256 * 1024 ** 2, 'no swap on top');
  t.equal(info.HostConfig.NanoCpus, 500_000_000, 'cpus');
  t.equal(info.HostConfig.PidsLimit, 200, 'pids');
  t.equal(info.HostConfig.Privileged, false, 'never privileged');
  t.same(info.HostConfig.SecurityOpt, ['no-new-privileges:true']);
  t.same(info.HostConfig.CapDrop, ['NET_RAW'], 'no raw sockets (no ARP forgery on the bridge)');
  t.equal(info.HostConfig.RestartPolicy?.Name, 'no');
  t.equal(info.Config.User, '1000:1000', 'the image runs as uid 1000');
  t.match(info.Config.Labels, {
    deskhub: '1',
    'deskhub.instance': runtime.instance,
    'deskhub.desktop': spec.desktopId,
    'deskhub.owner': 'u-test',
    'deskhub.path': spec.proxyPath,
    'deskhub.type': 'kasm-test',
  });
  t.ok(info.Config.Env.includes(`VNC_PW=${spec.env.VNC_PW}`), 'generated password passed in');
  t.equal(info.HostConfig.NetworkMode, runtime.networkName);

  const { host, port } = instance.upstream;
  t.equal(host, info.NetworkSettings.Networks[runtime.networkName]?.IPAddress, 'bridge mode: the container address');
  t.equal(port, 6901);
  t.match(instance.upstream, { scheme: 'https', verifyTls: false });
  await waitForHttps(host, port);
  const denied = await httpsGet(host, port, '/');
  t.equal(denied.status, 401);
  t.match(denied.headers['www-authenticate'], /^Basic/);
  const page = await httpsGet(host, port, '/', basicAuth(spec.env.VNC_PW!));
  t.equal(page.status, 200);
  t.match(page.body, spec.proxyPath);

  // Kasm's view-only user, with the owner's password: everything but the owner API.
  const viewer = basicAuth(spec.env.VNC_PW!, 'kasm_viewer');
  t.equal((await httpsGet(host, port, '/', viewer)).status, 200, 'kasm_viewer signs in with the same password');
  t.equal((await httpsGet(host, port, '/api/get_screenshot', viewer)).status, 403, 'kasm_viewer: not the owner API');
  t.equal((await httpsGet(host, port, '/api/get_screenshot', basicAuth(spec.env.VNC_PW!))).status, 200, 'kasm_user: the owner API');

  // A WebSocket on any path, echoing, like the Kasm client's; the viewer's too.
  for (const authorization of [basicAuth(spec.env.VNC_PW!), viewer]) {
    const ws = new WebSocket(`wss://${host}:${port}/websockify`, ['binary'], {
      rejectUnauthorized: false,
      headers: { authorization, origin: 'https://deskhub.test' },
    });
    const echoed = await new Promise<string>((resolve, reject) => {
      ws.on('open', () => ws.send('ping through the upstream'));
      ws.on('message', (data) => resolve(String(data)));
      ws.on('error', reject);
    });
    ws.close();
    t.equal(echoed, 'ping through the upstream');
  }
  t.match(await runtime.logs(instance.runtimeId, 10), /demo desktop listening/);

  await runtime.stop(instance.runtimeId);
  const again = await runtime.start(instance.runtimeId);
  t.match(again.upstream, { scheme: 'https', port: 6901, verifyTls: false });
  await runtime.remove(instance.runtimeId);
});

t.test('published mode: the port is on 127.0.0.1 and read back from inspect', async (t) => {
  const published = new DockerRuntime({
    docker: runtime.docker,
    instance: runtime.instance,
    networkName: runtime.networkName,
    networkMode: 'published',
  });
  const spec = specFor(kasmTestType());
  const instance = await published.create(spec);
  t.teardown(() => published.remove(instance.runtimeId));
  const info = await runtime.docker.getContainer(instance.runtimeId).inspect();
  const binding = info.NetworkSettings.Ports['6901/tcp']?.[0];
  t.equal(binding?.HostIp, '127.0.0.1', 'published on loopback only');
  t.equal(instance.upstream.host, '127.0.0.1');
  t.equal(instance.upstream.port, Number(binding?.HostPort));
  t.not(instance.upstream.port, 6901, 'a port Docker picked');
  await waitForHttps('127.0.0.1', instance.upstream.port);
  t.equal((await httpsGet('127.0.0.1', instance.upstream.port, '/', basicAuth(spec.env.VNC_PW!))).status, 200);
  const listed = (await published.list()).find((s) => s.runtimeId === instance.runtimeId);
  t.same(listed?.upstream, instance.upstream, 'list() gives the same upstream');
  t.same((await published.inspect(instance.runtimeId))?.upstream, instance.upstream, 'inspect() too');
});

t.test('watch() reports docker rm -f', async (t) => {
  const removed = await runtime.create(specFor(kasmTestType()));
  const seen: RuntimeStatus[] = [];
  const waiters: Array<() => void> = [];
  const unwatch = runtime.watch((status) => {
    seen.push(status);
    for (const w of waiters.splice(0)) w();
  });
  t.teardown(unwatch);
  await runtime.watching();
  const waitFor = async (what: string, match: (s: RuntimeStatus) => boolean) => {
    const deadline = Date.now() + 20_000;
    while (!seen.some(match)) {
      if (Date.now() > deadline) throw new Error(`no event: ${what}; seen ${JSON.stringify(seen)}`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 1000);
      });
    }
    return seen.find(match)!;
  };

  await run('docker', ['rm', '-f', removed.runtimeId]);
  const gone = await waitFor('docker rm -f', (s) => s.runtimeId === removed.runtimeId && s.reason === 'container removed');
  t.equal(gone.running, false);
});

t.test('list() sees only this installation\'s desktops', async (t) => {
  const mine = await runtime.create(specFor(kasmTestType()));
  const other = new DockerRuntime({ docker: runtime.docker, instance: `${runtime.instance}-other`, networkName: runtime.networkName });
  const theirs = await other.create(specFor(kasmTestType()));
  t.teardown(async () => {
    await runtime.remove(mine.runtimeId);
    await other.remove(theirs.runtimeId);
  });
  const ids = (await runtime.list()).map((s) => s.runtimeId);
  t.ok(ids.includes(mine.runtimeId));
  t.notOk(ids.includes(theirs.runtimeId));
  t.same((await other.list()).map((s) => s.runtimeId), [theirs.runtimeId]);
});

t.test('a missing image of another tag fails naming it', async (t) => {
  await t.rejects(runtime.create(specFor(kasmTestType({ image: 'deskhub/desktop:missing' }))), {
    message: /^image deskhub\/desktop:missing not present/,
  });
});

t.test('create replaces a leftover container of the same desktop (crash mid-create)', async (t) => {
  const spec = specFor(kasmTestType());
  const first = await runtime.create(spec);
  const second = await runtime.create(spec);
  t.teardown(() => runtime.remove(second.runtimeId));
  t.not(second.runtimeId, first.runtimeId);
  t.equal(await runtime.inspect(first.runtimeId), null, 'the leftover is gone');
  t.equal((await runtime.list()).filter((s) => s.desktopId === spec.desktopId).length, 1);
});

t.test('the event stream is reopened when it ends, and events from the gap are not lost', async (t) => {
  const { EventWatcher } = await import('../src/runtime/docker/events.ts');
  const desktop = await runtime.create(specFor(kasmTestType()));
  const seen: RuntimeStatus[] = [];
  let wake: () => void = () => {};
  const watcher = new EventWatcher({
    docker: runtime.docker,
    labels: runtime.labelFilters,
    retryMs: 2000,
    onStatus: (s) => {
      seen.push(s);
      wake();
    },
  });
  t.teardown(() => watcher.close());
  await watcher.ready;
  // Cut the connection as a daemon restart would (the stream is private: reached for the test).
  (watcher as unknown as { stream: { destroy(): void } }).stream.destroy();
  // Kill during the gap, before the watcher reopens (it waits retryMs first).
  await run('docker', ['kill', desktop.runtimeId]);
  const deadline = Date.now() + 20_000;
  while (!seen.some((s) => s.runtimeId === desktop.runtimeId) && Date.now() < deadline) {
    await new Promise<void>((resolve) => {
      wake = resolve;
      setTimeout(resolve, 1000);
    });
  }
  t.match(seen.find((s) => s.runtimeId === desktop.runtimeId), { running: false, reason: 'exited with code 137' }, 'replayed after reopening');
  await runtime.remove(desktop.runtimeId);
});

t.test('a desktop killed for lack of memory is reported as such', async (t) => {
  const seen: RuntimeStatus[] = [];
  let wake: () => void = () => {};
  const unwatch = runtime.watch((s) => {
    seen.push(s);
    wake();
  });
  t.teardown(unwatch);
  await runtime.watching();
  // The desktop's own process allocates until the 64 MB limit stops it (node preloads this module).
  const hog = 'NODE_OPTIONS=--import=data:text/javascript,for(const[a]=[[]];;)a.push(Buffer.alloc(1048576,1))'.split('=');
  const spec = specFor(kasmTestType({ memory: '64m' }), { [hog[0]!]: hog.slice(1).join('=') });
  const instance = await runtime.create(spec).catch((err: Error) => err);
  if (instance instanceof Error) {
    // It may die before create() reads its address back; the reason still says why.
    t.match(instance.message, /did not start|no address/);
    return;
  }
  t.teardown(() => runtime.remove(instance.runtimeId));
  const deadline = Date.now() + 30_000;
  while (!seen.some((s) => s.runtimeId === instance.runtimeId) && Date.now() < deadline) {
    await new Promise<void>((resolve) => {
      wake = resolve;
      setTimeout(resolve, 1000);
    });
  }
  t.match(seen.find((s) => s.runtimeId === instance.runtimeId), { running: false, reason: /^killed: out of memory/ }, 'the event says out of memory');
  t.match(await runtime.inspect(instance.runtimeId), { running: false, reason: /^killed: out of memory/ }, 'so does inspect');
});

t.test('a network or host guard removed behind deskhub\'s back is made again at the next create', async (t) => {
  const own = testRuntime();
  t.teardown(own.cleanup);
  const { hostGuardInstalled, removeHostGuard } = await import('../src/runtime/docker/host-guard.ts');
  const first = await own.runtime.create(specFor(kasmTestType()));
  const { bridge } = await own.runtime.prepare();
  await own.runtime.remove(first.runtimeId);

  await removeHostGuard(bridge);
  t.notOk(await hostGuardInstalled(bridge), 'guard removed by hand');
  const second = await own.runtime.create(specFor(kasmTestType()));
  t.ok(await hostGuardInstalled(bridge), 'guard back after create');
  await own.runtime.remove(second.runtimeId);

  await own.runtime.docker.getNetwork(own.runtime.networkName).remove();
  const third = await own.runtime.create(specFor(kasmTestType()));
  t.ok(third.upstream.host, 'created on a new network');
  const info = (await own.runtime.docker.getNetwork(own.runtime.networkName).inspect()) as { Options: Record<string, string> };
  t.equal(info.Options['com.docker.network.bridge.enable_icc'], 'false', 'made again without inter-container traffic');
  const { bridge: newBridge } = await own.runtime.prepare();
  t.ok(await hostGuardInstalled(newBridge), 'and guarded');
  await own.runtime.remove(third.runtimeId);
  if (newBridge !== bridge) await removeHostGuard(bridge).catch(() => undefined);
});
