/**
 * The control plane's HTTP API, written once and run against embedded PGlite and a real
 * Postgres: sessions, catalog, the desktop lifecycle with real processes (busybox httpd), bad
 * input, path collisions, quotas (also under concurrency), secrets at rest, and a restart on
 * the same database. Routes are checked in a real subscriber's table (a proxy replica's view).
 */
import t from 'tap';
import { eq } from 'drizzle-orm';
import { buildApp } from '../src/app.ts';
import { loadControlPlaneConfig } from '../src/config.ts';
import { desktops, routeChanges } from '../src/db/schema.ts';
import type { DesktopCredentials } from '../src/db/schema.ts';
import { databases, processRecords, signIn, startApp, tempDir, testEnv, testProcesses, waitFor, waitForState, type DesktopJson } from './helpers.ts';

for (const choice of databases) {
  t.test(`API on ${choice.name}`, async (t) => {
    const { dir, cleanup } = tempDir(`api-${choice.name}`);
    const db = await choice.setup();
    const env = testEnv(dir, db.env);
    let running = await startApp(env);
    t.teardown(async () => {
      await running.close();
      await db.cleanup();
      const left = testProcesses(dir);
      for (const pid of left) process.kill(pid, 'SIGKILL');
      cleanup();
    });
    const app = () => running.app;
    const create = (cookie: string, body: unknown) =>
      app().inject({ method: 'POST', url: '/api/desktops', headers: { cookie, 'content-type': 'application/json' }, payload: JSON.stringify(body) });

    t.test('health, readiness and the OpenAPI document need no session', async (t) => {
      t.equal((await app().inject('/healthz')).statusCode, 200);
      const ready = await app().inject('/readyz');
      t.equal(ready.statusCode, 200);
      t.equal(ready.json().status, 'ready');
      const doc = await app().inject('/api/openapi.json');
      t.equal(doc.statusCode, 200);
      const paths = Object.keys(doc.json().paths);
      for (const p of ['/api/desktops', '/api/desktops/{id}', '/api/desktops/{id}/stop', '/api/catalog', '/api/me', '/auth/dev-login']) t.ok(paths.includes(p), `documents ${p}`);
      t.ok(doc.json().components.schemas.Desktop, 'the Desktop schema is in the document');
      const ui = await app().inject('/');
      t.equal(ui.statusCode, 200, 'the web UI is served at /');
      t.match(ui.headers['content-type'], /html/);
      const docs = await app().inject('/api/docs/');
      t.equal(docs.statusCode, 200);
      t.match(docs.headers['content-type'], /html/);
    });

    t.test('the API answers 401 JSON without a valid session', async (t) => {
      for (const cookie of [undefined, 'deskhub_session=forged', 'deskhub_session=abc.def']) {
        const res = await app().inject({ url: '/api/me', headers: cookie ? { cookie } : {} });
        t.equal(res.statusCode, 401, `cookie ${cookie}`);
        t.same(Object.keys(res.json()).sort(), ['error', 'message', 'statusCode']);
      }
      t.equal((await app().inject({ url: '/api/desktops' })).statusCode, 401);
      t.equal((await app().inject({ method: 'POST', url: '/api/desktops', payload: { type: 'web' } })).statusCode, 401);
    });

    t.test('dev sign-in: cookie, same user for the same name, unusable names refused', async (t) => {
      const res = await app().inject({ method: 'POST', url: '/auth/dev-login', payload: { username: 'Alice' } });
      t.equal(res.statusCode, 200);
      t.equal(res.json().username, 'alice');
      t.same(res.json().roles, []);
      const setCookie = String(res.headers['set-cookie']);
      t.match(setCookie, /deskhub_session=/);
      t.match(setCookie, /HttpOnly/);
      t.match(setCookie, /SameSite=Lax/);
      t.match(setCookie, /Path=\//);
      t.notMatch(setCookie, /Secure/, 'not Secure on an http PUBLIC_URL');
      const cookie = await signIn(app(), 'alice');
      const me = await app().inject({ url: '/api/me', headers: { cookie } });
      t.equal(me.statusCode, 200);
      t.same(me.json(), res.json(), '"Alice" and "alice" are one user');
      for (const username of ['../..', '---', '日本']) {
        const bad = await app().inject({ method: 'POST', url: '/auth/dev-login', payload: { username } });
        t.equal(bad.statusCode, 400, `username ${username}`);
        t.match(bad.json().message, /cannot be made into a path/);
      }
      t.equal((await app().inject({ method: 'POST', url: '/auth/dev-login', payload: {} })).statusCode, 400);
      t.equal((await app().inject({ method: 'POST', url: '/auth/dev-login', payload: { username: '' } })).statusCode, 400);
    });

    t.test('logout revokes the session', async (t) => {
      const cookie = await signIn(app(), 'leaving');
      t.equal((await app().inject({ url: '/api/me', headers: { cookie } })).statusCode, 200);
      const out = await app().inject({ method: 'POST', url: '/auth/logout', headers: { cookie } });
      t.equal(out.statusCode, 204);
      t.match(String(out.headers['set-cookie']), /deskhub_session=;/);
      t.equal((await app().inject({ url: '/api/me', headers: { cookie } })).statusCode, 401, 'the old cookie no longer works');
    });

    t.test('catalog says what can run here and why not', async (t) => {
      const cookie = await signIn(app(), 'alice');
      const res = await app().inject({ url: '/api/catalog', headers: { cookie } });
      t.equal(res.statusCode, 200);
      const items = res.json<{ id: string; available: boolean; reason?: string; runtime: string }[]>();
      const web = items.find((i) => i.id === 'web');
      t.equal(web?.available, true);
      t.equal(web?.reason, undefined);
      const docker = items.find((i) => i.id === 'kasm-test');
      t.equal(docker?.available, false);
      t.match(docker?.reason, /docker/);
      const refused = await create(cookie, { type: 'kasm-test' });
      t.equal(refused.statusCode, 409);
      t.match(refused.json().message, /cannot run here/);
    });

    let aliceWeb: DesktopJson;
    t.test('create answers at once, then the desktop runs and its route reaches the replica', async (t) => {
      const cookie = await signIn(app(), 'alice');
      const res = await create(cookie, { type: 'web' });
      t.equal(res.statusCode, 201);
      const created = res.json<DesktopJson>();
      t.equal(created.state, 'creating');
      t.equal(created.proxyPath, 'alice-web');
      t.equal(created.owner, 'alice');
      t.equal(created.url, 'http://127.0.0.1:8080/desktop/alice-web/');
      t.equal(created.activity, 'traffic', 'a web app counts traffic as activity');
      aliceWeb = await waitForState(app(), cookie, created.id, ['running', 'failed']);
      t.equal(aliceWeb.state, 'running', aliceWeb.reason ?? '');
      const route = running.replica.table.get('alice-web');
      t.ok(route, 'the replica holds the route once the desktop is running');
      t.equal(route?.desktopId, created.id);
      t.equal(route?.state, 'running');
      t.match(route?.authorization, /^Basic /, 'the credentials recipe gave the route an Authorization header');
      t.same(route?.activity, { on: 'traffic' }, 'the route says what its activity is');
      const page = await fetch(`http://${route!.upstream.host}:${route!.upstream.port}/`);
      t.match(await page.text(), /web desktop/, 'the upstream really serves');

      const second = (await create(cookie, { type: 'web' })).json<DesktopJson>();
      t.equal(second.proxyPath, 'alice-web-2', 'a second desktop of a type gets a distinct path');
      const named = await create(cookie, { type: 'web', name: '  My Work  ' });
      t.equal(named.statusCode, 201);
      t.equal(named.json().proxyPath, 'alice-my-work');
      t.equal(named.json().name, 'My Work');
      const list = await app().inject({ url: '/api/desktops', headers: { cookie } });
      t.same(
        list.json<DesktopJson[]>().map((d) => d.proxyPath),
        ['alice-web', 'alice-web-2', 'alice-my-work'],
      );
      await waitForState(app(), cookie, second.id, ['running']);
      await waitForState(app(), cookie, named.json().id, ['running']);
    });

    t.test('credentials are sealed at rest and never leave through the API', async (t) => {
      const cookie = await signIn(app(), 'alice');
      const [row] = await app().db.select().from(desktops).where(eq(desktops.id, aliceWeb.id));
      const credentials = app().secrets.open<DesktopCredentials>(row!.credentials!);
      const password = credentials.env.WEB_PASSWORD!;
      t.ok(password && password.length >= 24, 'a generated password');
      t.notOk(row!.credentials!.includes(password), 'the column holds no plaintext');
      const outbox = await app().db.select().from(routeChanges);
      t.notOk(JSON.stringify(outbox).includes(Buffer.from(`webuser:${password}`).toString('base64')), 'the outbox holds no plaintext header');
      for (const url of ['/api/desktops', `/api/desktops/${aliceWeb.id}`, `/api/desktops/${aliceWeb.id}/events`]) {
        const body = (await app().inject({ url, headers: { cookie } })).body;
        t.notOk(body.includes(password), `${url} does not reveal the password`);
        t.notOk(/credentials|authorization/i.test(body), `${url} has no credentials field`);
      }
    });

    t.test('bad input gets a 4xx JSON message, never a stack', async (t) => {
      const cookie = await signIn(app(), 'alice');
      const malformed = await app().inject({ method: 'POST', url: '/api/desktops', headers: { cookie, 'content-type': 'application/json' }, payload: '{"type": "web",' });
      t.equal(malformed.statusCode, 400);
      t.same(Object.keys(malformed.json()).sort(), ['error', 'message', 'statusCode']);
      t.match(malformed.json().message, /JSON/);
      const text = await app().inject({ method: 'POST', url: '/api/desktops', headers: { cookie, 'content-type': 'text/plain' }, payload: 'type=web' });
      t.equal(text.statusCode, 400, 'a text body is not the JSON object the route needs');
      t.match(text.json().message, /body must be object/);
      const unknown = await create(cookie, { type: 'nonesuch' });
      t.equal(unknown.statusCode, 400);
      t.match(unknown.json().message, /unknown desktop type "nonesuch" \(known: web, /);
      t.equal((await create(cookie, {})).statusCode, 400, 'type missing');
      t.equal((await create(cookie, { type: 42 })).statusCode, 400, 'type not a string');
      for (const name of ['../..', '///', '日本語', 'tab\there', 'x'.repeat(65)]) {
        const res = await create(cookie, { type: 'web', name });
        t.equal(res.statusCode, 400, `name ${JSON.stringify(name)}`);
        t.notMatch(res.body, /at .*\.ts:\d+/, 'no stack trace');
      }
      const bob = await signIn(app(), 'bob');
      for (const [method, url] of [
        ['GET', `/api/desktops/${aliceWeb.id}`],
        ['DELETE', `/api/desktops/${aliceWeb.id}`],
        ['POST', `/api/desktops/${aliceWeb.id}/stop`],
        ['POST', `/api/desktops/${aliceWeb.id}/start`],
        ['GET', `/api/desktops/${aliceWeb.id}/events`],
        ['GET', '/api/desktops/not-a-uuid'],
        ['GET', '/api/desktops/00000000-0000-4000-8000-000000000000'],
      ] as const) {
        const res = await app().inject({ method, url, headers: { cookie: bob } });
        t.equal(res.statusCode, 404, `${method} ${url} as bob`);
        t.equal(res.json().error, 'Not Found');
      }
      t.equal((await app().inject({ url: `/api/desktops/${aliceWeb.id}`, headers: { cookie } })).statusCode, 200, 'alice still has it');
      t.equal((await app().inject({ url: '/api/nothing-here', headers: { cookie } })).statusCode, 404);
    });

    t.test('paths that collide never share a path or surface a database error', async (t) => {
      const [aliceUbuntu, alice] = await Promise.all([signIn(app(), 'alice-ubuntu'), signIn(app(), 'alice')]);
      const [a, b] = await Promise.all([create(aliceUbuntu, { type: 'desktop' }), create(alice, { type: 'ubuntu-desktop' })]);
      t.equal(a.statusCode, 201, a.body);
      t.equal(b.statusCode, 201, b.body);
      t.same([a.json().proxyPath, b.json().proxyPath].sort(), ['alice-ubuntu-desktop', 'alice-ubuntu-desktop-2']);
      // the other way round: the name "ubuntu-desktop" for alice when alice-ubuntu's path exists
      const c = await create(alice, { type: 'web', name: 'ubuntu-desktop' });
      t.equal(c.statusCode, 201);
      t.equal(c.json().proxyPath, 'alice-ubuntu-desktop-3');
      for (const d of [a, b, c]) {
        const owner = d === a ? aliceUbuntu : alice;
        t.equal((await waitForState(app(), owner, d.json().id, ['running', 'failed'])).state, 'running');
      }
      t.equal(running.replica.table.get('alice-ubuntu-desktop')?.desktopId, a.json().proxyPath === 'alice-ubuntu-desktop' ? a.json().id : b.json().id);
    });

    t.test('admins (ADMIN_USERS) see and act on everyone\'s desktops; others get 403', async (t) => {
      const bob = await signIn(app(), 'bob');
      t.equal((await app().inject({ url: '/api/admin/desktops', headers: { cookie: bob } })).statusCode, 403);
      const rootLogin = await app().inject({ method: 'POST', url: '/auth/dev-login', payload: { username: 'root' } });
      t.same(rootLogin.json().roles, ['admin']);
      const root = await signIn(app(), 'root');
      const bobs = (await create(bob, { type: 'web' })).json<DesktopJson>();
      const all = (await app().inject({ url: '/api/admin/desktops', headers: { cookie: root } })).json<DesktopJson[]>();
      t.ok(all.some((d) => d.id === aliceWeb.id && d.owner === 'alice'), 'alice\'s desktop, with its owner');
      t.ok(all.some((d) => d.id === bobs.id && d.owner === 'bob'), 'bob\'s desktop');
      await waitForState(app(), bob, bobs.id, ['running']);
      const stopped = await app().inject({ method: 'POST', url: `/api/admin/desktops/${bobs.id}/stop`, headers: { cookie: root } });
      t.equal(stopped.statusCode, 200);
      t.equal(stopped.json().owner, 'bob');
      t.notOk(running.replica.table.get(bobs.proxyPath), 'route withdrawn by the admin stop');
      t.equal((await app().inject({ method: 'DELETE', url: `/api/admin/desktops/${bobs.id}`, headers: { cookie: root } })).statusCode, 204);
      t.equal((await app().inject({ url: `/api/desktops/${bobs.id}`, headers: { cookie: bob } })).statusCode, 404, 'gone for bob too');
      t.equal((await app().inject({ method: 'DELETE', url: `/api/admin/desktops/${bobs.id}`, headers: { cookie: bob } })).statusCode, 403);
    });

    t.test('quotas per type and per user (catalog) hold under concurrent creates, with a message naming the limit', async (t) => {
      const carol = await signIn(app(), 'carol');
      const results = await Promise.all(Array.from({ length: 5 }, () => create(carol, { type: 'limited' })));
      const codes = results.map((r) => r.statusCode).sort();
      t.same(codes, [201, 409, 409, 409, 409], 'exactly one of five concurrent creates fits the per-user quota of 1');
      const refused = results.find((r) => r.statusCode === 409)!;
      t.match(refused.json().message, /at most 1 "limited" desktops per user/);
      const dave = await signIn(app(), 'dave');
      t.equal((await create(dave, { type: 'limited' })).statusCode, 201);
      const erin = await signIn(app(), 'erin');
      const total = await create(erin, { type: 'limited' });
      t.equal(total.statusCode, 409);
      t.match(total.json().message, /at most 2 "limited" desktops in total/);
    });

    t.test('a desktop slow to answer is waited for without asking the runtime between probes', async (t) => {
      // The late type sleeps 4 s before it listens: about seven failed probes. The bring-up
      // hears of an exit from the runtime's events, so it has no reason to inspect meanwhile.
      const runtime = app().runtimes.get('process')!;
      const inspect = runtime.inspect.bind(runtime);
      let inspected = 0;
      runtime.inspect = (runtimeId: string) => {
        inspected++;
        return inspect(runtimeId);
      };
      t.teardown(() => {
        runtime.inspect = inspect;
      });
      const cookie = await signIn(app(), 'ingrid');
      const res = await create(cookie, { type: 'late' });
      t.equal(res.statusCode, 201);
      const ready = await waitForState(app(), cookie, res.json().id, ['failed', 'running']);
      t.equal(ready.state, 'running');
      t.equal(inspected, 0, 'no inspect during the bring-up');
      await app().inject({ method: 'DELETE', url: `/api/desktops/${ready.id}`, headers: { cookie, 'x-deskhub-csrf': '1' } });
    });

    t.test('a desktop that crashes at start fails with its last output as the reason', async (t) => {
      const cookie = await signIn(app(), 'alice');
      const res = await create(cookie, { type: 'crash' });
      t.equal(res.statusCode, 201);
      const failed = await waitForState(app(), cookie, res.json().id, ['failed', 'running']);
      t.equal(failed.state, 'failed');
      t.match(failed.reason, /exited with code 3/);
      t.match(failed.reason, /cannot open display: no such thing/, 'its output, the terminal escapes taken out');
      t.notMatch(failed.reason, /[\u0000\u001b]/, 'no NUL (Postgres would refuse the whole update) and no escape left');
      t.notOk(running.replica.table.get(failed.proxyPath), 'no route for a failed desktop');
      t.notOk(processRecords(env.DATA_DIR!).some((r) => r.desktopId === failed.id), 'its runtime leftovers are removed');
      const events = (await app().inject({ url: `/api/desktops/${failed.id}/events`, headers: { cookie } })).json<{ kind: string; state: string | null }[]>();
      t.same(events.at(-1)?.state, 'failed', 'the last event carries the final state');
    });

    t.test('stop withdraws the route before answering; start brings it back; delete removes everything', async (t) => {
      const cookie = await signIn(app(), 'alice');
      const stopped = await app().inject({ method: 'POST', url: `/api/desktops/${aliceWeb.id}/stop`, headers: { cookie } });
      t.equal(stopped.statusCode, 200);
      t.equal(stopped.json().state, 'stopping');
      t.notOk(running.replica.table.get('alice-web'), 'the replica dropped the route by the time stop answered');
      const done = await waitForState(app(), cookie, aliceWeb.id, ['stopped', 'failed']);
      t.equal(done.state, 'stopped');
      const record = processRecords(env.DATA_DIR!).find((r) => r.desktopId === aliceWeb.id);
      t.equal(record?.running, false, 'the process is stopped, its record kept for start');

      const again = await app().inject({ method: 'POST', url: `/api/desktops/${aliceWeb.id}/stop`, headers: { cookie } });
      t.equal(again.json().state, 'stopped', 'stopping a stopped desktop changes nothing');

      const started = await app().inject({ method: 'POST', url: `/api/desktops/${aliceWeb.id}/start`, headers: { cookie } });
      t.equal(started.statusCode, 200);
      t.equal(started.json().state, 'starting');
      t.equal((await waitForState(app(), cookie, aliceWeb.id, ['running', 'failed'])).state, 'running');
      t.ok(running.replica.table.get('alice-web'), 'route back');

      const events = (await app().inject({ url: `/api/desktops/${aliceWeb.id}/events`, headers: { cookie } })).json<{ id: number; kind: string; state: string | null }[]>();
      t.same(
        events.filter((e) => e.kind === 'state').map((e) => e.state),
        ['creating', 'starting', 'running', 'stopping', 'stopped', 'starting', 'running'],
        'every state change is recorded',
      );
      const later = (await app().inject({ url: `/api/desktops/${aliceWeb.id}/events?after=${events.at(-2)!.id}`, headers: { cookie } })).json<unknown[]>();
      t.equal(later.length, 1, 'after= returns only newer events');

      const second = (await app().inject({ url: '/api/desktops', headers: { cookie } })).json<DesktopJson[]>().find((d) => d.proxyPath === 'alice-web-2')!;
      const pid = processRecords(env.DATA_DIR!).find((r) => r.desktopId === second.id)?.pid;
      t.ok(pid, 'the second desktop has a process');
      const del = await app().inject({ method: 'DELETE', url: `/api/desktops/${second.id}`, headers: { cookie } });
      t.equal(del.statusCode, 204);
      t.notOk(running.replica.table.get('alice-web-2'), 'route gone');
      t.equal((await app().inject({ url: `/api/desktops/${second.id}`, headers: { cookie } })).statusCode, 404);
      t.notOk(processRecords(env.DATA_DIR!).some((r) => r.desktopId === second.id), 'runtime record removed');
      await waitFor('the process to end', () => (testProcesses(dir).includes(pid!) ? undefined : true), 10_000);
    });

    t.test('everything survives a restart on the same database', async (t) => {
      const cookie = await signIn(app(), 'alice');
      const before = (await app().inject({ url: '/api/desktops', headers: { cookie } })).json<DesktopJson[]>();
      const pids = processRecords(env.DATA_DIR!).filter((r) => r.running).map((r) => r.pid);
      await running.close();
      running = await startApp({ ...env, MAX_DESKTOPS_PER_USER: '6', MAX_DESKTOPS_TOTAL: String(before.length + 4) });
      t.equal((await app().inject({ url: '/api/me', headers: { cookie } })).statusCode, 200, 'the session survived');
      const after = (await app().inject({ url: '/api/desktops', headers: { cookie } })).json<DesktopJson[]>();
      t.same(
        after.map((d) => [d.id, d.proxyPath, d.state]),
        before.map((d) => [d.id, d.proxyPath, d.state]),
        'same desktops, same paths, same states',
      );
      const web = after.find((d) => d.proxyPath === 'alice-web')!;
      t.equal(web.state, 'running', 'a running process desktop is found again, not restarted');
      t.same(processRecords(env.DATA_DIR!).filter((r) => r.running).map((r) => r.pid), pids, 'the same processes');
      t.equal(running.replica.table.get('alice-web')?.desktopId, web.id, 'the new route stream got the routes from the database');

      // The per-user limit from configuration, with a message naming it.
      const made: string[] = [];
      let res = await create(cookie, { type: 'web' });
      for (let i = 0; i < 10 && res.statusCode === 201; i++) {
        made.push(res.json().id);
        res = await create(cookie, { type: 'web' });
      }
      t.equal(res.statusCode, 409);
      t.match(res.json().message, /at most 6 desktops per user \(MAX_DESKTOPS_PER_USER\)/);
      const frank = await signIn(app(), 'frank');
      let total = await create(frank, { type: 'web' });
      for (let i = 0; i < 10 && total.statusCode === 201; i++) total = await create(frank, { type: 'web' });
      t.equal(total.statusCode, 409);
      t.match(total.json().message, /MAX_DESKTOPS_TOTAL/);
    });

    if (choice.name === 'postgres') {
      t.test('a different SECRET_KEY is refused at start, naming the variable', async (t) => {
        await t.rejects(buildApp({ config: loadControlPlaneConfig({ ...env, SECRET_KEY: Buffer.alloc(32, 7).toString('base64') }), env }), { name: 'ConfigError', message: /^SECRET_KEY: is not the key/ });
      });
    }

    t.test('deleting every desktop leaves no process behind', async (t) => {
      const users = ['alice', 'alice-ubuntu', 'carol', 'dave', 'frank'];
      for (const username of users) {
        const cookie = await signIn(app(), username);
        const list = (await app().inject({ url: '/api/desktops', headers: { cookie } })).json<DesktopJson[]>();
        const codes = await Promise.all(list.map(async (d) => (await app().inject({ method: 'DELETE', url: `/api/desktops/${d.id}`, headers: { cookie } })).statusCode));
        t.ok(codes.every((c) => c === 204), `${username}: all deleted`);
      }
      t.equal(running.replica.table.size, 0, 'no route left');
      t.same(processRecords(env.DATA_DIR!), [], 'no runtime record left');
      await waitFor('every desktop process to end', () => (testProcesses(dir).length === 0 ? true : undefined), 15_000);
      t.pass('no desktop process left');
    });
  });
}
