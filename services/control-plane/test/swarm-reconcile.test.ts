// The control plane killed mid-create on a real one-node swarm, behind the node guard: deskhub
// runs as a child process (`pnpm start`'s entry, RUNTIME=swarm from its settings) and is killed
// with SIGKILL the moment the manager reports the desktop's service created, and, in a second
// run, the moment it reports the desktop's network created (before any service exists). A
// second deskhub on the same database and swarm must leave no desktop stuck, no service that the
// database does not know, and no network that no service uses; a new desktop must then work.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { createTestDatabase } from '@deskhub/testkit/postgres';
import { startSwarm } from '@deskhub/testkit/swarm';
import { startEmbedded } from '../src/embedded-start.ts';
import { SwarmRuntime } from '../src/runtime/docker/swarm-runtime.ts';
import { buildImage, csrfApi, csrfSignIn, freePort, startDeskhubProcess, swarmCatalog } from './docker-helpers.ts';
import { waitFor, type DesktopJson } from './helpers.ts';

// Image builds, a swarm of its own, and every step through real engines: minutes, more under load.
t.setTimeout(900_000);

await buildImage('kasm-test');
await buildImage('deskhub');

const swarm = await startSwarm({ nodes: 1 });
t.teardown(() => swarm.close());
await swarm.loadImage('deskhub/kasm-test:local');
await swarm.loadImage('deskhub/deskhub:local');
const db = await createTestDatabase('swarm_reconcile');
t.teardown(() => db.drop());
const dir = mkdtempSync(join(tmpdir(), 'deskhub-swarm-reconcile-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const catalog = swarmCatalog(t, [{ id: 'kasm-swarm', name: 'Kasm test desktop on the swarm' }]);

const instance = `rc-${Date.now().toString(36)}`;
const sharedEnv = {
  DATA_DIR: join(dir, 'data'),
  DATABASE_URL: db.url,
  SECRET_KEY: randomBytes(32).toString('base64'),
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
};
const docker = new Docker({ socketPath: swarm.manager.dockerHost.replace(/^unix:\/\//, '') });

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
    const child = await startDeskhubProcess({ ...sharedEnv, PORT: String(port) });
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
    const second = await startEmbedded({ env: { ...sharedEnv, PORT: '0' }, runtimes: [runtime] });
    t.teardown(() => second.close());
    const base2 = second.proxyUrl;
    const cookie2 = await csrfSignIn(base2, 'carol');
    const current = async () => (await csrfApi<DesktopJson>(base2, cookie2, 'GET', `/api/desktops/${launched.body.id}`)).body;
    // Settled: failed with its service and network gone, or running with exactly one service.
    const view = await waitFor('the crashed desktop to settle', async () => {
      const v = await current();
      const mine = (await onSwarm()).services.filter((s) => s.desktop === launched.body.id);
      return (v.state === 'failed' ? mine.length === 0 : v.state === 'running' && mine.length === 1) ? v : undefined;
    }, 90_000, 500).catch(current);
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
