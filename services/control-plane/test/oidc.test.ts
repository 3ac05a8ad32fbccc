/**
 * Sign-in with identity providers, end to end over HTTP through the embedded start (the proxy in
 * front, as users reach it) with AUTH_MODE=oidc: two real OpenID providers (panva's
 * oidc-provider, PKCE required), a GitHub-like OAuth2 server (authorize, code exchange with PKCE,
 * the user API) as a test double for github.com, a provider that starts only after deskhub did,
 * one that never answers, one whose discovery names another issuer, one that refuses deskhub's
 * client secret, and a small OpenID provider that issues bad id_tokens on purpose (a certified
 * one never does) to show each check bites. A cookie jar plays the browser: deskhub's /auth/login/<p> → the
 * provider → deskhub's /auth/callback/<p> → the page the user started from.
 */
import t from 'tap';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK } from 'jose';
import { startOidcProvider, CookieJar, type OidcProvider } from '@deskhub/testkit/oidc';
import { freePort } from '@deskhub/testkit/net';
import { startEmbedded } from '../src/embedded-start.ts';
import { startApp, tempDir, testEnv, testProcesses, waitFor, type DesktopJson } from './helpers.ts';

const publicPort = await freePort();
const publicUrl = `http://127.0.0.1:${publicPort}`;
const callback = (id: string) => `${publicUrl}/auth/callback/${id}`;

const corp = await startOidcProvider({
  clients: [
    { client_id: 'deskhub-corp', client_secret: 'corp-secret', redirect_uris: [callback('corp'), callback('mixup'), 'https://desktops.example.com/auth/callback/corp'] },
    { client_id: 'deskhub-bad', client_secret: 'the-right-secret', redirect_uris: [callback('badsecret')] },
  ],
  accounts: {
    'corp-alice': { preferred_username: 'alice', email: 'alice@corp.example', name: 'Alice Corp' },
    'corp-boss': { preferred_username: 'boss', groups: ['staff', 'deskhub-admins'] },
    'corp-staff': { preferred_username: 'staffer', groups: ['staff'] },
    'corp-mail': { email: 'Mail.Only@corp.example' },
  },
});
const other = await startOidcProvider({
  clients: [{ client_id: 'deskhub-other', client_secret: 'other-secret', redirect_uris: [callback('other')] }],
  accounts: { 'other-alice': { preferred_username: 'alice', name: 'Another Alice' } },
});
const github = await startGithubDouble({
  clientId: 'gh-client',
  clientSecret: 'gh-secret',
  redirectUri: callback('github'),
  users: { octocat: { id: 583231, login: 'octocat', name: 'The Octocat' }, alice: { id: 1001, login: 'Alice', name: 'GitHub Alice' } },
});
const forger = await startIdTokenForger({ clientId: 'deskhub-forged', clientSecret: 'forged-secret', redirectUri: callback('forged') });
const latePort = await freePort();
const downPort = await freePort();
let late: OidcProvider | null = null;

const { dir, cleanup } = tempDir('oidc');
const deskhub = await startEmbedded({
  env: testEnv(dir, {
    AUTH_MODE: 'oidc',
    PORT: String(publicPort),
    PUBLIC_URL: publicUrl,
    OIDC_PROVIDERS: 'corp,other,github,late,down,mixup,badsecret,forged',
    OIDC_CORP_ISSUER: corp.issuer,
    OIDC_CORP_CLIENT_ID: 'deskhub-corp',
    OIDC_CORP_CLIENT_SECRET: 'corp-secret',
    OIDC_CORP_NAME: 'Corp SSO',
    OIDC_CORP_SCOPES: 'openid profile email groups',
    OIDC_OTHER_ISSUER: `${other.issuer}/`,
    OIDC_OTHER_CLIENT_ID: 'deskhub-other',
    OIDC_OTHER_CLIENT_SECRET: 'other-secret',
    OIDC_GITHUB_URL: github.url,
    OIDC_GITHUB_CLIENT_ID: 'gh-client',
    OIDC_GITHUB_CLIENT_SECRET: 'gh-secret',
    OIDC_LATE_ISSUER: `http://127.0.0.1:${latePort}`,
    OIDC_LATE_CLIENT_ID: 'deskhub-late',
    OIDC_LATE_CLIENT_SECRET: 'late-secret',
    OIDC_DOWN_ISSUER: `http://127.0.0.1:${downPort}`,
    OIDC_DOWN_CLIENT_ID: 'x',
    OIDC_DOWN_CLIENT_SECRET: 'y',
    // The same provider reached under another name: its discovery document names another issuer.
    OIDC_MIXUP_ISSUER: corp.issuer.replace('127.0.0.1', 'localhost'),
    OIDC_MIXUP_CLIENT_ID: 'deskhub-corp',
    OIDC_MIXUP_CLIENT_SECRET: 'corp-secret',
    OIDC_BADSECRET_ISSUER: corp.issuer,
    OIDC_BADSECRET_CLIENT_ID: 'deskhub-bad',
    OIDC_BADSECRET_CLIENT_SECRET: 'a-wrong-secret',
    OIDC_FORGED_ISSUER: forger.issuer,
    OIDC_FORGED_CLIENT_ID: 'deskhub-forged',
    OIDC_FORGED_CLIENT_SECRET: 'forged-secret',
    ADMIN_CLAIM: 'groups=deskhub-admins',
    ADMIN_USERS: 'root',
  }),
});
t.teardown(async () => {
  await deskhub.close();
  await Promise.all([corp.close(), other.close(), github.close(), forger.close(), late?.close()]);
  for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
  cleanup();
});
const base = deskhub.proxyUrl;

