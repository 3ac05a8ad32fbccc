/**
 * Access at the proxy, end to end through the embedded start (control plane + real proxy + a
 * demo desktop process): only the owner's access cookie reaches a desktop, over HTTP and over
 * WebSocket; no token, a tampered one, an expired one, one after logout, another user's, and a
 * foreign or missing Origin are refused; page loads go to renewal and come back; logout closes
 * the session's open desktop WebSockets; an admin reaches others' desktops only through the API.
 */
import t from 'tap';
import { startEmbedded } from '../src/embedded-start.ts';
import { echo, tempDir, testEnv, testProcesses, upgradeDesktop, waitFor, type DesktopJson } from './helpers.ts';

const { dir, cleanup } = tempDir('auth-access');
const deskhub = await startEmbedded({ env: testEnv(dir, { ADMIN_USERS: 'root', ACCESS_TOKEN_LIFETIME_S: '300' }) });
t.teardown(async () => {
  await deskhub.close();
  for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
  cleanup();
});
const base = deskhub.proxyUrl;
const origin = deskhub.publicUrl;
const wsBase = base.replace(/^http/, 'ws');

function cookiesOf(res: Response): Map<string, string> {
  const out = new Map<string, string>();
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const at = pair!.indexOf('=');
    out.set(pair!.slice(0, at), pair!.slice(at + 1));
  }
  return out;
}

