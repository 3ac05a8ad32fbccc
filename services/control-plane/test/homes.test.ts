/**
 * Homes (catalog `home`, lifecycle/homes.ts) on the process runtime, through the API: a file
 * written at start is there after stop, delete and re-create; types naming the same home share
 * it, one desktop at a time (409 naming the holder, even for two creates at once); scope desktop
 * gives each desktop name its own; another user never gets it; deleting a home is its own
 * request, refused while a desktop mounts it; the per-user quota. Docker volumes:
 * docker-homes.test.ts.
 */
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { loadCatalog } from '../src/catalog.ts';
import { signIn, startApp, tempDir, testEnv, testProcesses, waitForState, type DesktopJson, type RunningApp } from './helpers.ts';

const { dir, cleanup } = tempDir('homes');
const env = testEnv(dir, { MAX_HOMES_PER_USER: '4' });
// Each desktop appends its name to notes.txt in its HOME, then serves that folder.
const noting = (id: string, home: string) => `
  - id: ${id}
    name: ${id}
    runtime: process
    command: ["sh", "-c", "echo {port} >> \\"$HOME/notes.txt\\"; exec busybox httpd -f -p 127.0.0.1:{port} -h \\"$HOME\\""]
    port: 80
    env: { DESKHUB_TEST_RUN: "${path.basename(dir)}" }
    readiness: { path: /notes.txt, timeoutSeconds: 30 }
    home: ${home}
`;
appendFileSync(
  env.CATALOG!,
  noting('notes', '{ path: /home/kasm-user }') +
    noting('notes-too', '{ path: /home/kasm-user, name: notes }') +
    noting('scratch', '{ path: /home/kasm-user, scope: desktop }') +
    noting('other', '{ path: /home/kasm-user }') +
    noting('more', '{ path: /home/kasm-user }'),
);
let running: RunningApp = await startApp(env);
t.teardown(async () => {
  await running.close();
  for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
  cleanup();
});
let app = running.app;
let alice = await signIn(app, 'alice');
const bob = await signIn(app, 'bob');

type Desktop = DesktopJson & { homeId: string | null };
interface Volume { id: string; owner: string; name: string; scope: string; desktopName: string | null; sizeBytes: number | null; usedBy: Array<{ proxyPath: string; state: string }> }
const call = (cookie: string, method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown) => app.inject({ method, url, headers: { cookie }, ...(payload ? { payload } : {}) });
const create = async (cookie: string, type: string, name?: string) => {
  const res = await call(cookie, 'POST', '/api/desktops', { type, ...(name ? { name } : {}) });
  if (res.statusCode !== 201) return res;
  return waitForState(app, cookie, res.json<DesktopJson>().id, ['running', 'failed']) as Promise<Desktop>;
};
const created = async (cookie: string, type: string, name?: string): Promise<Desktop> => {
  const d = await create(cookie, type, name);
  if ('statusCode' in d) throw new Error(`create ${type}: ${d.statusCode} ${d.body}`);
  if (d.state !== 'running') throw new Error(`${type} ${d.state}: ${d.reason}`);
  return d;
};
const notes = (homeId: string) => readFileSync(path.join(env.DATA_DIR!, 'homes', homeId, 'notes.txt'), 'utf8').trim().split('\n');
const volumes = async (cookie: string) => (await call(cookie, 'GET', '/api/volumes')).json<Volume[]>();
const stop = async (cookie: string, id: string) => {
  await call(cookie, 'POST', `/api/desktops/${id}/stop`);
  await waitForState(app, cookie, id, ['stopped']);
};

t.test('the catalog checks home settings', async (t) => {
  const bad = path.join(dir, 'bad.yaml');
  appendFileSync(bad, `types:\n  - id: x\n    name: x\n    runtime: process\n    command: ["true"]\n    port: 80\n    home: { path: relative }\n`);
  t.throws(() => loadCatalog(bad), /entry "x", field "home.path"/);
});