/** A GET through deskhub as a browser would send it: the jar's cookies, redirects not followed. */
async function browse(jar: CookieJar, pathAndQuery: string, headers: Record<string, string> = {}): Promise<Response> {
  const url = new URL(pathAndQuery, base);
  const cookie = jar.header(url);
  const res = await fetch(url, { redirect: 'manual', headers: { ...(cookie ? { cookie } : {}), ...headers } });
  jar.store(url, res.headers.getSetCookie());
  return res;
}

const pathOf = (url: URL) => `${url.pathname}${url.search}`;

/** deskhub's login route → the provider's authorization URL (the jar now holds the flow cookies). */
async function startLogin(jar: CookieJar, provider: string, next?: string): Promise<string> {
  const res = await browse(jar, `/auth/login/${provider}${next === undefined ? '' : `?next=${encodeURIComponent(next)}`}`);
  if (res.status !== 302) throw new Error(`login ${provider}: ${res.status} ${await res.text()}`);
  return res.headers.get('location')!;
}

/** The whole code flow with an OpenID provider; returns the callback's answer and the jar. */
async function signInWith(op: OidcProvider, provider: string, sub: string, next?: string): Promise<{ jar: CookieJar; res: Response; callbackUrl: URL }> {
  const jar = new CookieJar();
  const callbackUrl = await op.completeLogin(await startLogin(jar, provider, next), sub);
  const res = await browse(jar, pathOf(callbackUrl));
  return { jar, res, callbackUrl };
}

async function me(jar: CookieJar): Promise<{ status: number; user?: { id: string; username: string; roles: string[] } }> {
  const res = await browse(jar, '/api/me');
  return res.status === 200 ? { status: 200, user: (await res.json()) as { id: string; username: string; roles: string[] } } : { status: res.status };
}

async function errorOf(res: Response): Promise<{ statusCode: number; message: string }> {
  return (await res.json()) as { statusCode: number; message: string };
}

function cookieNames(jar: CookieJar, path = '/'): string[] {
  return jar.header(new URL(path, base)).split('; ').filter(Boolean).map((c) => c.slice(0, c.indexOf('=')));
}

