// Several nodes: a real three-engine swarm on this machine (@deskhub/testkit/swarm: each engine
// its own dockerd in a network namespace of the test's own, joined by a bridge of the test's
// own). Desktops of two types land on the nodes their placement constraints name (node labels),
// are reached through the proxy at their nodes' addresses, and a node that goes down has its
// desktops marked failed with the node named and their routes withdrawn, while the other node's
// desktop keeps running. Every node runs the node guard: from inside a desktop, neither its own
// node, nor the manager, nor the other desktop's port, nor the host where deskhub runs can be
// reached, and a node that is not a proxy cannot open a desktop's port.
//
// Homes on several nodes, each node's own engine reached as SWARM_NODE_ENGINES says: alice writes
// a file in her home; her desktop is deleted; her next desktop lands on the same node and sees
// the file. With that node's engine stopped, creating her desktop fails naming the node and the
// home, and no empty home appears on another node; in Chromium, alice sees why and, after
// confirming, starts that desktop with a stand-in home (recorded as an event), while her home
// keeps its name and its node. An admin moves the home to the other worker:
// the file is there (owner kept), the old volume is gone, and her next desktop runs there.
//
// Homes on shared storage (a runtime with HOME_VOLUME_DRIVER=local, a folder per home bound from
// one tree every node of this machine sees): not pinned; with the first desktop's node drained,
// the next desktop runs on another node and sees the same files; deleting the home deletes its
// folder and its volume objects on every node.
import t, { type Test } from 'tap';
import { createServer, connect, type AddressInfo } from 'node:net';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import Docker from 'dockerode';
import { startSwarm, type SwarmNode, type TestSwarm } from '@deskhub/testkit/swarm';
import { nodeEnginesFrom, SwarmRuntime } from '../src/runtime/docker/swarm-runtime.ts';
import { buildImage, connectFrom, execIn, kasmTestType, specFor, startDeskhubOn, swarmCatalog, TCP_PROBE, type DockerDeskhub } from './docker-helpers.ts';
import { waitFor, type DesktopJson } from './helpers.ts';
import { launchChromium } from './docker-browser.ts';

t.setTimeout(900_000);

