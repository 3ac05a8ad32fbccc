/**
 * Sharing end to end in the embedded start (control plane, proxy, process runtime, dev sign-in)
 * with desktops on origins of their own (DESKTOP_ORIGIN=http://*.localhost:<port>), on PGlite and
 * on Postgres: the hand-off that gives a desktop's origin its cookie (once per code), named
 * shares and links with their limits, who is connected, revocation closing a viewer's WebSocket
 * by the time the API answers, expiry, and what is refused without DESKTOP_ORIGIN.
 *
 * Requests carry the Host a browser would send (`<path>.localhost:<port>`) to 127.0.0.1.
 */
import t from 'tap';
import WebSocket from 'ws';
import { freePort } from '@deskhub/testkit/net';
import { startEmbedded } from '../src/embedded-start.ts';
import { cookieOf, databases, hostRequest as request, signIn as injectSignIn, startApp, tempDir, testEnv, waitFor, type DesktopJson, type HostAnswer as Answer } from './helpers.ts';

for (const choice of databases) {
  t.test(`sharing on ${choice.name}`, async (t) => {
    const { dir, cleanup } = tempDir(`sharing-${choice.name}`);
    t.teardown(cleanup);
    const database = await choice.setup();
    t.teardown(database.cleanup);
    const port = await freePort();
    const ui = `localhost:${port}`;
    const uiOrigin = `http://${ui}`;
    const deskhub = await startEmbedded({
      env: testEnv(dir, {
        ...database.env,
        PORT: String(port),
        PUBLIC_URL: uiOrigin,
        DESKTOP_ORIGIN: `http://*.localhost:${port}`,
        SHARE_LINK_MAX_TTL: '2h',
        SHARES_INTERVAL_MS: '300',
      }),
    });
    t.teardown(() => deskhub.close());
    const api = (path: string, options: { cookie?: string; method?: string; json?: unknown } = {}) => request(port, ui, path, { ...options, origin: uiOrigin });
    const signIn = async (username: string) => {
      const res = await api('/auth/dev-login', { method: 'POST', json: { username } });
      t.equal(res.status, 200, `${username} signs in`);
      return cookieOf(res, 'deskhub_session')!;
    };
    const alice = await signIn('alice');
    const bob = await signIn('bob');
    const carol = await signIn('carol');

    const launch = async (type: string) => {
      const created = JSON.parse((await api('/api/desktops', { method: 'POST', cookie: alice, json: { type } })).text) as DesktopJson;
      return waitFor(`${type} to run`, async () => {
        const d = JSON.parse((await api(`/api/desktops/${created.id}`, { cookie: alice })).text) as DesktopJson & { openUrl: string };
        if (d.state === 'failed') throw new Error(`failed: ${d.reason}`);
        return d.state === 'running' ? d : undefined;
      }, 60_000, 200);
    };
    const demo = await launch('demo');
    const web = await launch('web');
    const demoHost = `alice-demo.localhost:${port}`;
    /** Its page with the entry query (without it the proxy redirects there first). */
    const demoPage = new URL(demo.url).pathname + new URL(demo.url).search;

    /** Follows the hand-off as a browser would; returns the desktop origin's cookie (or the answer that stopped it). */
    const handoff = async (session: string, proxyPath: string, next = `/desktop/${proxyPath}/`): Promise<{ cookie?: string; stopped?: Answer; exchange?: string }> => {
      const first = await api(`/auth/desktop-handoff?desktop=${proxyPath}&next=${encodeURIComponent(next)}`, { cookie: session });
      if (first.status !== 302) return { stopped: first };
      const to = new URL(first.location!);
      const second = await request(port, to.host, to.pathname + to.search);
      if (second.status !== 302) return { stopped: second, exchange: to.pathname + to.search };
      return { cookie: cookieOf(second, '__Host-deskhub_access'), exchange: to.pathname + to.search };
    };

    await t.test('the hand-off gives a desktop origin its own cookie, once per code', async (t) => {
      t.equal(demo.url, `http://alice-demo.localhost:${port}/desktop/alice-demo/?path=desktop/alice-demo/websockify&idle_disconnect=10080&reconnect=true`, "the desktop's URL is on its own origin");
      t.equal(demo.openUrl, `${uiOrigin}/auth/desktop-handoff?desktop=alice-demo&next=${encodeURIComponent('/desktop/alice-demo/?path=desktop/alice-demo/websockify&idle_disconnect=10080&reconnect=true')}`);
      const first = await api(`/auth/desktop-handoff?desktop=alice-demo&next=${encodeURIComponent('/desktop/alice-demo/')}`, { cookie: alice });
      t.equal(first.status, 302);
      const to = new URL(first.location!);
      t.equal(to.host, demoHost, "to the desktop's origin");
      t.equal(to.pathname, '/.deskhub/handoff');
      const exchanged = await request(port, to.host, to.pathname + to.search);
      t.equal(exchanged.status, 302, exchanged.text);
      t.equal(exchanged.location, '/desktop/alice-demo/');
      t.match(exchanged.setCookie.join('\n'), /^__Host-deskhub_access=dh1\.[^;]+; Path=\/; Max-Age=\d+; HttpOnly; Secure; SameSite=None; Partitioned$/m);
      const access = cookieOf(exchanged, '__Host-deskhub_access')!;
      const page = await request(port, demoHost, demoPage, { cookie: access });
      t.equal(page.status, 200, 'the desktop answers on its origin with that cookie');
      t.match(page.text, /Demo desktop/);
      t.equal((await request(port, to.host, to.pathname + to.search)).status, 403, 'a code works once');
      const elsewhere = await api(`/auth/desktop-handoff?desktop=alice-web&next=${encodeURIComponent('/desktop/alice-web/')}`, { cookie: alice });
      const code = new URL(elsewhere.location!).search;
      t.equal((await request(port, demoHost, `/.deskhub/handoff${code}`)).status, 403, "a code for one desktop is refused on another's origin");
      t.equal((await api(`/.deskhub/handoff${code}`)).status, 404, "the exchange does not exist on the UI's origin");
      t.equal((await api(`/auth/desktop-handoff?desktop=alice-demo&next=${encodeURIComponent('/desktop/alice-web/')}`, { cookie: alice })).status, 400, 'next stays inside the desktop');
      const signedOut = await api('/auth/desktop-handoff?desktop=alice-demo');
      t.equal(signedOut.status, 302);
      t.match(signedOut.location, /^\/signin\?next=/, 'without a session: sign in first');
      t.equal((await handoff(bob, 'alice-demo')).stopped?.status, 403, 'bob may not, yet');
      const renewal = await api('/auth/desktop-handoff?desktop=alice-demo', { cookie: alice });
      const renewed = await request(port, demoHost, new URL(renewal.location!).pathname + new URL(renewal.location!).search);
      t.equal(renewed.status, 200, 'without next: a renewal, answered in place');
      t.ok(cookieOf(renewed, '__Host-deskhub_access'));
    });

    let bobShare = '';
    await t.test('named shares and links, and what they may not do', async (t) => {
      const view = await api(`/api/desktops/${demo.id}/shares`, { method: 'POST', cookie: alice, json: { username: 'bob', mode: 'view' } });
      t.equal(view.status, 201, view.text);
      bobShare = (JSON.parse(view.text) as { id: string }).id;
      t.equal((await api(`/api/desktops/${demo.id}/shares`, { method: 'POST', cookie: alice, json: { username: 'alice', mode: 'view' } })).status, 400, 'not with its owner');
      t.equal((await api(`/api/desktops/${demo.id}/shares`, { method: 'POST', cookie: alice, json: { username: 'nobody', mode: 'view' } })).status, 404);
      t.equal((await api(`/api/desktops/${demo.id}/shares`, { method: 'POST', cookie: bob, json: { username: 'carol', mode: 'view' } })).status, 404, 'only its owner shares it');
      const noViewer = await api(`/api/desktops/${web.id}/shares`, { method: 'POST', cookie: alice, json: { username: 'bob', mode: 'view' } });
      t.equal(noViewer.status, 409);
      t.match(noViewer.text, /no read-only user/);
      t.equal((await api(`/api/desktops/${web.id}/shares`, { method: 'POST', cookie: alice, json: { username: 'bob', mode: 'control' } })).status, 201, 'it can be shared for control');
      t.equal((await api(`/api/desktops/${demo.id}/links`, { method: 'POST', cookie: alice, json: { expiresIn: '3h' } })).status, 400, 'at most SHARE_LINK_MAX_TTL');
      t.equal((await api(`/api/desktops/${demo.id}/links`, { method: 'POST', cookie: alice, json: { mode: 'control' } })).status, 409, 'links give view unless an admin allows control');
      const link = await api(`/api/desktops/${demo.id}/links`, { method: 'POST', cookie: alice, json: { expiresIn: '1h' } });
      t.equal(link.status, 201);
      const { url } = JSON.parse(link.text) as { url: string };
      t.match(url, new RegExp(`^${uiOrigin}/share/[A-Za-z0-9_-]{32}$`));
      t.equal((await api('/api/shared/links', { method: 'POST', cookie: carol, json: { secret: 'x'.repeat(32) } })).status, 404, 'an unknown link');
      const opened = await api('/api/shared/links', { method: 'POST', cookie: carol, json: { secret: url.split('/').pop() } });
      t.equal(opened.status, 200, opened.text);
      t.match(JSON.parse(opened.text), { proxyPath: 'alice-demo', owner: 'alice', mode: 'view', via: 'link' });
      t.match(JSON.parse((await api('/api/shared', { cookie: carol })).text), [{ proxyPath: 'alice-demo', mode: 'view', via: 'link' }]);
      t.match(JSON.parse((await api('/api/shared', { cookie: bob })).text), [{ proxyPath: 'alice-demo', mode: 'view', via: 'user' }, { proxyPath: 'alice-web', mode: 'control' }]);
      const listed = JSON.parse((await api(`/api/desktops/${demo.id}/shares`, { cookie: alice })).text) as { available: boolean; shares: Array<{ kind: string; username: string | null; visitors: number }> };
      t.equal(listed.available, true);
      t.match(listed.shares, [{ kind: 'user', username: 'bob' }, { kind: 'link', username: null, visitors: 1 }]);
      const root = await signIn('root');
      const seen = await api(`/api/admin/desktops/${demo.id}/shares`, { cookie: root });
      t.equal(seen.status, 200, 'an admin sees any desktop\'s shares');
      t.match(JSON.parse(seen.text), { shares: [{ username: 'bob' }, { kind: 'link' }] });
      t.equal((await api(`/api/admin/desktops/${demo.id}/shares`, { cookie: bob })).status, 403, 'others are not admins');
      t.ok((await handoff(bob, 'alice-demo')).cookie, 'bob gets a cookie for the desktop now');
      t.ok((await handoff(carol, 'alice-demo')).cookie, 'and carol, through the link she opened');
      t.equal((await handoff(carol, 'alice-web')).stopped?.status, 403, 'but not for the desktop she has no share of');
    });

    await t.test('revoking closes the viewer by the time the API answers; who is connected is listed', async (t) => {
      const { cookie } = await handoff(bob, 'alice-demo');
      const ws = new WebSocket(`ws://127.0.0.1:${port}/desktop/alice-demo/websockify`, ['binary'], { headers: { host: demoHost, cookie: cookie! }, origin: `http://${demoHost}` });
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      const connected = await waitFor('bob to show as connected', async () => {
        const view = JSON.parse((await api(`/api/desktops/${demo.id}/shares`, { cookie: alice })).text) as { connected: Array<{ username: string; role: string }> };
        return view.connected.some((c) => c.username === 'bob') ? view.connected : undefined;
      }, 20_000, 500);
      t.match(connected, [{ username: 'bob', role: 'view' }]);
      let closedAt = 0;
      let code = 0;
      ws.once('close', (c) => {
        closedAt = Date.now();
        code = c;
      });
      const revoked = await api(`/api/desktops/${demo.id}/shares/${bobShare}`, { method: 'DELETE', cookie: alice });
      const answeredAt = Date.now();
      t.equal(revoked.status, 204);
      await waitFor('the viewer to be closed', () => (closedAt > 0 ? true : undefined), 2000, 10);
      t.equal(code, 4001, 'closed with 4001');
      t.ok(closedAt - answeredAt < 1000, `within a second of the answer (${closedAt - answeredAt} ms)`);
      t.equal((await request(port, demoHost, demoPage, { cookie: cookie! })).status, 403, 'and refused from then on');
      t.equal((await handoff(bob, 'alice-demo')).stopped?.status, 403, 'no new cookie either');
      t.equal((await api(`/api/desktops/${demo.id}/shares/${bobShare}`, { method: 'DELETE', cookie: alice })).status, 404, 'a revoked share is gone');
    });

    await t.test('a share ends at its expiry, and the policy takes it out of the route', async (t) => {
      const made = await api(`/api/desktops/${demo.id}/shares`, { method: 'POST', cookie: alice, json: { username: 'bob', mode: 'control', expiresIn: '2s' } });
      t.equal(made.status, 201);
      const { cookie } = await handoff(bob, 'alice-demo');
      t.equal((await request(port, demoHost, demoPage, { cookie: cookie! })).status, 200, 'bob may, for now');
      await waitFor('the share to end', async () => ((await request(port, demoHost, demoPage, { cookie: cookie! })).status === 403 ? true : undefined), 10_000, 200);
      await waitFor('the share-expiry policy to remove it', async () => {
        const view = JSON.parse((await api(`/api/desktops/${demo.id}/shares`, { cookie: alice })).text) as { shares: Array<{ username: string | null }> };
        return view.shares.some((s) => s.username === 'bob') ? undefined : true;
      }, 10_000, 200);
      t.ok(await waitFor('the event', async () => {
        const events = JSON.parse((await api(`/api/desktops/${demo.id}/events`, { cookie: alice })).text) as Array<{ message: string }>;
        return events.some((e) => /a share ended/.test(e.message)) ? true : undefined;
      }, 5000, 100), 'recorded as an event');
    });
  });
}