t.test('the sign-in page lists the providers; dev sign-in does not exist in oidc mode', async (t) => {
  const res = await fetch(`${base}/auth/providers`);
  t.equal(res.status, 200);
  const body = (await res.json()) as { providers: { id: string; name: string; loginUrl: string }[]; devLogin: boolean };
  t.equal(body.devLogin, false);
  t.same(body.providers.slice(0, 3), [
    { id: 'corp', name: 'Corp SSO', loginUrl: '/auth/login/corp' },
    { id: 'other', name: 'other', loginUrl: '/auth/login/other' },
    { id: 'github', name: 'GitHub', loginUrl: '/auth/login/github' },
  ]);
  t.equal(body.providers.length, 8);
  const dev = await fetch(`${base}/auth/dev-login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'root' }) });
  t.equal(dev.status, 404);
});

let alice: { jar: CookieJar; id: string };

t.test('a first sign-in creates the user; the session and the access cookie work', async (t) => {
  const jar = new CookieJar();
  const authorizationUrl = new URL(await startLogin(jar, 'corp'));
  t.equal(authorizationUrl.origin, corp.issuer, 'sent to the provider');
  const q = authorizationUrl.searchParams;
  t.equal(q.get('code_challenge_method'), 'S256', 'PKCE S256');
  t.match(q.get('code_challenge'), /^[A-Za-z0-9_-]{43}$/);
  t.match(q.get('state'), /^[A-Za-z0-9_-]{16,}$/);
  t.match(q.get('nonce'), /^[A-Za-z0-9_-]{16,}$/);
  t.equal(q.get('redirect_uri'), callback('corp'));
  t.equal(q.get('scope'), 'openid profile email groups');
  t.same(cookieNames(jar).sort(), ['deskhub-corp-flow', 'deskhub-corp-state', 'deskhub-corp-verifier']);

  const callbackUrl = await corp.completeLogin(authorizationUrl.toString(), 'corp-alice');
  t.equal(callbackUrl.origin + callbackUrl.pathname, callback('corp'));
  const res = await browse(jar, pathOf(callbackUrl));
  t.equal(res.status, 302, await res.clone().text());
  t.equal(res.headers.get('location'), '/', 'no next: home');
  t.same(cookieNames(jar), ['deskhub_session'], 'the flow cookies are gone, the session is set');
  t.same(cookieNames(jar, '/desktop/x/').sort(), ['deskhub_access', 'deskhub_session'], 'and the desktop access cookie');
  const who = await me(jar);
  t.equal(who.status, 200);
  t.equal(who.user!.username, 'alice');
  t.same(who.user!.roles, []);
  alice = { jar, id: who.user!.id };
});

t.test('a second sign-in of the same person is the same user', async (t) => {
  const { jar, res } = await signInWith(corp, 'corp', 'corp-alice');
  t.equal(res.status, 302);
  const who = await me(jar);
  t.equal(who.user!.id, alice.id);
  t.equal(who.user!.username, 'alice');
});

t.test('alice at another provider is another user, alice-2, and never sees the first alice’s desktops', async (t) => {
  const { jar, res } = await signInWith(other, 'other', 'other-alice');
  t.equal(res.status, 302, 'the issuer was configured with a trailing "/": still the same issuer');
  const who = await me(jar);
  t.equal(who.user!.username, 'alice-2');
  t.not(who.user!.id, alice.id);

  const created = await browse(alice.jar, '/api/desktops'); // warm: nothing yet
  t.same(await created.json(), []);
  const url = new URL('/api/desktops', base);
  const post = await fetch(url, { method: 'POST', headers: { cookie: alice.jar.header(url), 'content-type': 'application/json' }, body: JSON.stringify({ type: 'web' }) });
  t.equal(post.status, 201);
  const desktop = (await post.json()) as DesktopJson;
  t.equal(desktop.proxyPath, 'alice-web');
  t.equal(desktop.owner, 'alice');

  t.same(await (await browse(jar, '/api/desktops')).json(), [], 'alice-2 lists none of them');
  t.equal((await browse(jar, `/api/desktops/${desktop.id}`)).status, 404, "alice-2 cannot read alice's desktop");
  const running = await waitFor('the web desktop to run', async () => {
    const d = (await (await browse(alice.jar, `/api/desktops/${desktop.id}`)).json()) as DesktopJson;
    if (d.state === 'failed') throw new Error(`failed: ${d.reason}`);
    return d.state === 'running' ? d : undefined;
  });
  const page = `/desktop/${running.proxyPath}/`;
  t.equal((await browse(alice.jar, page)).status, 200, 'alice opens her desktop through the proxy');
  t.equal((await browse(jar, page, { accept: 'application/json' })).status, 403, 'alice-2 is refused at the proxy');
});

t.test('ADMIN_CLAIM: a member of the admin group is an admin; others are not', async (t) => {
  const boss = await signInWith(corp, 'corp', 'corp-boss');
  t.equal(boss.res.status, 302);
  const who = await me(boss.jar);
  t.equal(who.user!.username, 'boss');
  t.same(who.user!.roles, ['admin']);
  t.equal((await browse(boss.jar, '/api/admin/desktops')).status, 200, 'the admin API answers');
  const staff = await signInWith(corp, 'corp', 'corp-staff');
  t.same((await me(staff.jar)).user!.roles, [], 'another group: no admin role');
  t.equal((await browse(staff.jar, '/api/admin/desktops')).status, 403);
});

t.test('with no preferred_username, the name comes from the email', async (t) => {
  const { jar } = await signInWith(corp, 'corp', 'corp-mail');
  t.equal((await me(jar)).user!.username, 'mail-only');
});

t.test('the user refuses at the provider (access_denied): a readable 403, no session', async (t) => {
  const jar = new CookieJar();
  const back = await corp.denyLogin(await startLogin(jar, 'corp', '/desktop/alice-web/'));
  t.equal(back.searchParams.get('error'), 'access_denied');
  const res = await browse(jar, pathOf(back));
  t.equal(res.status, 403);
  t.match((await errorOf(res)).message, /Sign-in with Corp SSO was refused \(access_denied\)/);
  t.same(cookieNames(jar), [], 'flow cookies cleared, no session');

  // A browser gets a page with the way back to sign-in (keeping where it was going), not JSON.
  const again = new CookieJar();
  const denied = await corp.denyLogin(await startLogin(again, 'corp', '/desktop/alice-web/'));
  const page = await browse(again, pathOf(denied), { accept: 'text/html,application/xhtml+xml' });
  t.equal(page.status, 403);
  t.match(page.headers.get('content-type'), /^text\/html/);
  const html = await page.text();
  t.match(html, /<h1>Sign-in failed<\/h1>/);
  t.match(html, /href="\/signin\?next=%2Fdesktop%2Falice-web%2F"/);
  t.notMatch(html, /at .*\.ts:\d+/, 'no stack trace');
});

t.test('state: tampered, missing or from another attempt is refused with 400', async (t) => {
  const jar = new CookieJar();
  const back = await corp.completeLogin(await startLogin(jar, 'corp'), 'corp-alice');
  const tampered = new URL(back);
  tampered.searchParams.set('state', `${back.searchParams.get('state')}x`);
  const res = await browse(jar, pathOf(tampered));
  t.equal(res.status, 400);
  t.match((await errorOf(res)).message, /the state does not match/);
  t.equal((await me(jar)).status, 401, 'no session');

  const fresh = await corp.completeLogin(await startLogin(new CookieJar(), 'corp'), 'corp-alice');
  const noCookies = await browse(new CookieJar(), pathOf(fresh));
  t.equal(noCookies.status, 400, 'a callback in a browser that did not start the sign-in');

  // Two attempts in one browser: the first one's answer no longer matches.
  const two = new CookieJar();
  const first = await corp.completeLogin(await startLogin(two, 'corp'), 'corp-alice');
  await startLogin(two, 'corp');
  t.equal((await browse(two, pathOf(first))).status, 400, 'a superseded attempt');

  // A response naming another issuer (RFC 9207 mix-up defence).
  const jar3 = new CookieJar();
  const back3 = await corp.completeLogin(await startLogin(jar3, 'corp'), 'corp-alice');
  back3.searchParams.set('iss', other.issuer);
  const mixed = await browse(jar3, pathOf(back3));
  t.equal(mixed.status, 400);
  t.match((await errorOf(mixed)).message, /issuer mismatch/);
});

t.test('the id_token must carry this attempt’s nonce', async (t) => {
  // The flow cookie is signed with deskhub's key (here by deskhub itself): only its nonce changes.
  const jar = new CookieJar();
  const authorizationUrl = await startLogin(jar, 'corp');
  const flowUrl = new URL('/auth/callback/corp', base);
  const flowCookie = jar.header(flowUrl).split('; ').find((c) => c.startsWith('deskhub-corp-flow='))!;
  const app = deskhub.controlPlane.app;
  const flow = JSON.parse(Buffer.from(app.unsignCookie(decodeURIComponent(flowCookie.slice('deskhub-corp-flow='.length))).value!, 'base64url').toString()) as { nonce: string };
  t.equal(new URL(authorizationUrl).searchParams.get('nonce'), flow.nonce, 'the nonce sent is the one kept');
  const changed = Buffer.from(JSON.stringify({ ...flow, nonce: 'another-attempts-nonce' })).toString('base64url');
  jar.store(flowUrl, [`deskhub-corp-flow=${encodeURIComponent(app.signCookie(changed))}; Path=/`]);
  const res = await browse(jar, pathOf(await corp.completeLogin(authorizationUrl, 'corp-alice')));
  t.equal(res.status, 401);
  t.match((await errorOf(res)).message, /does not belong to this sign-in attempt \(nonce mismatch\)/);
  t.equal((await me(jar)).status, 401, 'no session');
});

t.test('id_tokens that fail a check are refused: signature, issuer, audience, expiry, nonce, algorithm', async (t) => {
  const attempt = async (mode: ForgeMode) => {
    forger.mode = mode;
    const jar = new CookieJar();
    const atProvider = await fetch(await startLogin(jar, 'forged'), { redirect: 'manual' });
    const res = await browse(jar, pathOf(new URL(atProvider.headers.get('location')!)));
    return { res, jar };
  };
  const good = await attempt('valid');
  t.equal(good.res.status, 302, 'the control: a correct id_token from this provider signs in');
  t.equal((await me(good.jar)).user!.username, 'forged-user');
  for (const [mode, pattern] of [
    ['foreign-key', /could not be verified \(ERR_JWS_SIGNATURE_VERIFICATION_FAILED/],
    ['wrong-issuer', /could not be verified \(ERR_JWT_CLAIM_VALIDATION_FAILED: unexpected "iss" claim value\)/],
    ['wrong-audience', /could not be verified \(ERR_JWT_CLAIM_VALIDATION_FAILED: unexpected "aud" claim value\)/],
    ['expired', /could not be verified \(ERR_JWT_EXPIRED/],
    ['wrong-nonce', /nonce mismatch/],
    ['hs256', /could not be verified \(ERR_JOSE_ALG_NOT_ALLOWED/],
    ['other-azp', /was issued to another client \(azp\)/],
  ] as const) {
    const { res, jar } = await attempt(mode);
    t.equal(res.status, 401, `${mode}: 401`);
    t.match((await errorOf(res)).message, pattern, mode);
    t.equal((await me(jar)).status, 401, `${mode}: no session`);
  }
});

t.test('a name only at the userinfo endpoint is used, and only for the same subject', async (t) => {
  forger.mode = 'userinfo';
  const jar = new CookieJar();
  const atProvider = await fetch(await startLogin(jar, 'forged'), { redirect: 'manual' });
  t.equal((await browse(jar, pathOf(new URL(atProvider.headers.get('location')!)))).status, 302);
  t.equal((await me(jar)).user!.username, 'from-userinfo');

  forger.mode = 'userinfo-other-sub';
  const jar2 = new CookieJar();
  const atProvider2 = await fetch(await startLogin(jar2, 'forged'), { redirect: 'manual' });
  const res = await browse(jar2, pathOf(new URL(atProvider2.headers.get('location')!)));
  t.equal(res.status, 400, "another subject's userinfo is not taken");
  t.match((await errorOf(res)).message, /gave no name deskhub can use/);
});

t.test('a callback used twice is refused, with or without the original cookies', async (t) => {
  const jar = new CookieJar();
  const back = await corp.completeLogin(await startLogin(jar, 'corp'), 'corp-alice');
  const cookiesBefore = jar.header(new URL('/auth/callback/corp', base));
  t.equal((await browse(jar, pathOf(back))).status, 302, 'the first use signs in');
  const again = await browse(jar, pathOf(back));
  t.equal(again.status, 400, 'the same browser: its state is used up');
  const replay = await fetch(new URL(pathOf(back), base), { redirect: 'manual', headers: { cookie: cookiesBefore } });
  t.equal(replay.status, 400, 'the old cookies too: the provider refuses the used code');
  t.match((await errorOf(replay)).message, /refused the sign-in code \(invalid_grant\)/);
  t.equal(replay.headers.getSetCookie().some((c) => c.startsWith('deskhub_session=') && !c.startsWith('deskhub_session=;')), false, 'no session from a replay');
});

t.test('an unknown provider is a 404 with a message', async (t) => {
  for (const path of ['/auth/login/nope', '/auth/callback/nope?code=x&state=y']) {
    const res = await fetch(`${base}${path}`, { redirect: 'manual' });
    t.equal(res.status, 404, path);
    t.match((await errorOf(res)).message, /There is no sign-in provider "nope" here \(configured: corp, other, github, late, down, mixup, badsecret, forged\)/);
  }
});

t.test('a provider that cannot be reached: 502 naming it; deskhub started anyway and retries later', async (t) => {
  const down = await fetch(`${base}/auth/login/down`, { redirect: 'manual' });
  t.equal(down.status, 502);
  t.match((await errorOf(down)).message, /Sign-in provider "down" \(down\) is not available: its discovery document at http:\/\/127\.0\.0\.1:\d+ cannot be reached \(ECONNREFUSED\)/);

  const before = await fetch(`${base}/auth/login/late`, { redirect: 'manual' });
  t.equal(before.status, 502, 'late is not up yet');
  late = await startOidcProvider({
    port: latePort,
    clients: [{ client_id: 'deskhub-late', client_secret: 'late-secret', redirect_uris: [callback('late')] }],
    accounts: { 'late-user': { preferred_username: 'latecomer' } },
  });
  const { jar, res } = await signInWith(late, 'late', 'late-user');
  t.equal(res.status, 302, 'discovery is tried again once the provider is up');
  t.equal((await me(jar)).user!.username, 'latecomer');

  const mixup = await fetch(`${base}/auth/login/mixup`, { redirect: 'manual' });
  t.equal(mixup.status, 502);
  t.match((await errorOf(mixup)).message, /discovery document names issuer "http:\/\/127\.0\.0\.1:\d+", not the configured http:\/\/localhost:\d+/);
});

t.test('a client secret the provider refuses: 502 saying so, no session', async (t) => {
  const { jar, res } = await signInWith(corp, 'badsecret', 'corp-alice');
  t.equal(res.status, 502);
  t.match((await errorOf(res)).message, /"badsecret" .* does not accept deskhub's client id and secret \(invalid_client\)/);
  t.equal((await me(jar)).status, 401);
});

t.test('next: back to where the sign-in started; another site is refused', async (t) => {
  const { res } = await signInWith(corp, 'corp', 'corp-alice', '/desktop/alice-web/?x=1');
  t.equal(res.status, 302);
  t.equal(res.headers.get('location'), '/desktop/alice-web/?x=1');
  for (const next of ['https://evil.example/', '//evil.example/x', '/\\evil.example', 'evil.example', '/ok\r\nSet-Cookie: x=1', 'javascript:alert(1)']) {
    const login = await fetch(`${base}/auth/login/corp?next=${encodeURIComponent(next)}`, { redirect: 'manual' });
    t.equal(login.status, 400, JSON.stringify(next));
    t.match((await errorOf(login)).message, /only goes back to a page of this site/);
  }
});

t.test('GitHub preset: plain OAuth2 with PKCE, identity from the user API, login as the name', async (t) => {
  const jar = new CookieJar();
  github.signedInAs = 'octocat';
  const authorizationUrl = new URL(await startLogin(jar, 'github', '/'));
  t.equal(`${authorizationUrl.origin}${authorizationUrl.pathname}`, `${github.url}/login/oauth/authorize`);
  t.equal(authorizationUrl.searchParams.get('nonce'), null, 'no nonce: not OpenID Connect');
  t.equal(authorizationUrl.searchParams.get('scope'), 'read:user');
  const atGithub = await fetch(authorizationUrl, { redirect: 'manual' });
  t.equal(atGithub.status, 302);
  const back = new URL(atGithub.headers.get('location')!);
  const res = await browse(jar, pathOf(back));
  t.equal(res.status, 302, 'signed in');
  const who = await me(jar);
  t.equal(who.user!.username, 'octocat');
  t.equal(github.exchanges, 1, 'one code exchange, with the PKCE verifier');

  // The same browser state with the used code again: GitHub's "bad_verification_code".
  const jar2 = new CookieJar();
  github.signedInAs = 'alice';
  const atGithub2 = await fetch(await startLogin(jar2, 'github'), { redirect: 'manual' });
  const back2 = new URL(atGithub2.headers.get('location')!);
  const cookies2 = jar2.header(new URL('/auth/callback/github', base));
  t.equal((await browse(jar2, pathOf(back2))).status, 302);
  t.equal((await me(jar2)).user!.username, 'alice-3', 'a third alice (GitHub login "Alice") gets alice-3');
  const replay = await fetch(new URL(pathOf(back2), base), { redirect: 'manual', headers: { cookie: cookies2 } });
  t.equal(replay.status, 400);
  t.match((await errorOf(replay)).message, /refused the sign-in code \(bad_verification_code\)/);
});

t.test('POST /auth/desktop-access renews the access cookie from the session; 401 without one', async (t) => {
  const url = new URL('/auth/desktop-access', base);
  const res = await fetch(url, { method: 'POST', headers: { cookie: alice.jar.header(url) } });
  t.equal(res.status, 204);
  t.match(res.headers.getSetCookie().join('\n'), /deskhub_access=dh1\.[^;]+; Path=\/desktop\/; Max-Age=\d+; HttpOnly; SameSite=Lax/);
  t.equal(res.headers.get('cache-control'), 'no-store');
  const anonymous = await fetch(url, { method: 'POST' });
  t.equal(anonymous.status, 401);
  t.match((await errorOf(anonymous)).message, /sign in first/);
  const cross = await fetch(url, { method: 'POST', headers: { cookie: alice.jar.header(url), origin: 'https://evil.example' } });
  t.equal(cross.status, 403, 'cross-site: refused by the CSRF check');
});

t.test('under https: __Host- flow cookies, Secure session cookie', async (t) => {
  const { dir: httpsDir, cleanup: httpsCleanup } = tempDir('oidc-https');
  const running = await startApp(
    testEnv(httpsDir, {
      AUTH_MODE: 'oidc',
      PUBLIC_URL: 'https://desktops.example.com',
      OIDC_PROVIDERS: 'corp',
      OIDC_CORP_ISSUER: corp.issuer,
      OIDC_CORP_CLIENT_ID: 'deskhub-corp',
      OIDC_CORP_CLIENT_SECRET: 'corp-secret',
    }),
  );
  t.teardown(async () => {
    await running.close();
    httpsCleanup();
  });
  const { app } = running;
  const login = await app.inject({ url: '/auth/login/corp?next=/desktop/x/' });
  t.equal(login.statusCode, 302);
  const set = login.headers['set-cookie'] as string[];
  t.equal(set.length, 3);
  for (const line of set) t.match(line, /^__Host-deskhub-corp-(state|verifier|flow)=[^;]+; Max-Age=600; Path=\/; HttpOnly; Secure; SameSite=Lax$/);
  t.equal(new URL(login.headers.location!).searchParams.get('redirect_uri'), 'https://desktops.example.com/auth/callback/corp');
  const back = await corp.completeLogin(login.headers.location!, 'corp-alice');
  const cookie = set.map((line) => line.slice(0, line.indexOf(';'))).join('; ');
  const done = await app.inject({ url: pathOf(back), headers: { cookie } });
  t.equal(done.statusCode, 302, done.body);
  t.equal(done.headers.location, '/desktop/x/');
  // Under https the session cookie is a __Host- cookie too: no desktop's subdomain can plant one.
  t.match((done.headers['set-cookie'] as string[]).join('\n'), /^__Host-deskhub_session=[^;]+; .*Path=\/; .*Secure/m);
  t.notMatch((done.headers['set-cookie'] as string[]).join('\n'), /^__Host-deskhub_session=[^;]+;.*Domain=/m);
});

interface GithubUser {
  id: number;
  login: string;
  name: string;
}

const json = (res: ServerResponse, status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));

function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

/** What both test doubles do with codes: bound to the client, its redirect URI and a PKCE (S256) challenge; redeemed once. */
function pkceCodes<T>(client: { clientId: string; redirectUri: string }) {
  const codes = new Map<string, { data: T; challenge: string }>();
  return {
    /** The redirect back to the client with a new code, or null when the authorization request is not acceptable. */
    issue(q: URLSearchParams, data: T): string | null {
      if (q.get('client_id') !== client.clientId || q.get('redirect_uri') !== client.redirectUri) return null;
      if (q.get('code_challenge_method') !== 'S256' || !q.get('code_challenge') || !q.get('state')) return null;
      const code = randomBytes(10).toString('hex');
      codes.set(code, { data, challenge: q.get('code_challenge')! });
      return `${client.redirectUri}?code=${code}&state=${encodeURIComponent(q.get('state')!)}`;
    },
    /** The code's data, once, when the redirect URI and the PKCE verifier match; null otherwise. */
    redeem(form: URLSearchParams): T | null {
      const grant = codes.get(form.get('code') ?? '');
      codes.delete(form.get('code') ?? '');
      if (!grant || form.get('redirect_uri') !== client.redirectUri) return null;
      return createHash('sha256').update(form.get('code_verifier') ?? '').digest('base64url') === grant.challenge ? grant.data : null;
    },
  };
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * A GitHub-like OAuth2 server on 127.0.0.1, enough of github.com for the preset: the authorize
 * page signs in `signedInAs` at once and redirects back with a code; the token endpoint checks
 * the client, the redirect URI, the code (once) and the PKCE verifier, answering errors the way
 * GitHub does (200 with {"error"}); `/api/v3/user` answers for a valid access token.
 */
async function startGithubDouble(options: { clientId: string; clientSecret: string; redirectUri: string; users: Record<string, GithubUser> }) {
  const codes = pkceCodes<GithubUser>(options);
  const tokens = new Map<string, GithubUser>();
  const state = { signedInAs: Object.keys(options.users)[0]!, exchanges: 0 };
  const server = await listen((req, res) => {
    const url = new URL(req.url ?? '/', 'http://github.invalid');
    if (req.method === 'GET' && url.pathname === '/login/oauth/authorize') {
      const back = codes.issue(url.searchParams, options.users[state.signedInAs]!);
      if (back === null) return json(res, 400, { error: 'invalid_request' });
      return res.writeHead(302, { location: back }).end();
    }
    if (req.method === 'POST' && url.pathname === '/login/oauth/access_token') {
      void readForm(req).then((form) => {
        if (form.get('client_id') !== options.clientId || form.get('client_secret') !== options.clientSecret) return json(res, 200, { error: 'incorrect_client_credentials' });
        const user = codes.redeem(form);
        if (user === null) return json(res, 200, { error: 'bad_verification_code' });
        const token = `gho_${randomBytes(16).toString('hex')}`;
        tokens.set(token, user);
        state.exchanges++;
        json(res, 200, { access_token: token, token_type: 'bearer', scope: 'read:user' });
      });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/api/v3/user') {
      const user = tokens.get((req.headers.authorization ?? '').replace(/^Bearer /, ''));
      if (!user) return json(res, 401, { message: 'Bad credentials' });
      return json(res, 200, { ...user, type: 'User' });
    }
    json(res, 404, { message: 'Not Found' });
  });
  return {
    url: server.url,
    close: server.close,
    set signedInAs(login: string) {
      state.signedInAs = login;
    },
    get exchanges() {
      return state.exchanges;
    },
  };
}

type ForgeMode = 'valid' | 'foreign-key' | 'wrong-issuer' | 'wrong-audience' | 'expired' | 'wrong-nonce' | 'hs256' | 'other-azp' | 'userinfo' | 'userinfo-other-sub';

/**
 * An OpenID provider reduced to what deskhub uses (discovery, authorize, token with PKCE, JWKS)
 * whose id_tokens are wrong on purpose in one way at a time (`mode`), signed for real with jose.
 * 'valid' is the control: the same provider with a correct id_token signs in. In the 'userinfo'
 * modes the id_token has no name and the userinfo endpoint has one (for another subject, in
 * 'userinfo-other-sub').
 */
async function startIdTokenForger(options: { clientId: string; clientSecret: string; redirectUri: string }) {
  const published = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const foreign = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...(await exportJWK(published.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
  const codes = pkceCodes<string>(options);
  const tokens = new Set<string>();
  const state = { mode: 'valid' as ForgeMode };
  let issuer = '';
  const idToken = async (nonce: string): Promise<string> => {
    const mode = state.mode;
    const now = Math.floor(Date.now() / 1000);
    const claims: Record<string, unknown> = { nonce: mode === 'wrong-nonce' ? 'not-the-nonce' : nonce };
    if (!mode.startsWith('userinfo')) claims.preferred_username = 'forged-user';
    if (mode === 'other-azp') claims.azp = 'someone-else';
    const jwt = new SignJWT(claims)
      .setProtectedHeader({ alg: mode === 'hs256' ? 'HS256' : 'RS256', kid: 'k1' })
      .setSubject(mode.startsWith('userinfo') ? `forged-${mode}` : 'forged-1')
      .setIssuer(mode === 'wrong-issuer' ? 'https://impostor.example' : issuer)
      .setAudience(mode === 'wrong-audience' ? 'another-client' : mode === 'other-azp' ? [options.clientId, 'someone-else'] : options.clientId)
      .setIssuedAt(mode === 'expired' ? now - 7200 : now)
      .setExpirationTime(mode === 'expired' ? now - 3600 : now + 300);
    if (mode === 'hs256') return jwt.sign(new TextEncoder().encode(options.clientSecret));
    return jwt.sign(mode === 'foreign-key' ? foreign.privateKey : published.privateKey);
  };
  const server = await listen((req, res) => {
    const url = new URL(req.url ?? '/', issuer);
    if (url.pathname === '/.well-known/openid-configuration') {
      return json(res, 200, {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        userinfo_endpoint: `${issuer}/userinfo`,
        response_types_supported: ['code'],
        id_token_signing_alg_values_supported: ['RS256', 'HS256'],
        code_challenge_methods_supported: ['S256'],
      });
    }
    if (url.pathname === '/jwks') return json(res, 200, { keys: [jwk] });
    if (url.pathname === '/userinfo') {
      if (!tokens.has((req.headers.authorization ?? '').replace(/^Bearer /, ''))) return json(res, 401, { error: 'invalid_token' });
      const sub = state.mode === 'userinfo' ? 'forged-userinfo' : 'somebody-else';
      return json(res, 200, { sub, preferred_username: 'from-userinfo' });
    }
    if (url.pathname === '/authorize') {
      const back = codes.issue(url.searchParams, url.searchParams.get('nonce') ?? '');
      if (back === null) return json(res, 400, { error: 'invalid_request' });
      return res.writeHead(302, { location: back }).end();
    }
    if (url.pathname === '/token' && req.method === 'POST') {
      void readForm(req).then(async (form) => {
        const basic = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString();
        if (basic !== `${options.clientId}:${options.clientSecret}`) return json(res, 401, { error: 'invalid_client' });
        const nonce = codes.redeem(form);
        if (nonce === null) return json(res, 400, { error: 'invalid_grant' });
        const accessToken = randomBytes(16).toString('hex');
        tokens.add(accessToken);
        json(res, 200, { access_token: accessToken, token_type: 'Bearer', expires_in: 300, id_token: await idToken(nonce) });
      });
      return;
    }
    json(res, 404, { error: 'not_found' });
  });
  issuer = server.url;
  return {
    issuer,
    close: server.close,
    set mode(mode: ForgeMode) {
      state.mode = mode;
    },
  };
}
