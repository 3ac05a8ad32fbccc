/**
 * Reconciliation against real processes and a real Redis: a desktop killed behind deskhub's
 * back (while watched, and after a restart), an instance nobody knows, one that vanished, rows
 * left mid-create or mid-stop by a dead control plane, a Redis that lost its data, and proxy
 * activity copied into last_activity_at.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { eq } from 'drizzle-orm';
import { startRedis } from '@deskhub/testkit/redis';
import { desktops, users } from '../src/db/schema.ts';
import { processRecords, signIn, startApp, tempDir, testEnv, testProcesses, waitFor, waitForState, type DesktopJson, type RunningApp } from './helpers.ts';

t.test('reconciliation repairs what happened behind deskhub\'s back', async (t) => {
  const { dir, cleanup } = tempDir('reconcile');
  const env = testEnv(dir);
  let running: RunningApp = await startApp(env);
  t.teardown(async () => {
    await running.close();
    for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
    cleanup();
  });
  const app = () => running.app;
  const cookie = await signIn(app(), 'alice');
  const create = async (type: string) => {
    const res = await app().inject({ method: 'POST', url: '/api/desktops', headers: { cookie }, payload: { type } });
    if (res.statusCode !== 201) throw new Error(res.body);
    return waitForState(app(), cookie, res.json<DesktopJson>().id, ['running']);
  };
  const pidOf = (id: string) => processRecords(env.DATA_DIR!).find((r) => r.desktopId === id)?.pid ?? null;

  t.test('a desktop process killed behind deskhub\'s back: route withdrawn, state failed with the reason', async (t) => {
    const desktop = await create('web');
    t.ok(running.replica.table.get(desktop.proxyPath));
    process.kill(pidOf(desktop.id)!, 'SIGKILL');
    const failed = await waitForState(app(), cookie, desktop.id, ['failed', 'stopped'], 15_000);
    t.equal(failed.state, 'failed');
    t.match(failed.reason, /killed by SIGKILL/);
    t.notOk(running.replica.table.get(desktop.proxyPath), 'route withdrawn from the replica');
    // and it can be started again
    await app().inject({ method: 'POST', url: `/api/desktops/${desktop.id}/start`, headers: { cookie } });
    t.equal((await waitForState(app(), cookie, desktop.id, ['running', 'failed'])).state, 'running');
  });

  t.test('after a restart: processes are found again, and one killed later is noticed', async (t) => {
    const desktop = await create('web');
    const pid = pidOf(desktop.id)!;
    await running.close();
    running = await startApp(env);
    const again = await waitForState(app(), cookie, desktop.id, ['running', 'failed', 'stopped']);
    t.equal(again.state, 'running', 'still running after the restart');
    t.equal(pidOf(desktop.id), pid, 'the same process');
    t.ok(running.replica.table.get(desktop.proxyPath), 'its route is in the new snapshot');
    process.kill(pid, 'SIGKILL');
    const failed = await waitForState(app(), cookie, desktop.id, ['failed', 'stopped'], 15_000);
    t.equal(failed.state, 'failed');
    t.match(failed.reason, /ended/);
    t.notOk(running.replica.table.get(desktop.proxyPath), 'route withdrawn');
  });

  t.test('an instance nobody knows is removed', async (t) => {
    const runtime = app().runtimes.get('process')!;
    const type = app().catalog.get('web')!;
    const stray = await runtime.create({ desktopId: randomUUID(), ownerId: randomUUID(), ownerName: 'nobody', proxyPath: 'nobody-web', type, env: { WEB_PASSWORD: 'x'.repeat(24) } });
    const pid = processRecords(env.DATA_DIR!).find((r) => r.runtimeId === stray.runtimeId)!.pid!;
    const result = await app().reconciler.pass();
    t.ok(result.repairs.some((r) => r.kind === 'remove-orphan'), 'reported as an orphan removal');
    t.equal(await runtime.inspect(stray.runtimeId), null, 'gone from the runtime');
    await waitFor('the stray process to end', () => (testProcesses(dir).includes(pid) ? undefined : true), 10_000);
  });

  t.test('a desktop whose instance vanished while deskhub was down fails, route withdrawn', async (t) => {
    const desktop = await create('web');
    const record = processRecords(env.DATA_DIR!).find((r) => r.desktopId === desktop.id)!;
    await running.close();
    process.kill(record.pid!, 'SIGKILL');
    rmSync(path.join(env.DATA_DIR!, 'processes', record.runtimeId), { recursive: true, force: true });
    running = await startApp(env);
    const failed = await waitForState(app(), cookie, desktop.id, ['failed', 'stopped', 'running'], 15_000);
    t.equal(failed.state, 'failed');
    t.match(failed.reason, /no longer exists/);
    await waitFor('the route to leave the replica', () => (running.replica.table.get(desktop.proxyPath) ? undefined : true), 10_000);
    t.pass('route withdrawn');
  });

  t.test('rows left mid-create and mid-stop by a dead control plane are finished', async (t) => {
    const [alice] = await app().db.select().from(users).where(eq(users.username, 'alice'));
    const type = app().catalog.get('web')!;
    const runtime = app().runtimes.get('process')!;
    // As if the control plane died right after runtime.create, before saving the runtime id.
    const creatingId = randomUUID();
    await app().db.insert(desktops).values({ id: creatingId, ownerId: alice!.id, type: 'web', proxyPath: 'alice-interrupted', state: 'creating', runtime: 'process', credentials: app().secrets.seal({ env: {}, authorization: null }) });
    const leftover = await runtime.create({ desktopId: creatingId, ownerId: alice!.id, ownerName: 'alice', proxyPath: 'alice-interrupted', type, env: {} });
    // As if it died between withdrawing the route and stopping the process.
    const stopping = await create('web');
    await app().db.update(desktops).set({ state: 'stopping' }).where(eq(desktops.id, stopping.id));

    await app().reconciler.pass();
    const interrupted = await waitForState(app(), cookie, creatingId, ['failed', 'running', 'stopped'], 10_000);
    t.equal(interrupted.state, 'failed');
    t.match(interrupted.reason, /deskhub stopped while this desktop was being created/);
    t.equal(await runtime.inspect(leftover.runtimeId), null, 'the leftover process is removed');
    const stopped = await waitForState(app(), cookie, stopping.id, ['stopped', 'failed'], 15_000);
    t.equal(stopped.state, 'stopped');
    t.notOk(running.replica.table.get(stopping.proxyPath), 'no route for the stopped one');
    t.equal((await runtime.inspect(processRecords(env.DATA_DIR!).find((r) => r.desktopId === stopping.id)!.runtimeId))?.running, false, 'its process is stopped');
  });
});

t.test('with Redis: a store that lost its data gets the snapshot again; activity reaches the database', async (t) => {
  const redis = await startRedis();
  const { dir, cleanup } = tempDir('reconcile-redis');
  const env = testEnv(dir, { REDIS_URL: redis.url, ROUTE_STREAM_PREFIX: 'cp-test:' });
  const running = await startApp(env, { redisUrl: redis.url, activityFlushMs: 200 });
  t.teardown(async () => {
    await running.close();
    await redis.close();
    for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
    cleanup();
  });
  const app = running.app;
  const cookie = await signIn(app, 'alice');
  const res = await app.inject({ method: 'POST', url: '/api/desktops', headers: { cookie }, payload: { type: 'web' } });
  const desktop = await waitForState(app, cookie, res.json<DesktopJson>().id, ['running']);
  t.ok(running.replica.table.get(desktop.proxyPath), 'the replica holds the route over Redis');
  const versionBefore = running.replica.version;

  await redis.restart({ loseData: true });
  await waitFor('the control plane to republish after Redis lost its data', async () => ((await app.routePublisher.storedVersion()) !== null ? true : undefined), 20_000);
  await waitFor('the replica to hold the route again', () => (running.replica.table.get(desktop.proxyPath) && running.replica.version >= versionBefore ? true : undefined), 20_000);
  t.pass('route back in the store and at the replica');

  const at = Date.now();
  running.replica.recordActivity(desktop.proxyPath, at);
  await waitFor(
    'last activity in the database',
    async () => {
      await app.reconciler.copyActivity();
      const [row] = await app.db.select({ last: desktops.lastActivityAt }).from(desktops).where(eq(desktops.id, desktop.id));
      return row?.last && row.last.getTime() >= at - 1000 ? row.last : undefined;
    },
    15_000,
    300,
  );
  const view = (await app.inject({ url: `/api/desktops/${desktop.id}`, headers: { cookie } })).json<{ lastActivityAt: string | null }>();
  t.ok(view.lastActivityAt, 'the API shows the last activity');
});