t.test('a file in the home outlives stop, delete and re-create; types naming the same home share it, one at a time', async (t) => {
  const first = await created(alice, 'notes');
  t.ok(first.homeId, 'the desktop has a home');
  t.equal(notes(first.homeId!).length, 1, 'the desktop wrote into its home');

  const refused = await create(alice, 'notes-too');
  t.ok('statusCode' in refused && refused.statusCode === 409, 'a second desktop on the same home is refused');
  t.match((refused as { json(): { message: string } }).json().message, /the home "notes" is in use by the desktop at \/desktop\/alice-notes\/: stop that desktop first/);

  await stop(alice, first.id);
  const second = await created(alice, 'notes-too');
  t.equal(second.homeId, first.homeId, 'the other type naming the same home gets it');
  t.equal(notes(first.homeId!).length, 2, 'and sees the file');

  const restart = await call(alice, 'POST', `/api/desktops/${first.id}/start`);
  t.equal(restart.statusCode, 409, 'starting the first again while the second holds the home is refused');
  t.match(restart.json<{ message: string }>().message, /in use by the desktop at \/desktop\/alice-notes-too\//);
  t.equal((await call(alice, 'GET', `/api/desktops/${first.id}`)).json<Desktop>().state, 'stopped', 'and it stays stopped');

  for (const d of [first, second]) t.equal((await call(alice, 'DELETE', `/api/desktops/${d.id}`)).statusCode, 204);
  const [kept] = (await volumes(alice)).filter((v) => v.id === first.homeId);
  t.ok(kept, 'the home is kept after its desktops are deleted');
  t.same(kept!.usedBy, []);
  t.ok((kept!.sizeBytes ?? 0) > 0, `its size is known (${kept!.sizeBytes} bytes)`);
  const again = await created(alice, 'notes');
  t.equal(again.homeId, first.homeId, 'a new desktop of the type gets it back');
  t.equal(notes(first.homeId!).length, 3, 'with its files');
  await call(alice, 'DELETE', `/api/desktops/${again.id}`);
});

t.test('two creates at once on one home: exactly one gets it', async (t) => {
  const [a, b] = await Promise.all([call(alice, 'POST', '/api/desktops', { type: 'notes' }), call(alice, 'POST', '/api/desktops', { type: 'notes-too' })]);
  t.same([a.statusCode, b.statusCode].sort(), [201, 409]);
  const winner = (a.statusCode === 201 ? a : b).json<DesktopJson>();
  await waitForState(app, alice, winner.id, ['running']);
  await call(alice, 'DELETE', `/api/desktops/${winner.id}`);
});

t.test('scope desktop: each desktop name has its own home, given back to the same name', async (t) => {
  const a = await created(alice, 'scratch', 'a');
  const b = await created(alice, 'scratch', 'b');
  t.not(a.homeId, b.homeId, 'two names, two homes');
  await call(alice, 'DELETE', `/api/desktops/${a.id}`);
  const a2 = await created(alice, 'scratch', 'a');
  t.equal(a2.homeId, a.homeId, 'the name "a" gets its home back');
  const listed = (await volumes(alice)).filter((v) => v.scope === 'desktop').map((v) => v.desktopName).sort();
  t.same(listed, ['a', 'b']);
  for (const d of [a2, b]) await call(alice, 'DELETE', `/api/desktops/${d.id}`);
});

t.test("another user never gets alice's home, nor sees or deletes it", async (t) => {
  const own = await created(bob, 'notes');
  const alices = (await volumes(alice)).find((v) => v.name === 'notes' && v.scope === 'user')!;
  t.not(own.homeId, alices.id, 'bob has his own home');
  t.equal(notes(own.homeId!).length, 1, "bob's home holds only his desktop's file");
  t.notOk((await volumes(bob)).some((v) => v.id === alices.id), "alice's home is not in bob's list");
  t.equal((await call(bob, 'DELETE', `/api/volumes/${alices.id}`)).statusCode, 404, "bob cannot delete alice's home");
  await call(bob, 'DELETE', `/api/desktops/${own.id}`);
});

t.test('deleting a home: refused while a desktop mounts it, even stopped; then its files are gone', async (t) => {
  const d = await created(alice, 'other');
  await stop(alice, d.id);
  const refused = await call(alice, 'DELETE', `/api/volumes/${d.homeId}`);
  t.equal(refused.statusCode, 409);
  t.match(refused.json<{ message: string }>().message, /used by \/desktop\/alice-other\/: delete that desktop first/);
  await call(alice, 'DELETE', `/api/desktops/${d.id}`);
  t.equal((await call(alice, 'DELETE', `/api/volumes/${d.homeId}`)).statusCode, 204);
  t.notOk(existsSync(path.join(env.DATA_DIR!, 'homes', d.homeId!)), 'its folder is removed');
  t.notOk((await volumes(alice)).some((v) => v.id === d.homeId), 'and it is no longer listed');
  t.equal((await call(alice, 'DELETE', '/api/volumes/not-a-uuid')).statusCode, 404);
});

t.test('at most MAX_HOMES_PER_USER homes per user', async (t) => {
  // alice has: notes, scratch a, scratch b; one more fits, the next is refused.
  const fourth = await created(alice, 'other');
  const refused = await create(alice, 'more');
  t.ok('statusCode' in refused && refused.statusCode === 409);
  t.match((refused as { json(): { message: string } }).json().message, /at most 4 homes per user \(MAX_HOMES_PER_USER\)/);
  await call(alice, 'DELETE', `/api/desktops/${fourth.id}`);
  const admin = await signIn(app, 'root');
  const all = (await call(admin, 'GET', '/api/admin/volumes')).json<Volume[]>();
  t.ok(all.some((v) => v.owner === 'alice') && all.some((v) => v.owner === 'bob'), 'admins see everyone\'s homes');
});

t.test('after a control-plane restart, the same home comes back with its files', async (t) => {
  const home = (await volumes(alice)).find((v) => v.name === 'notes' && v.scope === 'user')!;
  const lines = notes(home.id).length;
  await running.close();
  running = await startApp(env);
  app = running.app;
  alice = await signIn(app, 'alice');
  const d = await created(alice, 'notes');
  t.equal(d.homeId, home.id, 'the same home');
  t.equal(notes(home.id).length, lines + 1, 'with every file written before the restart');
  await call(alice, 'DELETE', `/api/desktops/${d.id}`);
});

t.test("a stand-in home is offered only for a desktop whose home's node is lost, and only where allowed", async (t) => {
  const d = await created(alice, 'notes');
  t.equal(d.homeLost, null, 'a running desktop has no lost home');
  const offer = (cookie: string, payload: unknown) => call(cookie, 'POST', `/api/desktops/${d.id}/new-home`, payload);
  const waiting = await offer(alice, { confirm: true });
  t.equal(waiting.statusCode, 403, 'HOME_NODE_LOST=wait (the default): never');
  t.match(waiting.json().message, /HOME_NODE_LOST=wait/);
  // The same control plane with the operator's permission: still only for such a failure.
  await running.close();
  running = await startApp({ ...env, HOME_NODE_LOST: 'offer-new-home' });
  app = running.app;
  alice = await signIn(app, 'alice');
  t.equal((await offer(alice, {})).statusCode, 400, 'only with {"confirm": true}');
  t.equal((await offer(alice, { confirm: 'yes' })).statusCode, 400);
  const refused = await offer(alice, { confirm: true });
  t.equal(refused.statusCode, 409, 'a desktop that did not fail for its home');
  t.match(refused.json().message, /only a desktop that failed because its home's node is lost/);
  t.equal((await call(await signIn(app, 'bob'), 'POST', `/api/desktops/${d.id}/new-home`, { confirm: true })).statusCode, 404, "nor anyone else's");
  t.same((await call(alice, 'GET', '/api/admin/nodes')).statusCode, 403, 'the nodes are for admins');
  t.same((await call(await signIn(app, 'root'), 'GET', '/api/admin/nodes')).json(), [], 'the process runtime has no nodes homes live on');
  await call(alice, 'DELETE', `/api/desktops/${d.id}`);
});
