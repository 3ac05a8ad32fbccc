// End to end on a real one-node swarm: the whole of deskhub in this process (control plane +
// proxy + route stream, real Postgres) with the Swarm runtime on a swarm of the test's own
// (@deskhub/testkit/swarm). A kasm-test desktop created through the API runs as a service and
// is reached through the proxy at its node's host-mode port (page and WebSocket echo); stopped
// and started through the API it runs again; a task killed or a service removed behind
// deskhub's back makes the desktop failed with the node named, and its route is withdrawn.
//
// Then, on the same swarm, the control plane killed mid-create: another deskhub runs as a child
// process (`pnpm start`'s entry, RUNTIME=swarm from its settings, an installation of its own) and
// is killed with SIGKILL the moment the manager reports the desktop's service created, and, in a
// second run, the moment it reports the desktop's network created (before any service exists).
// A second deskhub on the same database and swarm must leave no desktop stuck, no service that
// the database does not know, and no network that no service uses; a new desktop must then work.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import WebSocket from 'ws';
import { startSwarm, type TestSwarm } from '@deskhub/testkit/swarm';
import { createTestDatabase } from '@deskhub/testkit/postgres';
import { startEmbedded } from '../src/embedded-start.ts';
import { SwarmRuntime } from '../src/runtime/docker/swarm-runtime.ts';
import { buildImage, csrfApi, csrfSignIn, freePort, settledAfterCrash, startDeskhubOn, startDeskhubProcess, swarmCatalog, type DockerDeskhub } from './docker-helpers.ts';
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

