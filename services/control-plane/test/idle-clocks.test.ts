/**
 * The idle clocks (lifecycle/clocks.ts, policies/idle-clocks.ts) against the real lifecycle, real
 * desktop processes and a real route stream with a replica: what the catalog and the environment
 * say, the deadlines derived from stored times, and each action through a pass of the policy —
 * warnings recorded once, an idle disconnect that every replica holds (and a keep-alive that
 * lifts it), a stop or delete when nobody is connected, the lifetime, an admin's exemption, and a
 * restart between warning and deadline. Elapsed time is simulated by moving stored times back;
 * the real-browser run through the proxy is in docker-e2e.test.ts.
 */
import { appendFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { eq } from 'drizzle-orm';
import { desktops } from '../src/db/schema.ts';
import { loadCatalog, withKasmIdleSetting, withKasmReconnect } from '../src/catalog.ts';
import { clockDefaults, loadControlPlaneConfig } from '../src/config.ts';
import { deadlines, due, NO_CLOCKS, warnings, type ClockTimes } from '../src/lifecycle/clocks.ts';
import { describeDuration, parseDuration } from '../src/durations.ts';
import { IdleClocks } from '../src/policies/idle-clocks.ts';
import { signIn, startApp, tempDir, testEnv, testProcesses, waitFor, waitForState, type DesktopJson, type RunningApp } from './helpers.ts';

const MIN = 60_000;

t.test('durations: the grammar, its errors, and how they are said back', async (t) => {
  t.equal(parseDuration('90s'), 90_000);
  t.equal(parseDuration('30m'), 30 * MIN);
  t.equal(parseDuration('1h30m'), 90 * MIN);
  t.equal(parseDuration('1.5h'), 90 * MIN);
  t.equal(parseDuration('2d'), 2 * 24 * 60 * MIN);
  for (const bad of ['', '30', 'm', '5 minutes', '-5m', '0s', '1h 30m', '30min']) t.throws(() => parseDuration(bad, 'IDLE_WARN'), /IDLE_WARN/, bad);
  t.equal(describeDuration(30 * MIN), '30 minutes');
  t.equal(describeDuration(90 * MIN), '1 hour 30 minutes');
  t.equal(describeDuration(2_000), '2 seconds');
  t.equal(describeDuration(MIN), '1 minute');
});

const catalogWith = (dir: string, fields: string, credentials = 'none'): string => {
  const file = path.join(dir, `catalog-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(
    file,
    `types:
  - id: t
    name: T
    runtime: process
    command: ["true"]
    port: 80
    credentials: { kind: ${credentials} }
${fields
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => `    ${l}`)
  .join('\n')}
`,
  );
  return file;
};

t.test('catalog and environment: per-type clocks, defaults, off, and errors naming the field', async (t) => {
  const { dir, cleanup } = tempDir('clock-catalog');
  t.teardown(cleanup);
  const load = (fields: string, env: Record<string, string> = {}, credentials = 'none') => {
    const config = loadControlPlaneConfig({ ...testEnv(dir), ...env });
    return loadCatalog(catalogWith(dir, fields, credentials), { clocks: clockDefaults(config) }).get('t')!;
  };
  t.same(load('').clocks, NO_CLOCKS, 'no settings anywhere: no clocks');
  const own = load('idle: { disconnectAfter: 30m, warn: 5m }\nexpire: { after: 2h, warn: 10m, action: delete }\nmaxLifetime: { after: 12h, warnBefore: 15m }').clocks;
  t.same(own, {
    idle: { disconnectAfterMs: 30 * MIN, warnMs: 5 * MIN, counts: 'traffic' },
    expire: { afterMs: 120 * MIN, warnMs: 10 * MIN, action: 'delete' },
    lifetime: { maxMs: 720 * MIN, warnMs: 15 * MIN },
  });
  const env = { IDLE_DISCONNECT_AFTER: '20m', IDLE_WARN: '2m', EXPIRE_AFTER: '1h', MAX_LIFETIME: '8h' };
  t.same(load('', env).clocks, {
    idle: { disconnectAfterMs: 20 * MIN, warnMs: 2 * MIN, counts: 'traffic' },
    expire: { afterMs: 60 * MIN, warnMs: 10 * MIN, action: 'stop' },
    lifetime: { maxMs: 480 * MIN, warnMs: 15 * MIN },
  }, 'the environment gives every type its defaults');
  t.same(load('idle: false\nexpire: false\nmaxLifetime: false', env).clocks, NO_CLOCKS, 'false turns each off for one type');
  t.same(load('maxLifetime: 4h', env).clocks.lifetime, { maxMs: 240 * MIN, warnMs: 15 * MIN }, 'maxLifetime as a plain duration');

  t.throws(() => load('idle: { disconnectAfter: 30 minutes }'), /entry "t", field "idle/, 'a bad duration names the field');
  t.throws(() => load('idle: { disconnectAfter: 4m }'), /field "idle.warn": the warning \(5 minutes\) must be shorter than idle.disconnectAfter \(4 minutes\)/);
  t.throws(() => load('expire: { after: 2h, action: archive }'), /field "expire/);
  t.throws(() => load('idle: { after: 2h }'), /field "idle/, 'an unknown field');
  t.throws(() => loadControlPlaneConfig({ ...testEnv(dir), IDLE_DISCONNECT_AFTER: 'soon' }), /IDLE_DISCONNECT_AFTER/);
  t.throws(() => loadControlPlaneConfig({ ...testEnv(dir), EXPIRE_ACTION: 'archive' }), /EXPIRE_ACTION/);

  // Kasm's client must never disconnect by its own idle timer first.
  t.match(load('', {}, 'kasm').entryQuery, /(^|&)idle_disconnect=10080(&|$)/, 'a Kasm type gets a week');
  t.match(load('idle: { disconnectAfter: 10d }', {}, 'kasm').entryQuery, /(^|&)idle_disconnect=14460(&|$)/, 'or an hour past a longer idle clock');
  t.notMatch(load('').entryQuery, /idle_disconnect/, 'other types are left alone');
  t.equal(withKasmIdleSetting('path=x&idle_disconnect=5', NO_CLOCKS), 'path=x&idle_disconnect=5', 'a catalog that sets it wins');

  // Kasm's client reconnects by itself after a proxy replica's restart (a 1001 close).
  t.match(load('', {}, 'kasm').entryQuery, /(^|&)reconnect=true$/, 'a Kasm type gets reconnect=true');
  t.notMatch(load('').entryQuery, /reconnect/, 'other types are left alone');
  t.equal(withKasmReconnect('path=x&reconnect=false'), 'path=x&reconnect=false', "a catalog's own reconnect= wins");
  t.equal(withKasmReconnect(''), 'reconnect=true');
  t.equal(withKasmReconnect('path=x&noreconnect=1'), 'path=x&noreconnect=1&reconnect=true', 'only the key reconnect counts');
});

t.test('deadlines from stored times', async (t) => {
  const now = Date.parse('2026-12-06T12:00:00Z');
  const ago = (ms: number) => new Date(now - ms);
  const settings = { idle: { disconnectAfterMs: 30 * MIN, warnMs: 5 * MIN, counts: 'input' as const }, expire: { afterMs: 120 * MIN, warnMs: 10 * MIN, action: 'stop' as const }, lifetime: { maxMs: 720 * MIN, warnMs: 15 * MIN } };
  const base: ClockTimes = { runningSince: ago(60 * MIN), lastActivityAt: null, lastConnectedAt: null, connectedSince: null, keptAliveAt: null, disconnectedAt: null, clocksExempt: false };
  const window = 30_000;
  const of = (times: Partial<ClockTimes>) => deadlines({ ...base, ...times }, settings, now, window);
  const clock = (list: ReturnType<typeof of>, name: string) => list.find((d) => d.clock === name);

  t.notOk(clock(of({}), 'idle'), 'nobody connected: nothing to disconnect, no idle deadline');
  t.equal(clock(of({}), 'expire')!.at, now + 60 * MIN, 'expire counts from running when nobody ever connected');
  t.equal(clock(of({}), 'lifetime')!.at, now + 660 * MIN);

  const connected = { lastConnectedAt: ago(5_000), connectedSince: ago(10 * MIN) };
  t.equal(clock(of(connected), 'idle')!.at, now + 20 * MIN, 'idle counts from the start of this connection, not an old input');
  t.equal(clock(of({ ...connected, lastActivityAt: ago(MIN) }), 'idle')!.at, now + 29 * MIN, 'input moves it');
  t.equal(clock(of({ ...connected, keptAliveAt: ago(0) }), 'idle')!.at, now + 30 * MIN, 'a keep-alive moves it');
  t.equal(clock(of({ ...connected, keptAliveAt: ago(0) }), 'expire')!.at, now + 120 * MIN, 'and the expiry');
  t.equal(clock(of({ ...connected, keptAliveAt: ago(0) }), 'lifetime')!.at, now + 660 * MIN, 'but never the lifetime');
  t.notOk(clock(of({ ...connected, disconnectedAt: ago(MIN) }), 'idle'), 'held disconnected: the idle clock has done its work');
  t.notOk(clock(of({ lastConnectedAt: ago(window + 1), connectedSince: ago(10 * MIN) }), 'idle'), 'presence older than the window is not connected now');
  t.same(of({ clocksExempt: true }), [], 'exempt: no deadlines');
  t.same(of({ runningSince: null }), [], 'not running yet: none');

  const overdue = of({ lastConnectedAt: ago(5_000), connectedSince: ago(40 * MIN), runningSince: ago(721 * MIN) });
  t.equal(due(overdue, now)!.clock, 'lifetime', 'the most final passed deadline wins (stop over disconnect)');
  const warned = of({ lastConnectedAt: ago(5_000), connectedSince: ago(27 * MIN) });
  t.same(Object.keys(warnings(warned, now)), ['idle'], 'inside the idle warning window only');
  t.equal(due(warned, now), null);
  t.equal(clock(of({ ...connected }), 'idle')!.why, 'Disconnected after 30 minutes without input');
  t.ok(Buffer.byteLength(clock(of({ ...connected }), 'idle')!.why) <= 123, 'fits a close frame');
});

t.test('the policy acts through the lifecycle: warn, disconnect, keep alive, expire, lifetime, exempt, restart', async (t) => {
  const { dir, cleanup } = tempDir('idle-clocks');
  // The app's own policy waits an hour between passes: the test runs passes itself, except after the restart.
  const env = testEnv(dir, { CLOCKS_INTERVAL_MS: '3600000' });
  const www = path.join(dir, 'www');
  const webType = (id: string, clocks: string) => `
  - id: ${id}
    name: ${id}
    runtime: process
    command: ["busybox", "httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "${www}"]
    port: 80
    env: { DESKHUB_TEST_RUN: "${path.basename(dir)}" }
    readiness: { path: /, timeoutSeconds: 30 }
${clocks}
`;
  appendFileSync(
    env.CATALOG!,
    webType('clocked', '    idle: { disconnectAfter: 30m, warn: 5m }\n    expire: { after: 2h, warn: 10m }\n    maxLifetime: { after: 12h, warnBefore: 15m }') +
      webType('deleting', '    expire: { after: 1h, warn: 10m, action: delete }'),
  );
  let running: RunningApp = await startApp(env);
  t.teardown(async () => {
    await running.close();
    for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
    cleanup();
  });
  const app = () => running.app;
  const cookie = await signIn(app(), 'alice');
  const bob = await signIn(app(), 'bob');
  const root = await signIn(app(), 'root');
  const policy = () => new IdleClocks({ db: app().db, lifecycle: app().desktops, catalog: app().catalog }, { name: 'test-clocks', intervalMs: 60_000, logger: app().logger });
  const create = async (type: string) => {
    const res = await app().inject({ method: 'POST', url: '/api/desktops', headers: { cookie }, payload: { type } });
    if (res.statusCode !== 201) throw new Error(res.body);
    return waitForState(app(), cookie, res.json<DesktopJson>().id, ['running']);
  };
  const setTimes = (id: string, times: Partial<typeof desktops.$inferInsert>) => app().db.update(desktops).set(times).where(eq(desktops.id, id));
  const ago = (ms: number) => new Date(Date.now() - ms);
  type View = DesktopJson & { lastConnectedAt: string | null; clocks: { exempt: boolean; disconnected: { reason: string } | null; deadlines: Array<{ clock: string; at: string; warnAt: string; action: string }> } };
  const view = async (id: string, as = cookie) => (await app().inject({ url: `/api/desktops/${id}`, headers: { cookie: as } })).json<View>();
  const events = async (id: string) => (await app().inject({ url: `/api/desktops/${id}/events`, headers: { cookie } })).json<Array<{ kind: string; message: string }>>().filter((e) => e.kind === 'clock').map((e) => e.message);

  const d = await create('clocked');
  t.same((await view(d.id)).clocks.deadlines.map((x) => x.clock), ['expire', 'lifetime'], 'nobody connected yet: expire and lifetime only');

  await t.test('presence from a replica reaches the row, and starts a connection', async (t) => {
    running.replica.recordPresence(d.proxyPath);
    await running.replica.flushActivity();
    await app().reconciler.copyActivity();
    const v = await view(d.id);
    t.ok(v.lastConnectedAt, 'lastConnectedAt shown');
    t.same(v.clocks.deadlines.map((x) => x.clock), ['idle', 'expire', 'lifetime'], 'connected: the idle clock runs');
  });

  await t.test('a warning is recorded once, and is over when input comes', async (t) => {
    await setTimes(d.id, { runningSince: ago(60 * MIN), connectedSince: ago(26 * MIN), lastConnectedAt: new Date() });
    t.same((await policy().runOnce())!.warned, [d.id]);
    t.same((await policy().runOnce())!.warned, [], 'the same deadline is not warned twice');
    t.match((await events(d.id)).at(-1), /^Disconnects in 4 minutes( \d+ seconds)? unless someone types or moves the mouse$/);
    running.replica.recordActivity(d.proxyPath);
    await running.replica.flushActivity();
    await app().reconciler.copyActivity();
    t.same((await policy().runOnce())!.warned, [d.id]);
    t.equal((await events(d.id)).at(-1), 'the idle warning is over');
  });

  await t.test('no input for the idle period: streams disconnected at every replica, the desktop keeps running', async (t) => {
    await setTimes(d.id, { connectedSince: ago(31 * MIN), lastActivityAt: ago(31 * MIN), lastConnectedAt: new Date() });
    t.same((await policy().runOnce())!.disconnected, [d.id]);
    const v = await view(d.id);
    t.equal(v.state, 'running');
    t.equal(v.clocks.disconnected?.reason, 'Disconnected after 30 minutes without use', 'a web app (activity: traffic) is disconnected without use');
    t.equal(running.replica.table.get(d.proxyPath)?.disconnected, 'Disconnected after 30 minutes without use', 'the replica holds the reason');
    t.notOk(v.clocks.deadlines.some((x) => x.clock === 'idle'), 'no idle deadline while held');
    t.match((await events(d.id)).at(-1), /^Disconnected after 30 minutes without use; the desktop keeps running/);
    t.same((await policy().runOnce())!.disconnected, [], 'once');
  });

  await t.test('keepalive: owner only, reconnects the streams and moves both deadlines', async (t) => {
    const before = await view(d.id);
    t.equal((await app().inject({ method: 'POST', url: `/api/desktops/${d.id}/keepalive`, headers: { cookie: bob } })).statusCode, 404, "someone else's desktop is not there");
    const res = await app().inject({ method: 'POST', url: `/api/desktops/${d.id}/keepalive`, headers: { cookie } });
    t.equal(res.statusCode, 200, res.body);
    const after = res.json<View>();
    t.equal(after.clocks.disconnected, null);
    t.notOk(running.replica.table.get(d.proxyPath)?.disconnected, 'the replica allows streams again');
    const at = (v: View, clock: string) => Date.parse(v.clocks.deadlines.find((x) => x.clock === clock)?.at ?? '0');
    t.ok(at(after, 'expire') > at(before, 'expire'), 'expiry moved');
    t.ok(Math.abs(at(after, 'idle') - (Date.now() + 30 * MIN)) < 10_000, 'idle deadline one period from now');
    t.equal(at(after, 'lifetime'), at(before, 'lifetime'), 'lifetime unchanged');
    t.match((await events(d.id)).at(-1), /^reconnected by alice/);
  });

  await t.test('an admin exempts it: no deadlines, the policy leaves it alone', async (t) => {
    t.equal((await app().inject({ method: 'PUT', url: `/api/admin/desktops/${d.id}/clocks`, headers: { cookie }, payload: { exempt: true } })).statusCode, 403, 'admins only');
    const res = await app().inject({ method: 'PUT', url: `/api/admin/desktops/${d.id}/clocks`, headers: { cookie: root }, payload: { exempt: true } });
    t.equal(res.statusCode, 200, res.body);
    t.same(res.json<View>().clocks, { exempt: true, disconnected: null, deadlines: [] });
    await setTimes(d.id, { runningSince: ago(13 * 60 * MIN) });
    const pass = (await policy().runOnce())!;
    t.same([pass.stopped, pass.disconnected], [[], []]);
    await app().inject({ method: 'PUT', url: `/api/admin/desktops/${d.id}/clocks`, headers: { cookie: root }, payload: { exempt: false } });
  });

  await t.test('the lifetime ends: stopped, with the reason kept', async (t) => {
    t.same((await policy().runOnce())!.stopped, [d.id]);
    const stopped = await waitForState(app(), cookie, d.id, ['stopped']);
    t.equal(stopped.reason, 'Stopped: its lifetime of 12 hours was reached');
    t.same((await view(d.id)).clocks.deadlines, [], 'a stopped desktop has no deadlines');
    const conflict = await app().inject({ method: 'POST', url: `/api/desktops/${d.id}/keepalive`, headers: { cookie } });
    t.equal(conflict.statusCode, 409);
    t.match(conflict.json<{ message: string }>().message, /only a running desktop/);
  });

  await t.test('started again: the clocks begin afresh', async (t) => {
    await app().inject({ method: 'POST', url: `/api/desktops/${d.id}/start`, headers: { cookie } });
    const v = await waitForState(app(), cookie, d.id, ['running']);
    const lifetime = (v as View).clocks.deadlines.find((x) => x.clock === 'lifetime')!;
    t.ok(Math.abs(Date.parse(lifetime.at) - (Date.now() + 12 * 60 * MIN)) < 10_000);
  });

  await t.test('nobody connected for expire.after: stopped; with action delete: deleted', async (t) => {
    await setTimes(d.id, { lastConnectedAt: ago(121 * MIN), runningSince: ago(122 * MIN), keptAliveAt: null });
    t.same((await policy().runOnce())!.stopped, [d.id]);
    t.equal((await waitForState(app(), cookie, d.id, ['stopped'])).reason, 'Stopped: nobody was connected for 2 hours');
    const doomed = await create('deleting');
    await setTimes(doomed.id, { runningSince: ago(61 * MIN) });
    t.same((await policy().runOnce())!.deleted, [doomed.id]);
    t.equal((await app().inject({ url: `/api/desktops/${doomed.id}`, headers: { cookie } })).statusCode, 404, 'gone');
  });

  await t.test('a restart between warning and deadline still acts on time, from stored times', async (t) => {
    const e = await create('clocked');
    const deadline = Date.now() + 8_000;
    await setTimes(e.id, { runningSince: new Date(deadline - 120 * MIN), lastConnectedAt: null });
    t.same((await policy().runOnce())!.warned, [e.id], 'warned before the restart');
    await running.close();
    running = await startApp({ ...env, CLOCKS_INTERVAL_MS: '200' });
    if (Date.now() < deadline - 1000) t.equal((await view(e.id)).state, 'running', 'still running before its deadline');
    const stopped = await waitForState(running.app, cookie, e.id, ['stopped', 'stopping'], 30_000);
    t.ok(Date.now() >= deadline, 'not stopped before its deadline');
    t.ok(Date.now() < deadline + 5_000, 'and soon after it');
    t.equal(stopped.reason, 'Stopped: nobody was connected for 2 hours', 'the restarted control plane stopped it on its own timer');
  });
});