async function signIn(username: string): Promise<{ session: string; access: string; both: string }> {
  const res = await fetch(`${base}/auth/dev-login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username }) });
  if (res.status !== 200) throw new Error(`dev-login ${res.status}`);
  const jar = cookiesOf(res);
  const session = `deskhub_session=${jar.get('deskhub_session')}`;
  const access = `deskhub_access=${jar.get('deskhub_access')}`;
  return { session, access, both: `${session}; ${access}` };
}

/** The upgrade's outcome: 'open' (and the echo works) or the HTTP status it was refused with. */
const upgrade = (path: string, headers: Record<string, string>) => upgradeDesktop(`${wsBase}${path}`, headers);

const alice = await signIn('alice');
const bob = await signIn('bob');

const created = await fetch(`${base}/api/desktops`, { method: 'POST', headers: { cookie: alice.session, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'demo' }) });
if (created.status !== 201) throw new Error(`create answered ${created.status}: ${await created.text()}`);
const desktop = (await created.json()) as DesktopJson;
await waitFor(
  'the demo desktop to run',
  async () => {
    const d = (await (await fetch(`${base}/api/desktops/${desktop.id}`, { headers: { cookie: alice.session } })).json()) as DesktopJson;
    if (d.state === 'failed') throw new Error(`failed: ${d.reason}`);
    return d.state === 'running' ? d : undefined;
  },
  120_000,
  200,
);
const page = `/desktop/${desktop.proxyPath}/`;
const echoPath = `/desktop/${desktop.proxyPath}/websockify`;

// Tokens that must not work.
const token = alice.access.slice('deskhub_access='.length);
const parts = token.split('.');
const payload = JSON.parse(Buffer.from(parts[2]!, 'base64url').toString()) as { userId: string; sessionId: string; username: string };
const tampered = `deskhub_access=${[parts[0], parts[1], Buffer.from(JSON.stringify({ ...payload, expiresAt: payload.userId ? Date.now() + 86_400_000 : 0 })).toString('base64url'), parts[3]].join('.')}`;
const expired = `deskhub_access=${deskhub.controlPlane.app.access.signer.sign({ userId: payload.userId, username: 'alice', sessionId: payload.sessionId }, Date.now() - 3_600_000).token}`;

t.test('over HTTP', async (t) => {
  t.match(alice.access, /^deskhub_access=dh1\./, 'dev sign-in sets the access cookie');
  const owner = await fetch(`${base}${page}`, { headers: { cookie: alice.access } });
  t.equal(owner.status, 200, 'the owner reaches the desktop');
  t.match(await owner.text(), /Demo desktop/);

  for (const [what, cookie, status] of [
    ['no token', '', 401],
    ['a session cookie alone', alice.session, 401],
    ['a tampered token', tampered, 401],
    ['an expired token', expired, 401],
    ["another user's token", bob.access, 403],
  ] as const) {
    const res = await fetch(`${base}${page}`, { headers: { ...(cookie ? { cookie } : {}), accept: 'application/json' }, redirect: 'manual' });
    t.equal(res.status, status, `${what}: ${status}`);
    const body = (await res.json()) as { statusCode: number; message: string };
    t.equal(body.statusCode, status);
  }

  // A page load without a token goes to renewal, which mints from the session and comes back.
  const load = await fetch(`${base}${page}?x=1`, { headers: { accept: 'text/html', cookie: alice.session }, redirect: 'manual' });
  t.equal(load.status, 302);
  const renew = load.headers.get('location')!;
  t.equal(renew, `/auth/desktop-access?next=${encodeURIComponent(`${page}?x=1`)}`);
  const renewed = await fetch(`${base}${renew}`, { headers: { cookie: alice.session }, redirect: 'manual' });
  t.equal(renewed.status, 302);
  t.equal(renewed.headers.get('location'), `${page}?x=1`, 'back to the desktop');
  const fresh = cookiesOf(renewed).get('deskhub_access');
  t.ok(fresh, 'a new access cookie');
  t.match(renewed.headers.getSetCookie().join('\n'), /deskhub_access=[^;]+; Path=\/desktop\/; Max-Age=300; HttpOnly; SameSite=Lax/);
  t.equal((await fetch(`${base}${page}`, { headers: { cookie: `deskhub_access=${fresh}` } })).status, 200, 'the renewed token works');

  // Without a session, renewal goes to sign-in, which then loads the desktop (sign-in sets the cookie).
  const anonymous = await fetch(`${base}${renew}`, { redirect: 'manual' });
  t.equal(anonymous.status, 302);
  t.equal(anonymous.headers.get('location'), `/signin?next=${encodeURIComponent(`${page}?x=1`)}`);
  // Renewal sends only to desktop paths (no open redirect).
  t.equal((await fetch(`${base}/auth/desktop-access?next=${encodeURIComponent('https://evil.example/')}`, { headers: { cookie: alice.session }, redirect: 'manual' })).status, 400);
});

t.test('over WebSocket', async (t) => {
  const owner = await upgrade(echoPath, { cookie: alice.access, origin });
  t.equal(owner.status, 'open', 'the owner connects');
  t.equal(await echo(owner.ws!, 'hi'), 'hi');
  owner.ws!.close();

  for (const [what, headers, status] of [
    ['no token', { origin }, 401],
    ['a tampered token', { cookie: tampered, origin }, 401],
    ['an expired token', { cookie: expired, origin }, 401],
    ["another user's token", { cookie: bob.access, origin }, 403],
    ['a foreign Origin', { cookie: alice.access, origin: 'https://evil.example' }, 403],
    ['no Origin', { cookie: alice.access }, 403],
  ] as const) {
    t.equal((await upgrade(echoPath, headers as Record<string, string>)).status, status, `${what}: ${status}`);
  }
});

t.test('an admin manages anyone’s desktops through the admin API, not by opening them', async (t) => {
  const root = await signIn('root');
  const list = await fetch(`${base}/api/admin/desktops`, { headers: { cookie: root.session } });
  t.equal(list.status, 200);
  t.ok(((await list.json()) as DesktopJson[]).some((d) => d.id === desktop.id), "the admin sees alice's desktop");
  t.equal((await fetch(`${base}/api/admin/desktops`, { headers: { cookie: bob.session } })).status, 403, 'others may not');
  t.equal((await fetch(`${base}${page}`, { headers: { cookie: root.access } })).status, 403, "the admin's own token does not open alice's desktop");
});

t.test('logout: the token stops working at once and open WebSockets close', async (t) => {
  const open = await upgrade(echoPath, { cookie: alice.access, origin });
  t.equal(open.status, 'open');
  const closed = new Promise<void>((resolve) => open.ws!.once('close', () => resolve()));
  const out = await fetch(`${base}/auth/logout`, { method: 'POST', headers: { cookie: alice.session } });
  t.equal(out.status, 204);
  t.match(out.headers.getSetCookie().join('\n'), /deskhub_access=; Path=\/desktop\/; Max-Age=0/, 'the access cookie is cleared');
  await closed;
  t.pass("the session's desktop WebSocket was closed");
  t.equal((await fetch(`${base}${page}`, { headers: { cookie: alice.access, accept: 'application/json' } })).status, 401, 'HTTP after logout: 401');
  t.equal((await upgrade(echoPath, { cookie: alice.access, origin })).status, 401, 'WebSocket after logout: 401');
  t.equal((await fetch(`${base}/auth/desktop-access?next=${encodeURIComponent(page)}`, { headers: { cookie: alice.session }, redirect: 'manual' })).headers.get('location')?.startsWith('/signin?'), true, 'renewal needs a new sign-in');
});

t.test('CSRF: a cross-site browser request that changes state is refused', async (t) => {
  const carol = await signIn('carol');
  const post = (headers: Record<string, string>) =>
    fetch(`${base}/api/desktops`, { method: 'POST', headers: { cookie: carol.session, 'content-type': 'application/json', ...headers }, body: JSON.stringify({ type: 'nope' }) });
  const foreign = await post({ origin: 'https://evil.example' });
  t.equal(foreign.status, 403, 'a foreign Origin: 403');
  t.match(((await foreign.json()) as { message: string }).message, /cross-site/);
  t.equal((await post({ 'sec-fetch-site': 'cross-site' })).status, 403, 'Sec-Fetch-Site cross-site: 403');
  t.equal((await post({ origin: 'null' })).status, 403, 'Origin null: 403');
  // Not refused by the CSRF check (the unknown type is then a 400 from the API itself).
  t.equal((await post({ origin })).status, 400, 'Origin equal to PUBLIC_URL passes');
  t.equal((await post({ origin: 'https://evil.example', 'x-deskhub-csrf': '1' })).status, 400, "the web UI's header passes");
  t.equal((await post({})).status, 400, 'a non-browser client (no Origin, no Sec-Fetch-Site) passes');
  const logout = await fetch(`${base}/auth/logout`, { method: 'POST', headers: { cookie: carol.session, origin: 'https://evil.example' } });
  t.equal(logout.status, 403, 'cross-site logout is refused too');
  t.equal((await fetch(`${base}/api/me`, { headers: { cookie: carol.session, origin: 'https://evil.example' } })).status, 200, 'reads are not state changes');
});