t.test('without DESKTOP_ORIGIN sharing is refused, saying why, and the owner keeps the shared origin', async (t) => {
  const { dir, cleanup } = tempDir('sharing-off');
  t.teardown(cleanup);
  const running = await startApp(testEnv(dir));
  t.teardown(() => running.close());
  const { app } = running;
  const cookie = await injectSignIn(app, 'alice');
  const created = (await app.inject({ method: 'POST', url: '/api/desktops', headers: { cookie }, payload: { type: 'web' } })).json<DesktopJson & { openUrl: string }>();
  t.equal(created.openUrl, created.url, 'opened where it is');
  const view = (await app.inject({ url: `/api/desktops/${created.id}/shares`, headers: { cookie } })).json<{ available: boolean; reason: string }>();
  t.equal(view.available, false);
  t.match(view.reason, /DESKTOP_ORIGIN/);
  const refused = await app.inject({ method: 'POST', url: `/api/desktops/${created.id}/shares`, headers: { cookie }, payload: { username: 'root', mode: 'control' } });
  t.equal(refused.statusCode, 409);
  t.match(refused.json().message, /sharing needs DESKTOP_ORIGIN/);
  t.equal((await app.inject({ url: '/auth/desktop-handoff?desktop=alice-web', headers: { cookie } })).statusCode, 404, 'no hand-off');
});