const instance = `rc-${Date.now().toString(36)}`;
const dir = mkdtempSync(join(tmpdir(), 'deskhub-swarm-reconcile-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let db: Awaited<ReturnType<typeof createTestDatabase>>;
let docker: Docker;
const secretKey = randomBytes(32).toString('base64');
/** The crashing deskhub's settings: its own installation on the swarm of the set-up. */
const sharedEnv = (): Record<string, string> => ({
  DATA_DIR: join(dir, 'data'),
  DATABASE_URL: db.url,
  SECRET_KEY: secretKey,
  RUNTIME: 'swarm',
  CATALOG: catalog,
  AUTH_MODE: 'dev',
  LOG_LEVEL: 'warn',
  METRICS_PORT: '0',
  PROXY_METRICS_PORT: '0',
  RECONCILE_INTERVAL_MS: '1000',
  SWARM_HOST: swarm.manager.dockerHost,
  SWARM_PROXIES: `${swarm.hostAddress}/32`,
  DESKHUB_INSTANCE: instance,
});

t.test('set-up: a database for the deskhub that crashes', async () => {
  db = await createTestDatabase('swarm_reconcile');
  t.teardown(() => db.drop());
  docker = new Docker({ socketPath: swarm.manager.dockerHost.replace(/^unix:\/\//, '') });
});

/** The desktop services and networks of this installation on the swarm. */
async function onSwarm(): Promise<{ services: { name: string; desktop: string }[]; networks: string[] }> {
  const services = (await docker.listServices({ filters: { label: [`deskhub.instance=${instance}`] } } as Docker.ServiceListOptions)) as unknown as Array<{ Spec: { Name: string; Labels: Record<string, string> } }>;
  const networks = (await docker.listNetworks({ filters: { label: [`deskhub.instance=${instance}`] } })) as Array<{ Name: string }>;
  return { services: services.map((s) => ({ name: s.Spec.Name, desktop: s.Spec.Labels['deskhub.desktop']! })), networks: networks.map((n) => n.Name) };
}

for (const moment of ['service', 'network'] as const) {
  t.test(`killed when the desktop's ${moment} was created: the next deskhub leaves nothing stuck or behind`, async (t) => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const child = await startDeskhubProcess({ ...sharedEnv(), PORT: String(port) });
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    // The manager says the instant the desktop's service (or network) exists: kill deskhub then.
    const events = (await docker.getEvents({ filters: { type: [moment], event: ['create'] } })) as NodeJS.ReadableStream & { destroy(): void };
    const created = new Promise<string>((resolve) => {
      let buffered = '';
      events.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        for (const line of buffered.split('\n').filter((l) => l.trim())) {
          const name = (JSON.parse(line) as { Actor?: { Attributes?: { name?: string } } }).Actor?.Attributes?.name ?? '';
          // Not the node guard's service: the desktop's own.
          if (name.startsWith('deskhub-') && !name.startsWith('deskhub-node-guard')) resolve(name);
        }
      });
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const cookie = await csrfSignIn(base, 'carol');
    const launched = await csrfApi<DesktopJson>(base, cookie, 'POST', '/api/desktops', { type: 'kasm-swarm' });
    t.equal(launched.status, 201, JSON.stringify(launched.body));
    const name = await created;
    child.kill('SIGKILL');
    await exited;
    events.destroy();
    t.comment(`killed deskhub when ${moment} ${name} was created`);
    const left = await onSwarm();
    t.ok(left.networks.includes(name), 'the crash left the desktop network behind');

    const runtime = new SwarmRuntime({ docker, instance, pollMs: 500, proxies: [`${swarm.hostAddress}/32`], orphanNetworkAfterMs: 1000 });
    const second = await startEmbedded({ env: { ...sharedEnv(), PORT: '0' }, runtimes: [runtime] });
    t.teardown(() => second.close());
    const base2 = second.proxyUrl;
    const cookie2 = await csrfSignIn(base2, 'carol');
    const current = async () => (await csrfApi<DesktopJson>(base2, cookie2, 'GET', `/api/desktops/${launched.body.id}`)).body;
    // Settled: failed with its service and network gone, or running with exactly one service.
    const view = await settledAfterCrash(current, async () => (await onSwarm()).services.filter((s) => s.desktop === launched.body.id).length, 90_000, 500);
    t.ok(['running', 'failed'].includes(view.state), `not stuck: ${view.state} (${view.reason ?? ''})`);
    if (view.state === 'failed') t.match(view.reason, /stopped while this desktop was being created/);
    const known = new Set((await csrfApi<DesktopJson[]>(base2, cookie2, 'GET', '/api/desktops')).body.map((d) => d.id));
    // No service the database does not know, and no network without its service (swept).
    const settled = await waitFor('no leftover network', async () => {
      const now = await onSwarm();
      const used = new Set(now.services.map((s) => s.name));
      return now.networks.every((n) => used.has(n)) ? now : undefined;
    }, 60_000, 500).catch(onSwarm);
    t.same(settled.services.filter((s) => !known.has(s.desktop)), [], 'no orphan services');
    t.same(settled.networks.filter((n) => !settled.services.some((s) => s.name === n)), [], 'no network without its service');

    // And the second deskhub runs new desktops normally.
    const fresh = await csrfApi<DesktopJson>(base2, cookie2, 'POST', '/api/desktops', { type: 'kasm-swarm', name: `again-${moment}` });
    t.equal(fresh.status, 201, JSON.stringify(fresh.body));
    const state = await waitFor('the new desktop to run', async () => {
      const v = (await csrfApi<DesktopJson>(base2, cookie2, 'GET', `/api/desktops/${fresh.body.id}`)).body;
      return v.state === 'running' || v.state === 'failed' ? v : undefined;
    }, 120_000, 500);
    t.equal(state.state, 'running', state.reason ?? '');
    const page = await fetch(`${base2}${new URL(fresh.body.url).pathname}`, { headers: { cookie: cookie2 } });
    t.equal(page.status, 200, 'and answers through the proxy');
    for (const id of known) await csrfApi(base2, cookie2, 'DELETE', `/api/desktops/${id}`);
    await csrfApi(base2, cookie2, 'DELETE', `/api/desktops/${fresh.body.id}`);
  });
}
