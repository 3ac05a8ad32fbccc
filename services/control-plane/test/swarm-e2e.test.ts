// End to end on a real one-node swarm: the whole of deskhub in this process (control plane +
// proxy + route stream, real Postgres) with the Swarm runtime on a swarm of the test's own
// (@deskhub/testkit/swarm). A kasm-test desktop created through the API runs as a service and
// is reached through the proxy at its node's host-mode port (page and WebSocket echo); stopped
// and started through the API it runs again; a task killed or a service removed behind
// deskhub's back makes the desktop failed with the node named, and its route is withdrawn.
import t from 'tap';
import Docker from 'dockerode';
import WebSocket from 'ws';
import { startSwarm, type TestSwarm } from '@deskhub/testkit/swarm';
import { SwarmRuntime } from '../src/runtime/docker/swarm-runtime.ts';
import { buildImage, startDeskhubOn, swarmCatalog, type DockerDeskhub } from './docker-helpers.ts';
import { waitFor, type DesktopJson } from './helpers.ts';

// Image builds, a swarm of its own, and every step through real engines: minutes, more under load.
t.setTimeout(900_000);

type DesktopView = DesktopJson;

const catalog = swarmCatalog(t, [{ id: 'kasm-swarm', name: 'Kasm test desktop on the swarm', extra: ['cpus: 0.5'] }]);

let swarm: TestSwarm;
let hub: DockerDeskhub<SwarmRuntime>;

t.test('set-up: a one-node swarm and deskhub on it', async () => {
  await buildImage('kasm-test');
  await buildImage('deskhub');
  swarm = await startSwarm({ nodes: 1 });
  t.teardown(() => swarm.close());
  await swarm.loadImage('deskhub/kasm-test:local');
  await swarm.loadImage('deskhub/deskhub:local');
  hub = await startDeskhubOn(t, 'swarm-e2e', () => {
    const runtime = new SwarmRuntime({ docker: new Docker({ socketPath: swarm.manager.dockerHost.replace(/^unix:\/\//, '') }), instance: `e2e-${Date.now().toString(36)}`, pollMs: 500, proxies: [`${swarm.hostAddress}/32`] });
    t.teardown(() => runtime.close());
    return runtime;
  }, { RUNTIME: 'swarm', CATALOG: catalog });
});

function viewOf(cookie: string, id: string): Promise<DesktopView> {
  return hub.api<DesktopView>(cookie, 'GET', `/api/desktops/${id}`).then((r) => r.body);
}

function until(cookie: string, id: string, what: string, done: (v: DesktopView) => boolean): Promise<DesktopView> {
  return waitFor(what, async () => {
    const view = await viewOf(cookie, id);
    return done(view) ? view : undefined;
  }, 120_000, 250);
}

function echo(cookie: string, path: string, text: string): Promise<string> {
  const ws = new WebSocket(`${hub.base.replace(/^http/, 'ws')}/desktop/${path}/websockify`, ['binary'], { headers: { cookie, origin: hub.base } });
  return new Promise<string>((resolve, reject) => {
    ws.on('open', () => ws.send(text));
    ws.on('message', (data) => {
      resolve(String(data));
      ws.close();
    });
    ws.on('error', reject);
    ws.on('unexpected-response', (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)));
  });
}

t.test('create, open through the proxy, stop, start, delete: all through the API', async (t) => {
  const cookie = await hub.signIn('alice');
  const created = await hub.api<DesktopView>(cookie, 'POST', '/api/desktops', { type: 'kasm-swarm' });
  t.equal(created.status, 201, JSON.stringify(created.body));
  const view = await until(cookie, created.body.id, 'running', (v) => v.state === 'running' || v.state === 'failed');
  t.equal(view.state, 'running', view.reason ?? '');

  const [status] = (await hub.runtime.list()).filter((s) => s.desktopId === created.body.id);
  t.match(status?.upstream, { host: swarm.manager.address }, "reached at its node's address");
  const page = await fetch(view.url, { headers: { cookie } });
  t.equal(page.status, 200);
  t.match(await page.text(), /<h1>Demo desktop/, "the task's page, through the proxy");
  t.equal(await echo(cookie, 'alice-kasm-swarm', 'hello swarm'), 'hello swarm', 'a WebSocket through the proxy');

  t.equal((await hub.api(cookie, 'POST', `/api/desktops/${created.body.id}/stop`)).status < 300, true, 'stop accepted');
  const stopped = await until(cookie, created.body.id, 'stopped', (v) => v.state === 'stopped');
  t.equal(stopped.state, 'stopped');
  t.not((await fetch(view.url, { headers: { cookie } })).status, 200, 'no route while stopped');
  t.equal((await hub.api(cookie, 'POST', `/api/desktops/${created.body.id}/start`)).status < 300, true, 'start accepted');
  const again = await until(cookie, created.body.id, 'running again', (v) => v.state === 'running' || v.state === 'failed');
  t.equal(again.state, 'running', again.reason ?? '');
  t.equal(await echo(cookie, 'alice-kasm-swarm', 'back again'), 'back again', 'answers after a start (a new task)');

  t.equal((await hub.api(cookie, 'DELETE', `/api/desktops/${created.body.id}`)).status, 204);
  t.same((await hub.runtime.list()).filter((s) => s.desktopId === created.body.id), [], 'its service is gone');
});

t.test("behind deskhub's back: a killed task and a removed service fail the desktop with the node named, and withdraw its route", async (t) => {
  const cookie = await hub.signIn('bob');
  const created = await hub.api<DesktopView>(cookie, 'POST', '/api/desktops', { type: 'kasm-swarm' });
  const view = await until(cookie, created.body.id, 'running', (v) => v.state === 'running' || v.state === 'failed');
  t.equal(view.state, 'running', view.reason ?? '');
  const [status] = (await hub.runtime.list()).filter((s) => s.desktopId === created.body.id);
  const containers = (await swarm.manager.docker(['ps', '-q', '--filter', `label=com.docker.swarm.service.id=${status!.runtimeId}`])).trim();
  await swarm.manager.docker(['kill', containers]);
  const failed = await until(cookie, created.body.id, 'failed after the kill', (v) => v.state !== 'running');
  t.equal(failed.state, 'failed');
  t.match(failed.reason, /exited with code 137 on \S+ \(\w{12}, 10\.231\.\d+\.2\)/, `the reason names the node (${failed.reason})`);
  t.not((await fetch(view.url, { headers: { cookie } })).status, 200, 'route withdrawn');

  // Started again by its owner, then its service removed outside deskhub.
  t.equal((await hub.api(cookie, 'POST', `/api/desktops/${created.body.id}/start`)).status < 300, true);
  const back = await until(cookie, created.body.id, 'running again', (v) => v.state === 'running' || v.state === 'failed');
  t.equal(back.state, 'running', back.reason ?? '');
  await swarm.manager.docker(['service', 'rm', status!.runtimeId]);
  const gone = await until(cookie, created.body.id, 'not running after docker service rm', (v) => v.state !== 'running');
  t.not(gone.state, 'running', `${gone.state}: ${gone.reason ?? ''}`);
  t.not((await fetch(view.url, { headers: { cookie } })).status, 200, 'route withdrawn');
  t.equal((await hub.api(cookie, 'DELETE', `/api/desktops/${created.body.id}`)).status, 204);
});