const inZone = (id: string, zone: string) => ({ id, name: `Kasm test desktop in zone ${zone}`, extra: ['memory: 128m', `placement: { constraints: [node.labels.zone==${zone}] }`] });
// With a home: on workers only, since the manager's engine does not stop in this test (a swarm without its manager has no API).
const withHome = { id: 'with-home', name: 'Kasm test desktop with a home', extra: ['home: { path: /home/kasm-user, scope: user, name: home }', 'placement: { constraints: [node.role==worker] }'] };
// The same home, and more memory than any node has: its home's node cannot run it.
const withHomeBig = { id: 'with-home-big', name: 'Kasm test desktop with a home, too big', extra: ['memory: 64g', 'home: { path: /home/kasm-user, scope: user, name: home }', 'placement: { constraints: [node.role==worker] }'] };
const catalog = swarmCatalog(t, [inZone('in-a', 'a'), inZone('in-b', 'b'), withHome, withHomeBig]);
const engineOf = (node: SwarmNode) => new Docker({ socketPath: node.dockerHost.replace(/^unix:\/\//, '') });

interface VolumeJson {
  id: string;
  node: { id: string; name: string } | null;
}

let swarm: TestSwarm;
let hub: DockerDeskhub<SwarmRuntime>;

t.test('set-up: three engines, one swarm, deskhub on its manager', async (setup) => {
  await buildImage('kasm-test');
  await buildImage('deskhub');
  const started = Date.now();
  swarm = await startSwarm({ nodes: 3 });
  setup.comment(`swarm of 3 formed in ${Date.now() - started} ms`);
  // Every node: the manager's engine holds each type's image (the service names it by its ID),
  // and the guard runs on every node.
  const loading = Date.now();
  await swarm.loadImage('deskhub/kasm-test:local');
  await swarm.loadImage('deskhub/deskhub:local');
  setup.comment(`kasm-test and the guard's image loaded on 3 nodes in ${Date.now() - loading} ms`);
  await swarm.label(swarm.nodes[1]!, 'zone', 'a');
  await swarm.label(swarm.nodes[2]!, 'zone', 'b');
  const engines = new Map(swarm.nodes.map((n) => [n.id, n.dockerHost]));
  hub = await startDeskhubOn(t, 'swarm-nodes', () => {
    const runtime = new SwarmRuntime({
      docker: engineOf(swarm.manager),
      instance: `nodes-${Date.now().toString(36)}`,
      pollMs: 500,
      proxies: [`${swarm.hostAddress}/32`],
      nodeEngines: nodeEnginesFrom({ byNode: engines }),
    });
    t.teardown(() => runtime.close());
    return runtime;
  }, { RUNTIME: 'swarm', CATALOG: catalog, ADMIN_USERS: 'root', HOME_NODE_LOST: 'offer-new-home' });
});
t.teardown(() => swarm?.close());

const view = (cookie: string, id: string) => hub.api<DesktopJson>(cookie, 'GET', `/api/desktops/${id}`).then((r) => r.body);
const until = (cookie: string, id: string, what: string, done: (v: DesktopJson) => boolean) =>
  waitFor(what, async () => {
    const v = await view(cookie, id);
    return done(v) ? v : undefined;
  }, 120_000, 250);

t.test('desktops land on the nodes their types name, are reached there, and fail with their node', async (t) => {
  const cookie = await hub.signIn('alice');
  const ids: Record<string, string> = {};
  for (const typeId of ['in-a', 'in-b']) {
    const created = await hub.api<DesktopJson>(cookie, 'POST', '/api/desktops', { type: typeId });
    t.equal(created.status, 201, JSON.stringify(created.body));
    ids[typeId] = created.body.id;
  }
  const nodeA = swarm.nodes[1]!;
  const nodeB = swarm.nodes[2]!;
  for (const [typeId, node] of [['in-a', nodeA], ['in-b', nodeB]] as const) {
    const running = await until(cookie, ids[typeId]!, `${typeId} running`, (v) => v.state === 'running' || v.state === 'failed');
    t.equal(running.state, 'running', running.reason ?? '');
    const [status] = (await hub.runtime.list()).filter((s) => s.desktopId === ids[typeId]);
    t.equal(status?.upstream?.host, node.address, `${typeId} runs on ${node.name} (${node.address}), as its constraint says`);
    const page = await fetch((await view(cookie, ids[typeId]!)).url, { headers: { cookie } });
    t.equal(page.status, 200, `${typeId} answers through the proxy`);
  }

  // The node guard on every node, seen from inside desktop A (on node A).
  const statuses = await hub.runtime.list();
  const [atA, atB] = ['in-a', 'in-b'].map((id) => statuses.find((s) => s.desktopId === ids[id])!);
  const engineA = new Docker({ socketPath: nodeA.dockerHost.replace(/^unix:\/\//, '') });
  const containerA = (await nodeA.docker(['ps', '-q', '--filter', `label=com.docker.swarm.service.id=${atA!.runtimeId}`])).trim();
  const listener = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => listener.listen(0, swarm.hostAddress, resolve));
  t.teardown(() => new Promise<void>((resolve) => listener.close(() => resolve())));
  let accepted = 0;
  listener.on('connection', () => accepted++);
  t.equal(await connectFrom(engineA, containerA, '127.0.0.1', 6901), 'connected', 'the probe works from inside the desktop (its own port)');
  const probes: [string, number, string][] = [
    [nodeA.address, 7946, 'its own node (swarm gossip port)'],
    [swarm.manager.address, 2377, "the manager's swarm port"],
    [nodeB.address, atB!.upstream!.port, "the other desktop's port on node B"],
    [swarm.hostAddress, (listener.address() as AddressInfo).port, 'a service on the host where deskhub runs'],
  ];
  for (const [host, port, what] of probes) t.equal(await connectFrom(engineA, containerA, host, port), 'refused', `desktop A cannot reach ${what} (${host}:${port})`);
  t.equal(accepted, 0, 'the host never saw a connection');
  // The proxies' address opens desktop ports; the manager's (not a proxy) does not.
  const fromHost = await new Promise<string>((resolve) => {
    const s = connect({ host: nodeA.address, port: atA!.upstream!.port }, () => (s.destroy(), resolve('connected')));
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
  t.equal(fromHost, 'connected', 'the proxies (this host) reach desktop A');
  t.equal((await swarm.manager.exec(process.execPath, ['-e', TCP_PROBE, nodeA.address, String(atA!.upstream!.port), '3000'])).trim(), 'refused', 'the manager node, not a proxy, is refused at desktop A');

  // Node B goes down (its engine stops): its desktop fails with the node named, its route goes.
  const urlB = (await view(cookie, ids['in-b']!)).url;
  const stoppedAt = Date.now();
  await nodeB.stopEngine();
  const failed = await until(cookie, ids['in-b']!, 'the desktop on the lost node to fail', (v) => v.state !== 'running');
  t.comment(`marked ${failed.state} ${Date.now() - stoppedAt} ms after its node's engine stopped`);
  t.equal(failed.state, 'failed');
  t.match(failed.reason, new RegExp(`${nodeB.id.slice(0, 12)}.*(is down|exited|shutdown)`), `the reason names the node (${failed.reason})`);
  t.not((await fetch(urlB, { headers: { cookie } })).status, 200, 'its route is withdrawn');
  const a = await view(cookie, ids['in-a']!);
  t.equal(a.state, 'running', 'the desktop on the other node keeps running');
  t.equal((await fetch(a.url, { headers: { cookie } })).status, 200);

  // A node that is down loses the guard label (its rules may not survive it), and gets it back
  // only once its guard task runs again: no desktop is placed there unguarded in between.
  const guardLabel = async () => JSON.parse(await swarm.manager.docker(['node', 'inspect', nodeB.id, '--format', '{{json .Spec.Labels}}']))[hub.runtime.guardLabel];
  await waitFor('the lost node to lose its guard label', async () => ((await guardLabel()) === undefined ? true : undefined), 30_000, 250);
  t.pass('the lost node lost its guard label');

  // Node B back (it rejoins by itself), then both desktops deleted.
  await nodeB.startEngine();
  await waitFor('node B to be labelled again once its guard runs', async () => ((await guardLabel()) === 'on' ? true : undefined), 90_000, 500);
  t.pass('node B is labelled again once its guard runs');
  for (const id of Object.values(ids)) t.equal((await hub.api(cookie, 'DELETE', `/api/desktops/${id}`)).status, 204);
});

const settled = (cookie: string, id: string) =>
  waitFor('the desktop to settle', async () => {
    const v = await view(cookie, id);
    return v.state === 'running' || v.state === 'failed' ? v : undefined;
  }, 120_000, 250);

/** Creates alice's desktop and waits; the node it runs on, and its container there. */
async function launch(t: Test, cookie: string, type = 'with-home'): Promise<{ desktop: DesktopJson; node?: SwarmNode; container?: string }> {
  const created = await hub.api<DesktopJson>(cookie, 'POST', '/api/desktops', { type });
  t.equal(created.status, 201, JSON.stringify(created.body));
  const desktop = await settled(cookie, created.body.id);
  if (desktop.state !== 'running') return { desktop };
  const [status] = (await hub.runtime.list()).filter((s) => s.desktopId === desktop.id);
  const node = swarm.nodes.find((n) => n.address === status?.upstream?.host)!;
  const container = (await node.docker(['ps', '-q', '--filter', `label=com.docker.swarm.service.id=${status!.runtimeId}`])).trim();
  return { desktop, node, container };
}

const volumeOn = (node: SwarmNode, homeId: string) => engineOf(node).getVolume(`deskhub-home-${homeId}`).inspect().then(() => true, () => false);

t.test("a home stays on its node: kept, refused while the node is down, moved by an admin", async (t) => {
  const alice = await hub.signIn('alice');
  const root = await hub.signIn('root');

  const first = await launch(t, alice);
  t.equal(first.desktop.state, 'running', first.desktop.reason ?? '');
  const home = (first.desktop as DesktopJson & { homeId: string }).homeId;
  const nodeX = first.node!;
  t.not(nodeX.id, swarm.manager.id, 'on a worker');
  await execIn(engineOf(nodeX), first.container!, ['node', '-e', "require('fs').writeFileSync('/home/kasm-user/proof.txt', 'written on the first desktop')"]);
  const [listed] = (await hub.api<VolumeJson[]>(alice, 'GET', '/api/volumes')).body;
  t.match(listed, { id: home, node: { id: nodeX.id, name: new RegExp(nodeX.id.slice(0, 12)) } }, 'GET /api/volumes names the node that holds it');

  t.equal((await hub.api(alice, 'DELETE', `/api/desktops/${first.desktop.id}`)).status, 204);
  t.ok(await volumeOn(nodeX, home), 'deleting the desktop keeps the home on its node');
  const second = await launch(t, alice);
  t.equal(second.desktop.state, 'running', second.desktop.reason ?? '');
  t.equal(second.node?.id, nodeX.id, 'the next desktop lands on the same node');
  const service = JSON.parse(await swarm.manager.docker(['service', 'inspect', (await hub.runtime.list()).find((s) => s.desktopId === second.desktop.id)!.runtimeId, '--format', '{{json .Spec.TaskTemplate.Placement.Constraints}}']));
  t.ok(service.includes(`node.id==${nodeX.id}`), 'placed there by a constraint, not by chance');
  t.equal(await execIn(engineOf(nodeX), second.container!, ['node', '-e', "process.stdout.write(require('fs').readFileSync('/home/kasm-user/proof.txt','utf8'))"]), 'written on the first desktop', 'and sees the file');
  t.equal((await hub.api(alice, 'POST', `/api/desktops/${second.desktop.id}/stop`, {})).status, 200);
  await until(alice, second.desktop.id, 'the desktop to stop', (v) => v.state === 'stopped');

  // Its node full (a type naming the same home that needs more memory than any node has): it
  // waits for nothing, the reason names the home and its node.
  const full = await launch(t, alice, 'with-home-big');
  t.equal(full.desktop.state, 'failed');
  t.match(full.desktop.reason, new RegExp(`home "home" of alice lives on node .*${nodeX.id.slice(0, 12)}.*, which cannot run it now: .*insufficient resources`), `a node that cannot run it is named (${full.desktop.reason})`);
  t.same(full.desktop.homeLost, { offerNewHome: true }, 'and counts as its home being out of reach');
  t.equal((await hub.api(alice, 'DELETE', `/api/desktops/${full.desktop.id}`)).status, 204);

  // Its node's engine stops: no empty home elsewhere, a reason that names both.
  await nodeX.stopEngine();
  await waitFor('the manager to see the node down', async () => ((await swarm.manager.docker(['node', 'inspect', nodeX.id, '--format', '{{.Status.State}}'])).trim() === 'down' ? true : undefined), 60_000, 500);
  const refused = await launch(t, alice);
  t.equal(refused.desktop.state, 'failed');
  t.match(refused.desktop.reason, new RegExp(`home "home" of alice lives on node .*${nodeX.id.slice(0, 12)}.*, which is down`), `the reason names the home and its node (${refused.desktop.reason})`);
  for (const node of swarm.nodes.filter((n) => n !== nodeX)) t.notOk(await volumeOn(node, home), `no empty home was made on ${node.name}`);
  t.same(refused.desktop.homeLost, { offerNewHome: true }, 'the desktop says its home is lost, and that the operator allows a stand-in (HOME_NODE_LOST)');
  t.equal((await hub.api(alice, 'DELETE', `/api/desktops/${refused.desktop.id}`)).status, 204);
  // Starting her stopped desktop fails the same way (its service is kept, stopped).
  t.equal((await hub.api(alice, 'POST', `/api/desktops/${second.desktop.id}/start`, {})).status, 200);
  const lost = await until(alice, second.desktop.id, 'the start to fail', (v) => v.state === 'failed');
  t.match(lost.reason, /lives on node .*, which is down/);
  t.same(lost.homeLost, { offerNewHome: true });

  // In the browser: alice sees why, and starts it with a stand-in home once she has confirmed.
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${hub.base}/`);
  t.ok((await page.request.post(`${hub.base}/auth/dev-login`, { data: { username: 'alice' }, headers: { origin: hub.base } })).ok(), 'alice signs in');
  await page.goto(`${hub.base}/`);
  const card = page.locator(`[data-desktop-id="${second.desktop.id}"]`);
  await card.locator('[data-home-lost]').waitFor({ timeout: 30_000 });
  t.match(await card.locator('.reason').textContent(), new RegExp(`lives on node .*${nodeX.id.slice(0, 12)}`), 'her card says which node holds her home');
  await card.getByRole('button', { name: /Start with a new empty home/ }).click();
  const dialog = page.getByRole('dialog');
  t.match(await dialog.textContent(), /stays on its node with all its files/, 'a confirmation says what stays where');
  await dialog.getByRole('button', { name: 'Start with a new empty home' }).click();
  await card.locator('[data-state="running"]').waitFor({ timeout: 120_000 });
  t.pass('the desktop runs, shown live on her card');
  const standIn = await view(alice, second.desktop.id);
  const standInHome = (standIn as DesktopJson & { homeId: string }).homeId;
  t.not(standInHome, home, 'with a home of its own');
  const homes = (await hub.api<Array<VolumeJson & { name: string }>>(alice, 'GET', '/api/volumes')).body;
  t.match(homes.find((h) => h.id === home), { name: 'home' }, 'her home keeps its name, for new desktops once its node is back');
  t.match(homes.find((h) => h.id === standInHome), { name: `home (stand-in for node ${nodeX.id.slice(0, 12)})` }, 'the stand-in is named for the node it stands in for');
  const events = (await hub.api<Array<{ kind: string; message: string }>>(alice, 'GET', `/api/desktops/${second.desktop.id}/events`)).body;
  t.ok(events.some((e) => e.kind === 'home' && /^alice confirmed starting with the stand-in home/.test(e.message)), 'her confirmation is recorded as an event');
  const [task] = (await hub.runtime.list()).filter((s) => s.desktopId === second.desktop.id);
  t.not(swarm.nodes.find((n) => n.address === task?.upstream?.host)?.id, nodeX.id, 'it runs on another node (a new service: the stopped one mounted the old home)');
  t.equal((await hub.api(alice, 'DELETE', `/api/desktops/${second.desktop.id}`)).status, 204);
  t.equal((await hub.api(alice, 'DELETE', `/api/volumes/${standInHome}`)).status, 204, 'and the stand-in is deleted like any home');
  await nodeX.startEngine();
  await waitFor('the node to be back', async () => ((await swarm.manager.docker(['node', 'inspect', nodeX.id, '--format', '{{.Status.State}}'])).trim() === 'ready' ? true : undefined), 90_000, 500);

  // An admin moves it to the other worker.
  const nodeY = swarm.nodes.find((n) => n !== nodeX && n !== swarm.manager)!;
  t.equal((await hub.api(alice, 'POST', `/api/admin/volumes/${home}/move`, { node: nodeY.id })).status, 403, 'only admins move homes');
  // In the admin view: the home's card names its node; Move to the other worker, confirmed.
  const adminPage = await (await browser.newContext()).newPage();
  await adminPage.goto(`${hub.base}/`);
  t.ok((await adminPage.request.post(`${hub.base}/auth/dev-login`, { data: { username: 'root' }, headers: { origin: hub.base } })).ok(), 'root signs in');
  await adminPage.goto(`${hub.base}/admin`);
  const homeCard = adminPage.locator(`#home-${home}`);
  await homeCard.locator(`[data-node-id="${nodeX.id}"]`).waitFor({ timeout: 30_000 });
  t.pass("the admin view shows the home's node");
  await homeCard.getByLabel('Move to').selectOption(nodeY.id);
  await homeCard.getByRole('button', { name: /^Move home/ }).click();
  const moveDialog = adminPage.getByRole('dialog');
  t.match(await moveDialog.textContent(), /copied to .* and checked there, then removed from/, 'a confirmation says what a move does');
  await moveDialog.getByRole('button', { name: 'Move home' }).click();
  await homeCard.locator(`[data-node-id="${nodeY.id}"]`).waitFor({ timeout: 120_000 });
  t.pass('the card names the new node once the move is done');
  const [moved] = (await hub.api<VolumeJson[]>(root, 'GET', '/api/admin/volumes')).body.filter((v) => v.id === home);
  t.equal(moved?.node?.id, nodeY.id, 'the home is on the other worker now');
  t.notOk(await volumeOn(nodeX, home), 'the old volume is gone');
  const third = await launch(t, alice);
  t.equal(third.desktop.state, 'running', third.desktop.reason ?? '');
  t.equal(third.node?.id, nodeY.id, "alice's next desktop runs on the home's new node");
  t.equal(
    await execIn(engineOf(nodeY), third.container!, ['node', '-e', "const fs=require('fs');process.stdout.write(fs.readFileSync('/home/kasm-user/proof.txt','utf8')+' '+fs.statSync('/home/kasm-user/proof.txt').uid)"]),
    'written on the first desktop 1000',
    'the file moved with it, owner kept',
  );
  t.equal((await hub.api(root, 'POST', `/api/admin/volumes/${home}/move`, { node: nodeX.id })).status, 409, 'not while a desktop runs with it');
  t.equal((await hub.api(alice, 'DELETE', `/api/desktops/${third.desktop.id}`)).status, 204);
  t.equal((await hub.api(alice, 'DELETE', `/api/volumes/${home}`)).status, 204, 'deleting the home is its own request');
  for (const node of swarm.nodes) t.notOk(await volumeOn(node, home), `and leaves no volume on ${node.name}`);
});

t.test('homes on shared storage are pinned to no node: a desktop on another node sees the same files', async (t) => {
  const root = await mkdtemp('/tmp/deskhub-swarm-homes-');
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const runtime = new SwarmRuntime({
    docker: engineOf(swarm.manager),
    instance: `shared-${Date.now().toString(36)}`,
    pollMs: 500,
    // This runtime's own desktops are only exec'd into, never reached: no second guard beside the hub's.
    guard: 'off',
    homeStorage: { driver: 'local', options: { type: 'none', o: 'bind', device: `${root}/{home}` } },
    nodeEngines: nodeEnginesFrom({ byNode: new Map(swarm.nodes.map((n) => [n.id, n.dockerHost])) }),
  });
  const type = kasmTestType({ runtime: 'swarm', memory: '128m', home: { path: '/home/kasm-user', scope: 'user', name: 'home' }, placement: { constraints: ['node.role==worker'], spread: [] } });
  const homeId = crypto.randomUUID();
  const spec = () => ({ ...specFor(type), ownerId: 'u-carol', ownerName: 'carol', home: { id: homeId, path: '/home/kasm-user', name: 'home', location: null } });
  const started: string[] = [];
  t.teardown(async () => {
    for (const id of started) await runtime.remove(id).catch(() => undefined);
    await runtime.close();
  });
  const where = async (serviceId: string) => {
    const [task] = (await engineOf(swarm.manager).listTasks({ filters: { service: [serviceId], 'desired-state': ['running'] } })) as Array<{ NodeID: string; Status: { ContainerStatus?: { ContainerID?: string } } }>;
    return { node: swarm.nodes.find((n) => n.id === task!.NodeID)!, container: task!.Status.ContainerStatus!.ContainerID! };
  };
  t.same(await runtime.availableFor(type), { ok: true }, 'a type with a home can run without a node to pin it to');

  const first = await runtime.create(spec());
  started.push(first.runtimeId);
  t.equal(first.homeLocation, undefined, 'no location is recorded for a shared home');
  const a = await where(first.runtimeId);
  await execIn(engineOf(a.node), a.container, ['node', '-e', "require('fs').writeFileSync('/home/kasm-user/shared.txt', 'written on ' + process.argv[1])", a.node.name]);
  await runtime.remove(first.runtimeId);

  // The first node drained: the scheduler must place the next desktop elsewhere, home or not.
  await swarm.manager.docker(['node', 'update', '--availability', 'drain', a.node.id]);
  t.teardown(() => swarm.manager.docker(['node', 'update', '--availability', 'active', a.node.id]).catch(() => undefined));
  const second = await runtime.create(spec());
  started.push(second.runtimeId);
  const b = await where(second.runtimeId);
  t.not(b.node.id, a.node.id, `the next desktop runs on another node (${b.node.name}, the first was ${a.node.name})`);
  t.equal(await execIn(engineOf(b.node), b.container, ['node', '-e', "const fs=require('fs');const f='/home/kasm-user/shared.txt';process.stdout.write(fs.readFileSync(f,'utf8')+' '+fs.statSync(f).uid)"]), `written on ${a.node.name} 1000`, 'and sees the same files');
  await swarm.manager.docker(['node', 'update', '--availability', 'active', a.node.id]);

  const [listed] = (await runtime.listHomes()).filter((h) => h.homeId === homeId);
  t.ok(listed && listed.sizeBytes !== null && listed.node === undefined, `listed with its size (${listed?.sizeBytes} bytes) and no node`);
  await t.rejects(runtime.moveHome(homeId, a.node.id), /shared storage .* nothing to move/, 'a shared home is not moved');
  await runtime.remove(second.runtimeId);
  t.ok((await volumeOn(a.node, homeId)) && (await volumeOn(b.node, homeId)), 'both nodes made a volume object naming it');
  await runtime.removeHome(homeId);
  t.same(await readdir(root), [], 'deleting the home deletes its folder');
  for (const node of swarm.nodes) t.notOk(await volumeOn(node, homeId), `and its volume object on ${node.name}`);
});
