/**
 * The warm pool (policies/warm-pool.ts, the claim in lifecycle/admission.ts) on the process
 * runtime with a real route stream and replica: members start unowned and unrouted; a create
 * claims one (no runtime create or start after the claim: asserted on its events) and is routed
 * to its owner, with its own credentials and every clock starting at the claim; the pool refills;
 * a killed member is replaced; an expired one recycled; after a restart the same members are
 * found again, and a smaller size shrinks the pool. The catalog refuses types that cannot be pooled.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { eq } from 'drizzle-orm';
import { desktops } from '../src/db/schema.ts';
import { loadCatalog } from '../src/catalog.ts';
import { recycleReason, WarmPool } from '../src/policies/warm-pool.ts';
import { processRecords, signIn, startApp, tempDir, testEnv, testProcesses, waitFor, waitForState, type DesktopJson, type RunningApp } from './helpers.ts';

const { dir, cleanup } = tempDir('warm-pool');
const env = testEnv(dir, { POOL_INTERVAL_MS: '200' });
const www = path.join(dir, 'www');
const pooledType = (size: number) => `
  - id: pooled
    name: Pooled web desktop
    runtime: process
    command: ["busybox", "httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "${www}"]
    port: 80
    credentials: { kind: basic, username: webuser, passwordEnv: WEB_PASSWORD }
    env: { DESKHUB_TEST_RUN: "${path.basename(dir)}" }
    readiness: { path: /, timeoutSeconds: 30 }
    maxLifetime: 1h
    pool: { size: ${size}, expireAfter: 1h }
`;
const baseCatalog = readFileSync(env.CATALOG!, 'utf8');
writeFileSync(env.CATALOG!, baseCatalog + pooledType(2));

let running: RunningApp = await startApp(env);
t.teardown(async () => {
  await running.close();
  for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
  cleanup();
});
const app = () => running.app;
type View = DesktopJson & { pool: boolean; clocks: { deadlines: Array<{ clock: string; at: string }> } };
const members = async () => {
  const root = await signIn(app(), 'root');
  return (await app().inject({ url: '/api/admin/desktops', headers: { cookie: root } })).json<View[]>().filter((d) => d.pool);
};
const readyMembers = (n: number, what = `${n} ready pool members`) =>
  waitFor(what, async () => {
    const list = await members();
    return list.length === n && list.every((m) => m.state === 'running') ? list : undefined;
  }, 60_000, 200);

t.test('the catalog refuses what cannot be pooled, and says why', async (t) => {
  const file = path.join(dir, 'bad.yaml');
  const entry = (extra: string) => `types:\n  - id: x\n    name: x\n    runtime: process\n    command: ["true"]\n    port: 80\n${extra}`;
  writeFileSync(file, entry('    pool: { size: 1 }\n    home: { path: /home/kasm-user }\n'));
  t.throws(() => loadCatalog(file), /entry "x", field "pool": a type with a home cannot be pooled/);
  writeFileSync(file, entry('    pool: { size: 1 }\n    env: { NAME: "{path}" }\n'));
  t.throws(() => loadCatalog(file), /field "pool": a type whose env.NAME names \{prefix\} or \{path\} cannot be pooled/);
  writeFileSync(file, entry('    pool: { size: 1, expireAfter: soon }\n'));
  t.throws(() => loadCatalog(file), /field "pool.expireAfter"/);
});

t.test('recycle decisions', async (t) => {
  const type = loadCatalog(env.CATALOG!).get('pooled')!;
  const now = Date.now();
  const member = { id: 'm', type: 'pooled', state: 'running' as const, readyAt: new Date(now - 1000), createdAt: new Date(now - 2000), poolSettings: type.settingsHash };
  t.equal(recycleReason(member, type, now), null, 'a fresh member stays');
  t.match(recycleReason({ ...member, poolSettings: 'old' }, type, now), /settings changed/);
  t.match(recycleReason({ ...member, readyAt: new Date(now - 3_700_000) }, type, now), /unclaimed for 1 hour/);
  t.match(recycleReason({ ...member, state: 'failed' }, type, now), /failed/);
  t.match(recycleReason(member, undefined, now), /no longer pooled/);
});

t.test('members: started unowned, never routed; a create claims one at once; the pool refills', async (t) => {
  const ready = await readyMembers(2);
  for (const m of ready) {
    t.equal(m.owner, '', 'no owner');
    t.notOk(running.replica.table.get(m.proxyPath), 'no route: unreachable through the proxy');
    t.same(m.clocks.deadlines, [], 'outside every clock');
  }
  const alice = await signIn(app(), 'alice');
  const before = Date.now();
  const res = await app().inject({ method: 'POST', url: '/api/desktops', headers: { cookie: alice }, payload: { type: 'pooled' } });
  t.equal(res.statusCode, 201, res.body);
  const claimed = res.json<View>();
  t.ok(ready.some((m) => m.id === claimed.id), 'the desktop is one of the ready members');
  t.equal(claimed.proxyPath, 'alice-pooled');
  t.notOk(claimed.pool);
  const up = await waitForState(app(), alice, claimed.id, ['running', 'failed']);
  t.equal(up.state, 'running', up.reason ?? '');
  const events = (await app().inject({ url: `/api/desktops/${claimed.id}/events`, headers: { cookie: alice } })).json<Array<{ kind: string; message: string }>>();
  const claimAt = events.findIndex((e) => /^Claimed a ready Pooled web desktop from the warm pool/.test(e.message));
  t.equal(claimAt, 0, "the events start with the claim: nothing of the pool's history leaks to the owner");
  t.same(events.slice(claimAt + 1).filter((e) => ['create', 'start', 'probe'].includes(e.kind)).map((e) => e.kind), [], 'nothing was created, started or probed after the claim');
  const route = running.replica.table.get('alice-pooled');
  t.equal(route?.desktopId, claimed.id, 'routed to its owner');
  const lifetime = (await app().inject({ url: `/api/desktops/${claimed.id}`, headers: { cookie: alice } })).json<View>().clocks.deadlines.find((d) => d.clock === 'lifetime')!;
  t.ok(Date.parse(lifetime.at) - 3_600_000 >= before - 50, 'its lifetime starts at the claim, not when the member started');

  const next = await readyMembers(2, 'the pool to refill to 2');
  t.notOk(next.some((m) => m.id === claimed.id), 'a claimed member never goes back to the pool');
  const bob = await signIn(app(), 'bob');
  const second = (await app().inject({ method: 'POST', url: '/api/desktops', headers: { cookie: bob }, payload: { type: 'pooled' } })).json<View>();
  await waitForState(app(), bob, second.id, ['running']);
  t.not(running.replica.table.get(second.proxyPath)?.authorization, route?.authorization, 'each member has its own credentials');
});

t.test('a killed member is replaced; an expired one recycled', async (t) => {
  const [victim] = await readyMembers(2);
  const record = processRecords(env.DATA_DIR!).find((r) => r.desktopId === victim!.id)!;
  process.kill(record.pid!, 'SIGKILL');
  await waitFor('the killed member to be replaced', async () => {
    const list = await members();
    return !list.some((m) => m.id === victim!.id) && list.length === 2 && list.every((m) => m.state === 'running') ? true : undefined;
  }, 60_000, 200);
  t.pass('replaced');

  const [old] = await members();
  await app().db.update(desktops).set({ readyAt: new Date(Date.now() - 3_700_000) }).where(eq(desktops.id, old!.id));
  const pass = await new WarmPool({ db: app().db, lifecycle: app().desktops, catalog: app().catalog }, { name: 'test-pool', intervalMs: 60_000, logger: app().logger }).runOnce();
  t.ok(pass?.recycled.includes(old!.id) || !(await members()).some((m) => m.id === old!.id), 'a member unclaimed past expireAfter is recycled');
  await readyMembers(2, 'the pool to refill after the recycle');
});

t.test('a member claimed after the policy looked is not recycled: it is somebody\'s desktop now', async (t) => {
  const [member] = await readyMembers(2);
  const carol = await signIn(app(), 'carol');
  const res = await app().inject({ method: 'POST', url: '/api/desktops', headers: { cookie: carol }, payload: { type: 'pooled' } });
  const claimed = res.json<View>();
  t.equal(res.statusCode, 201);
  t.ok(member, 'a member was ready');
  // As if the policy had decided to recycle it before the claim committed.
  t.equal(await app().desktops.recyclePoolMember(claimed.id, 'expired (stale decision)'), false, 'the recycle sees the claim and does nothing');
  t.equal((await waitForState(app(), carol, claimed.id, ['running'])).state, 'running', "carol's desktop is untouched");
  await app().inject({ method: 'DELETE', url: `/api/desktops/${claimed.id}`, headers: { cookie: carol } });
});

t.test('after a restart the same members are found again; a smaller size shrinks the pool', async (t) => {
  const ids = (await readyMembers(2)).map((m) => m.id).sort();
  await running.close();
  running = await startApp(env);
  await new Promise((r) => setTimeout(r, 1000));
  t.same((await readyMembers(2)).map((m) => m.id).sort(), ids, 'the same two members, not started anew');
  await running.close();
  writeFileSync(env.CATALOG!, baseCatalog + pooledType(1));
  running = await startApp(env);
  const left = await readyMembers(1, 'the pool to shrink to 1');
  t.ok(ids.includes(left[0]!.id), 'one of the earlier members stays');
});
