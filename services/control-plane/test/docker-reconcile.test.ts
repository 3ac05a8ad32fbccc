// Reconciliation with Docker after a crash: deskhub runs as a child process (`pnpm start`'s
// entry, Docker runtime only, real Postgres); it is killed with SIGKILL the moment Docker
// reports the new desktop's container created, i.e. mid-create. A second deskhub on the same
// database and engine must leave no desktop stuck in creating/starting and no container
// that the database does not know (orphans removed), and a new desktop must then work.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase } from '@deskhub/testkit/postgres';
import { startEmbedded } from '../src/embedded-start.ts';
import { DockerRuntime } from '../src/runtime/docker/docker-runtime.ts';
import { buildImage, csrfApi, csrfSignIn, freePort, settledAfterCrash, startDeskhubProcess, testRuntime } from './docker-helpers.ts';
import { waitFor } from './helpers.ts';

await buildImage('desktop');
await buildImage('kasm-test');

const db = await createTestDatabase('docker_reconcile');
t.teardown(() => db.drop());
const dataDir = mkdtempSync(join(tmpdir(), 'deskhub-docker-reconcile-'));
t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
const { runtime, cleanup } = testRuntime();
t.teardown(cleanup);

const sharedEnv = {
  DATA_DIR: dataDir,
  DATABASE_URL: db.url,
  SECRET_KEY: randomBytes(32).toString('base64'),
  RUNTIME: 'docker',
  AUTH_MODE: 'dev',
  LOG_LEVEL: 'warn',
  METRICS_PORT: '0',
  PROXY_METRICS_PORT: '0',
  RECONCILE_INTERVAL_MS: '1000',
  // The child builds its own Docker runtime from these: same instance and network as `runtime`.
  DESKHUB_INSTANCE: runtime.instance,
  DOCKER_NETWORK: runtime.networkName,
};

interface DesktopView {
  id: string;
  state: string;
  reason?: string | null;
  url: string;
}

t.test('killed mid-create: the next deskhub leaves nothing stuck and no orphan container', async (t) => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const child = await startDeskhubProcess({ ...sharedEnv, PORT: String(port) });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  // Docker tells us the instant the desktop's container exists: kill deskhub right then.
  const events = (await runtime.docker.getEvents({
    filters: { type: ['container'], event: ['create'], label: [`deskhub.instance=${runtime.instance}`] },
  })) as NodeJS.ReadableStream & { destroy(): void };
  const created = new Promise<string>((resolve) => {
    let buffered = '';
    events.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const line = buffered.split('\n').find((l) => l.trim());
      if (line) resolve((JSON.parse(line) as { id: string }).id);
    });
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const cookie = await csrfSignIn(base, 'carol');
  const launched = await csrfApi<DesktopView>(base, cookie, 'POST', '/api/desktops', { type: 'desktop' });
  t.equal(launched.status, 201);
  const containerId = await created;
  child.kill('SIGKILL');
  await exited;
  events.destroy();
  t.ok(containerId, `killed deskhub when container ${containerId.slice(0, 12)} was created`);
  const left = await runtime.list();
  t.ok(left.some((s) => s.desktopId === launched.body.id), 'the crash left a container behind');

  // The second life, in this process, with its own Docker runtime on the same instance.
  const second = await startEmbedded({
    env: { ...sharedEnv, PORT: '0' },
    runtimes: [new DockerRuntime({ instance: runtime.instance, networkName: runtime.networkName })],
  });
  t.teardown(() => second.close());
  const base2 = second.proxyUrl;
  const cookie2 = await csrfSignIn(base2, 'carol');

  const current = async () => (await csrfApi<DesktopView>(base2, cookie2, 'GET', `/api/desktops/${launched.body.id}`)).body;
  // Settled: failed with its container gone, or running with exactly one. If it never settles,
  // the assertions below say in what state it stayed.
  const view = await settledAfterCrash(current, async () => (await runtime.list()).filter((s) => s.desktopId === launched.body.id).length, 60_000, 250);
  t.ok(['running', 'failed'].includes(view.state), `not stuck: ${view.state} (${view.reason ?? ''})`);
  const containers = (await runtime.list()).filter((s) => s.desktopId === launched.body.id);
  if (view.state === 'failed') {
    t.same(containers, [], 'the half-created container is removed');
    t.match(view.reason, /stopped while this desktop was being created/);
  } else {
    t.equal(containers.length, 1, 'exactly one container for the running desktop');
  }
  // Every container of this instance belongs to a desktop the database knows.
  const known = new Set(
    (await csrfApi<DesktopView[]>(base2, cookie2, 'GET', '/api/desktops')).body.map((d) => d.id),
  );
  t.same((await runtime.list()).filter((s) => !known.has(s.desktopId)), [], 'no orphan containers');

  // And the second deskhub runs new desktops normally.
  const fresh = await csrfApi<DesktopView>(base2, cookie2, 'POST', '/api/desktops', { type: 'kasm-test', name: 'again' });
  t.equal(fresh.status, 201, JSON.stringify(fresh.body));
  const state = await waitFor('the new desktop to run', async () => {
    const s = (await csrfApi<DesktopView>(base2, cookie2, 'GET', `/api/desktops/${fresh.body.id}`)).body.state;
    return s === 'running' || s === 'failed' ? s : undefined;
  }, 60_000, 250);
  t.equal(state, 'running', 'a new desktop runs after the recovery');
  const page = await fetch(`${base2}${new URL(fresh.body.url).pathname}`, { headers: { cookie: cookie2 } });
  t.equal(page.status, 200, 'and answers through the proxy');
});
