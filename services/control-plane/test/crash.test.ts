/**
 * The control plane killed (SIGKILL) in the middle of creates: it runs as a child process
 * (`src/main.ts`, as `pnpm start:control-plane` does), desktops that take a few seconds to answer
 * are being created, and it dies. The next start must leave nothing half done: no desktop stuck
 * in creating/starting, every desktop process belonging to a row, every running row reachable.
 * Run on Postgres and on PGlite.
 */
import t from 'tap';
import { startService } from '@deskhub/testkit/service';
import { databases, processRecords, signIn, startApp, tempDir, testEnv, testProcesses, waitFor, writeTestCatalog, type DesktopJson } from './helpers.ts';

for (const choice of databases) {
  t.test(`control plane killed mid-create (${choice.name}): the next start repairs everything`, async (t) => {
    const { dir, cleanup } = tempDir(`crash-${choice.name}`);
    const db = await choice.setup();
    const env = testEnv(dir, db.env);
    env.CATALOG = writeTestCatalog(dir, { lateSeconds: 5 });
    const controlPlane = await startService({ entry: 'services/control-plane/src/main.ts', readyMessage: 'control plane listening', env, timeoutMs: 120_000 });
    const url = String(controlPlane.ready.url);
    t.teardown(async () => {
      await controlPlane.kill();
      await db.cleanup();
      for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
      cleanup();
    });

    const login = await fetch(`${url}/auth/dev-login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice' }) });
    // Every cookie sign-in sets (the session, and the desktop access cookie where there is one).
    const cookie = login.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
    const create = async (type: string) => {
      const res = await fetch(`${url}/api/desktops`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: JSON.stringify({ type }) });
      if (res.status !== 201) throw new Error(`create ${type}: ${res.status} ${await res.text()}`);
      return (await res.json()) as DesktopJson;
    };
    const ready = await create('web');
    const late = await Promise.all([create('late'), create('late'), create('late')]);
    await waitFor(
      'the late desktops to be started but not yet answering',
      async () => {
        const list = (await (await fetch(`${url}/api/desktops`, { headers: { cookie } })).json()) as DesktopJson[];
        const byId = new Map(list.map((d) => [d.id, d.state]));
        return byId.get(ready.id) === 'running' && late.every((d) => byId.get(d.id) === 'starting') ? true : undefined;
      },
      60_000,
      50,
    );
    // One more create in flight at the moment of the kill.
    const inFlight = fetch(`${url}/api/desktops`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'late' }) }).catch(() => null);
    await new Promise((resolve) => setTimeout(resolve, 30));
    await controlPlane.kill();
    await inFlight;
    const orphansAtKill = testProcesses(dir);
    t.ok(orphansAtKill.length >= 4, `desktop processes outlive the killed control plane (${orphansAtKill.length})`);

    const running = await startApp(env);
    t.teardown(() => running.close());
    const app = running.app;
    const again = await signIn(app, 'alice');
    const rows = await waitFor(
      'no desktop left in creating or starting',
      async () => {
        const list = (await app.inject({ url: '/api/desktops', headers: { cookie: again } })).json<DesktopJson[]>();
        return list.every((d) => d.state !== 'creating' && d.state !== 'starting') ? list : undefined;
      },
      60_000,
      250,
    );
    t.ok(rows.length >= 4, `${rows.length} desktops`);
    for (const d of rows) {
      t.ok(['running', 'failed'].includes(d.state), `${d.proxyPath} is ${d.state}${d.reason ? ` (${d.reason})` : ''}`);
      if (d.state === 'running') t.ok(running.replica.table.get(d.proxyPath), `${d.proxyPath} is routed`);
      else t.notOk(running.replica.table.get(d.proxyPath), `${d.proxyPath} is not routed`);
    }
    for (const d of late) t.equal(rows.find((r) => r.id === d.id)?.state, 'running', `${d.proxyPath}: its create was resumed and finished`);
    t.equal(rows.find((r) => r.id === ready.id)?.state, 'running', 'the desktop that was already running still is');

    // No orphan: every live desktop process is the recorded, running instance of a running desktop.
    await app.reconciler.pass();
    const records = processRecords(env.DATA_DIR!);
    const runningRows = new Set(rows.filter((d) => d.state === 'running').map((d) => d.id));
    const livePids = new Set(testProcesses(dir));
    for (const record of records) {
      t.ok(runningRows.has(record.desktopId) || !record.running, `record ${record.runtimeId} belongs to a running desktop or is stopped`);
    }
    const expectedPids = records.filter((r) => r.running).map((r) => r.pid);
    for (const pid of livePids) {
      // `late` runs `sh -c "sleep; exec busybox"`: after exec the recorded pid is busybox itself.
      t.ok(expectedPids.includes(pid), `process ${pid} is a recorded desktop`);
    }
    t.equal(livePids.size, runningRows.size, 'one process per running desktop, nothing else');
  });
}
