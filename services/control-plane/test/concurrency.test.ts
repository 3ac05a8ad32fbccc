/**
 * 100 desktops created at the same moment by 20 users, some of whose paths collide
 * (`alice-ubuntu` + `desktop` against `alice` + `ubuntu-desktop`): 100 distinct paths, no
 * database error, every one running with its route at the replica; then 100 concurrent deletes
 * leave no route, no record and no process. Real processes (busybox httpd), on Postgres and PGlite.
 */
import t from 'tap';
import { databases, processRecords, signIn, startApp, tempDir, testEnv, testProcesses, waitFor, type DesktopJson } from './helpers.ts';

for (const choice of databases) {
  t.test(`100 concurrent creates across users (${choice.name})`, async (t) => {
    const { dir, cleanup } = tempDir(`concurrency-${choice.name}`);
    const db = await choice.setup();
    const env = testEnv(dir, { ...db.env, MAX_DESKTOPS_PER_USER: '10', MAX_DESKTOPS_TOTAL: '100' });
    const running = await startApp(env);
    t.teardown(async () => {
      await running.close();
      await db.cleanup();
      for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
      cleanup();
    });
    const app = running.app;

    // 18 users with 5 `web` each, plus the colliding pair with 5 each: 100 creates.
    const plan: { username: string; type: string }[] = [];
    for (let u = 1; u <= 18; u++) for (let i = 0; i < 5; i++) plan.push({ username: `user${u}`, type: 'web' });
    for (let i = 0; i < 5; i++) plan.push({ username: 'alice-ubuntu', type: 'desktop' }, { username: 'alice', type: 'ubuntu-desktop' });
    const cookies = new Map<string, string>();
    for (const username of new Set(plan.map((p) => p.username))) cookies.set(username, await signIn(app, username));

    const started = Date.now();
    const responses = await Promise.all(
      plan.map((p) => app.inject({ method: 'POST', url: '/api/desktops', headers: { cookie: cookies.get(p.username)! }, payload: { type: p.type } })),
    );
    t.same([...new Set(responses.map((r) => r.statusCode))], [201], 'every create answered 201');
    const created = responses.map((r) => r.json<DesktopJson>());
    const paths = new Set(created.map((d) => d.proxyPath));
    t.equal(paths.size, 100, '100 distinct paths');
    const colliding = created.filter((d) => d.proxyPath.startsWith('alice-ubuntu-desktop')).map((d) => d.proxyPath).sort();
    t.same(colliding, ['alice-ubuntu-desktop', ...Array.from({ length: 9 }, (_, i) => `alice-ubuntu-desktop-${i + 2}`)].sort(), 'the colliding pair shares the numbered paths');
    t.ok([...paths].every((p) => /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/.test(p)), 'every path is lowercase [a-z0-9-]');

    await waitFor(
      'all 100 desktops running',
      async () => {
        let n = 0;
        for (const [username, cookie] of cookies) {
          const list = (await app.inject({ url: '/api/desktops', headers: { cookie } })).json<DesktopJson[]>();
          const failed = list.find((d) => d.state === 'failed');
          if (failed) throw new Error(`${username}'s ${failed.proxyPath} failed: ${failed.reason}`);
          n += list.filter((d) => d.state === 'running').length;
        }
        return n === 100 ? true : undefined;
      },
      240_000,
      500,
    );
    t.comment(`100 desktops running ${((Date.now() - started) / 1000).toFixed(1)} s after the creates`);
    t.equal(running.replica.table.size, 100, 'the replica holds 100 routes');
    t.equal(processRecords(env.DATA_DIR!).filter((r) => r.running).length, 100, '100 processes recorded');
    t.equal(testProcesses(dir).length, 100, '100 processes alive');

    const deletes = await Promise.all(created.map((d) => app.inject({ method: 'DELETE', url: `/api/desktops/${d.id}`, headers: { cookie: cookies.get(d.owner)! } })));
    t.same([...new Set(deletes.map((r) => r.statusCode))], [204], 'every delete answered 204');
    t.equal(running.replica.table.size, 0, 'no route left');
    t.same(processRecords(env.DATA_DIR!), [], 'no runtime record left');
    await waitFor('every process to end', () => (testProcesses(dir).length === 0 ? true : undefined), 30_000);
    t.pass('no orphan process');
  });
}
