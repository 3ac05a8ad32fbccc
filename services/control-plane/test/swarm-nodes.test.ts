// Several nodes: a real three-engine swarm on this machine (@deskhub/testkit/swarm: each engine
// its own dockerd in a network namespace of the test's own, joined by a bridge of the test's
// own). Desktops of two types land on the nodes their placement constraints name (node labels),
// are reached through the proxy at their nodes' addresses, and a node that goes down has its
// desktops marked failed with the node named and their routes withdrawn, while the other node's
// desktop keeps running.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { startSwarm, type TestSwarm } from '@deskhub/testkit/swarm';
import { SwarmRuntime } from '../src/runtime/docker/swarm-runtime.ts';
import { buildImage, startDeskhubOn, type DockerDeskhub } from './docker-helpers.ts';
import { waitFor, type DesktopJson } from './helpers.ts';

const catalogDir = mkdtempSync(join(tmpdir(), 'deskhub-swarm-nodes-'));
t.teardown(() => rmSync(catalogDir, { recursive: true, force: true }));
const catalog = join(catalogDir, 'catalog.yaml');
const type = (id: string, zone: string) => `
  - id: ${id}
    name: Kasm test desktop in zone ${zone}
    runtime: swarm
    image: deskhub/kasm-test:local
    port: 6901
    scheme: https
    verifyTls: false
    credentials: { kind: kasm }
    activity: traffic
    memory: 128m
    placement: { constraints: [node.labels.zone==${zone}] }
    readiness: { path: /, timeoutSeconds: 60 }
    entryQuery: path=desktop/{path}/websockify
`;
writeFileSync(catalog, `types:${type('in-a', 'a')}${type('in-b', 'b')}`);

let swarm: TestSwarm;
let hub: DockerDeskhub<SwarmRuntime>;

t.test('set-up: three engines, one swarm, deskhub on its manager', async (setup) => {
  await buildImage('kasm-test');
  const started = Date.now();
  swarm = await startSwarm({ nodes: 3 });
  setup.comment(`swarm of 3 formed in ${Date.now() - started} ms`);
  await swarm.loadImage('deskhub/kasm-test:local', swarm.nodes.slice(1));
  await swarm.label(swarm.nodes[1]!, 'zone', 'a');
  await swarm.label(swarm.nodes[2]!, 'zone', 'b');
  hub = await startDeskhubOn(t, 'swarm-nodes', () => {
    const runtime = new SwarmRuntime({ docker: new Docker({ socketPath: swarm.manager.dockerHost.replace(/^unix:\/\//, '') }), instance: `nodes-${Date.now().toString(36)}`, pollMs: 500, guard: 'off' });
    t.teardown(() => runtime.close());
    return runtime;
  }, { RUNTIME: 'swarm', CATALOG: catalog });
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

  // Node B back (it rejoins by itself), then both desktops deleted.
  await nodeB.startEngine();
  for (const id of Object.values(ids)) t.equal((await hub.api(cookie, 'DELETE', `/api/desktops/${id}`)).status, 204);
});
