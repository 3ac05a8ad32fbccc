/**
 * Sharing at the proxy, with desktops on origins of their own (DESKTOP_ORIGIN): a real proxy with
 * the real access hook, tokens from a real signer, real upstreams (the demo desktop, which keeps
 * Kasm's two users, and a recording desktop that keeps every WebSocket byte it gets).
 *
 * - each desktop's origin serves that desktop only, and the UI's origin serves none;
 * - the owner, a `control` share and a `view` share get in with a token naming the desktop and the
 *   share; a stranger, a token of the UI's origin or of another desktop, and a share gone or
 *   expired do not;
 * - the owner's own paths (/api/, /Downloads/, however spelt) are refused to everyone else;
 * - a viewer reaches the desktop as its read-only user, and their RFB input never reaches it;
 * - the Origin of a WebSocket must be exactly the desktop's own;
 * - revoking a share or its expiry closes exactly the WebSockets opened with it, with 4001.
 */
import t from 'tap';
import type { AddressInfo } from 'node:net';
import http from 'node:http';
import WebSocket from 'ws';
import { createSigner, DESKTOP_ACCESS_COOKIE_NAME, generateKeyPair, parseDesktopOrigin, toPublicKey, type AccessSubject } from '@deskhub/access-token';
import { startDemoDesktop } from '@deskhub/demo-desktop';
import { createAccessControl } from '../src/access.ts';
import { echoedHeaders, KASM_AUTH, KASM_PASSWORD, makeRoute, send, startStack } from './helpers.ts';
import { closeOf, open, startRecordingDesktop, upgrade } from './ws-helpers.ts';

const PUBLIC_URL = 'http://localhost:18080';
const keys = generateKeyPair();
const signer = createSigner({ privateKey: keys.privateKeyPem, lifetimeMs: 60_000 });
const VIEWER_AUTH = 'Basic ' + Buffer.from(`kasm_viewer:${KASM_PASSWORD}`).toString('base64');

// A stand-in control plane: records what the proxy forwards to it.
const forwarded: Array<{ url: string; host: string | undefined; forwardedHost: string | undefined }> = [];
const controlPlane = http.createServer((req, res) => {
  forwarded.push({ url: req.url ?? '', host: req.headers.host, forwardedHost: req.headers['x-forwarded-host'] as string | undefined });
  res.end('control plane');
});
await new Promise<void>((resolve) => controlPlane.listen(0, '127.0.0.1', resolve));
t.teardown(() => new Promise<void>((resolve) => controlPlane.close(() => resolve())));

const demo = await startDemoDesktop({ name: 'alice-dev', tls: true, password: KASM_PASSWORD });
t.teardown(() => demo.close());
const recording = await startRecordingDesktop();
t.teardown(() => recording.close());

// The proxy's port must be in DESKTOP_ORIGIN, so the stack starts on a port of our choosing.
const probe = http.createServer();
await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
const port = (probe.address() as AddressInfo).port;
await new Promise<void>((resolve) => probe.close(() => resolve()));
const origins = parseDesktopOrigin(`http://*.localhost:${port}`);

const access = createAccessControl({ publicKeys: [toPublicKey(keys.publicKeyPem)], publicUrl: PUBLIC_URL, desktopOrigins: origins });
const base = {
  owner: 'user-alice',
  authorization: KASM_AUTH,
  viewerAuthorization: VIEWER_AUTH,
  ownerOnly: ['/api/', '/Downloads/'],
  shares: [
    { id: 'share-bob', user: 'user-bob', mode: 'view' as const },
    { id: 'share-carol', user: 'user-carol', mode: 'control' as const },
    { id: 'link-1', mode: 'view' as const },
  ],
};
const dev = makeRoute('alice-dev', demo.url, base);
const vnc = makeRoute('alice-vnc', recording.url, { ...base, authorization: null, activity: { on: 'input', rfb: 'standard' } });
const other = makeRoute('alice-other', demo.url, { owner: 'user-alice', authorization: KASM_AUTH });
const stack = await startStack(t, [dev, vnc, other], {
  authorize: access.authorize,
  authMode: 'oidc',
  publicUrl: PUBLIC_URL,
  desktopOrigins: origins,
  controlPlaneUrl: `http://127.0.0.1:${(controlPlane.address() as AddressInfo).port}`,
  port,
});
const proxyBase = `http://127.0.0.1:${port}`;

const host = (path: string) => `${path}.localhost:${port}`;
const cookie = (subject: Partial<AccessSubject> & { userId: string }) =>
  `${DESKTOP_ACCESS_COOKIE_NAME}=${signer.sign({ username: subject.userId.replace('user-', ''), sessionId: `s-${subject.userId}`, ...subject }).token}`;
const alice = (desktop: string) => cookie({ userId: 'user-alice', desktop });
const bob = (desktop: string) => cookie({ userId: 'user-bob', desktop, grant: 'share-bob' });
const carol = (desktop: string) => cookie({ userId: 'user-carol', desktop, grant: 'share-carol' });
const dave = (desktop: string, grant = 'link-1') => cookie({ userId: 'user-dave', desktop, grant });

const get = (path: string, headers: Record<string, string>) => send(`${proxyBase}${path}`, { headers });

t.test("a desktop's origin serves that desktop only, the UI's origin none", async (t) => {
  t.equal((await get('/desktop/alice-dev/', { host: host('alice-dev'), cookie: alice('alice-dev') })).status, 200, 'the owner on its origin');
  const elsewhere = await get('/desktop/alice-dev/', { host: host('alice-other'), cookie: alice('alice-dev') });
  t.equal(elsewhere.status, 404, "a desktop's path on another desktop's origin does not exist");
  const ui = await get('/desktop/alice-dev/?x=1', { host: 'localhost:18080', accept: 'text/html' });
  t.equal(ui.status, 302, "on the UI's origin a page load goes to the desktop's origin");
  t.equal(ui.headers.location, `http://alice-dev.localhost:${port}/desktop/alice-dev/?x=1`);
  t.equal((await send(`${proxyBase}/desktop/alice-dev/`, { method: 'POST', headers: { host: 'localhost:18080' }, body: 'x' })).status, 404, 'and nothing else');
  t.equal((await get('/api/me', { host: host('alice-dev') })).status, 404, "deskhub's API is not on a desktop's origin");
  t.equal((await get('/', { host: host('alice-dev') })).status, 404);
  forwarded.length = 0;
  const exchange = await get('/.deskhub/handoff?code=abc', { host: host('alice-dev'), 'x-forwarded-host': 'evil.example' });
  t.equal(exchange.text, 'control plane', "the hand-off is the one control-plane path a desktop's origin forwards");
  t.equal(forwarded[0]?.forwardedHost, host('alice-dev'), "with the desktop's host as X-Forwarded-Host, not the one the browser claimed");
  t.equal((await get('/api/me', { host: 'localhost:18080' })).text, 'control plane', "the UI's origin still reaches the control plane");
  const ws = await upgrade(`ws://127.0.0.1:${port}/desktop/alice-dev/websockify`, { headers: { host: 'localhost:18080', cookie: alice('alice-dev') }, origin: PUBLIC_URL });
  t.equal(ws.status, 404, "no desktop WebSocket on the UI's origin");
});

t.test('who gets in, and as whom the desktop sees them', async (t) => {
  const echo = async (c: string) => get('/desktop/alice-dev/__echo', { host: host('alice-dev'), cookie: c });
  t.equal(echoedHeaders(await echo(alice('alice-dev'))).authorization, KASM_AUTH, "the owner as the desktop's owner user");
  t.equal(echoedHeaders(await echo(carol('alice-dev'))).authorization, KASM_AUTH, 'a control share as the owner user too');
  t.equal(echoedHeaders(await echo(bob('alice-dev'))).authorization, VIEWER_AUTH, 'a view share as the read-only user');
  t.equal(echoedHeaders(await echo(dave('alice-dev'))).authorization, VIEWER_AUTH, 'a link holder as the read-only user');
  for (const [who, c, status] of [
    ['no cookie', '', 401],
    ['a stranger', cookie({ userId: 'user-eve', desktop: 'alice-dev' }), 403],
    ["bob's share with eve's token", cookie({ userId: 'user-eve', desktop: 'alice-dev', grant: 'share-bob' }), 403],
    ['a revoked link', dave('alice-dev', 'link-gone'), 403],
    ["a token of the UI's origin", cookie({ userId: 'user-alice' }), 403],
    ["a token for another desktop", alice('alice-other'), 403],
    ['the cookie of the UI origin', `deskhub_access=${signer.sign({ userId: 'user-alice', username: 'alice', sessionId: 's' }).token}`, 401],
  ] as const) {
    t.equal((await echo(c)).status, status, who);
  }
  const page = await get('/desktop/alice-dev/', { host: host('alice-dev'), accept: 'text/html' });
  t.equal(page.status, 302, 'a page load without a token goes for one');
  t.equal(page.headers.location, `${PUBLIC_URL}/auth/desktop-handoff?desktop=alice-dev&next=${encodeURIComponent('/desktop/alice-dev/')}`, "to the hand-off on the UI's origin");
  // Our cookies never reach the desktop.
  const headers = echoedHeaders(await get('/desktop/alice-dev/__echo', { host: host('alice-dev'), cookie: `${bob('alice-dev')}; theirs=1` }));
  t.equal(headers.cookie, 'theirs=1');
});

t.test("the owner's own paths are the owner's, however they are spelt", async (t) => {
  const paths = ['/api/get_screenshot', '/api', '/API/get_screenshot', '/%61pi/get_screenshot', '//api/x', '/Downloads/Downloads/secret.txt', '/downloads/Downloads/x', '/%44ownloads/x', '/Down%6Coads/x'];
  for (const p of paths) {
    t.equal((await get(`/desktop/alice-dev${p}`, { host: host('alice-dev'), cookie: bob('alice-dev') })).status, 403, `view: ${p}`);
    t.equal((await get(`/desktop/alice-dev${p}`, { host: host('alice-dev'), cookie: carol('alice-dev') })).status, 403, `control: ${p}`);
    t.not((await get(`/desktop/alice-dev${p}`, { host: host('alice-dev'), cookie: alice('alice-dev') })).status, 403, `owner: ${p}`);
  }
  t.equal((await get('/desktop/alice-dev/apix', { host: host('alice-dev'), cookie: bob('alice-dev') })).status, 404, 'a mere prefix of the name is not the owner path (the demo desktop answers 404)');
  const ws = await upgrade(`ws://127.0.0.1:${port}/desktop/alice-dev/api/websockify`, { headers: { host: host('alice-dev'), cookie: carol('alice-dev') }, origin: `http://${host('alice-dev')}` });
  t.equal(ws.status, 403, 'nor as a WebSocket');
});

/** The bytes a browser's noVNC sends: handshake, then messages (standard RFB). */
const rfb = {
  handshake: Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([1]), Buffer.from([0])]),
  update: Buffer.from([3, 1, 0, 0, 0, 0, 4, 0, 3, 0]),
  key: Buffer.from([4, 1, 0, 0, 0, 0, 0, 0x61]),
  pointer: Buffer.from([5, 1, 0, 10, 0, 20]),
};

t.test("a viewer's WebSocket: the read-only user, its input dropped, and only from the desktop's own origin", async (t) => {
  const url = `ws://127.0.0.1:${port}/desktop/alice-vnc/websockify`;
  const wrongOrigin = await upgrade(url, { headers: { host: host('alice-vnc'), cookie: bob('alice-vnc') }, origin: `http://${host('alice-dev')}` });
  t.equal(wrongOrigin.status, 403, "another desktop's page cannot open it");
  const uiOrigin = await upgrade(url, { headers: { host: host('alice-vnc'), cookie: bob('alice-vnc') }, origin: PUBLIC_URL });
  t.equal(uiOrigin.status, 403, "nor the UI's");

  recording.received.length = 0;
  const viewer = await open(url, { headers: { host: host('alice-vnc'), cookie: bob('alice-vnc') }, origin: `http://${host('alice-vnc')}` });
  viewer.send(rfb.handshake);
  viewer.send(Buffer.concat([rfb.key, rfb.update, rfb.pointer]));
  viewer.send(rfb.update);
  await waitUntil(() => Buffer.concat(recording.received).length >= rfb.handshake.length + 2 * rfb.update.length);
  t.same(Buffer.concat(recording.received), Buffer.concat([rfb.handshake.subarray(0, 13), Buffer.from([1]), rfb.update, rfb.update]), 'only the handshake (shared flag forced on) and update requests reached the desktop');
  viewer.close();

  recording.received.length = 0;
  const controller = await open(url, { headers: { host: host('alice-vnc'), cookie: carol('alice-vnc') }, origin: `http://${host('alice-vnc')}` });
  controller.send(rfb.handshake);
  controller.send(Buffer.concat([rfb.key, rfb.update]));
  await waitUntil(() => Buffer.concat(recording.received).length >= rfb.handshake.length + rfb.key.length + rfb.update.length);
  t.same(Buffer.concat(recording.received), Buffer.concat([rfb.handshake, rfb.key, rfb.update]), "a control share's input passes unchanged");
  controller.close();
});

t.test('revoking a share, or its end, closes exactly its WebSockets, and the next request is refused', async (t) => {
  const url = `ws://127.0.0.1:${port}/desktop/alice-dev/websockify`;
  const opts = (c: string) => ({ headers: { host: host('alice-dev'), cookie: c }, origin: `http://${host('alice-dev')}` });
  const owner = await open(url, opts(alice('alice-dev')));
  const viewer = await open(url, opts(bob('alice-dev')));
  const controller = await open(url, opts(carol('alice-dev')));
  const viewerClosed = closeOf(viewer);
  const started = Date.now();
  await stack.put({ ...dev, shares: dev.shares.filter((s) => s.id !== 'share-bob') });
  const closed = await viewerClosed;
  t.equal(closed.code, 4001, "the revoked viewer's socket closes with 4001");
  t.match(closed.reason, /revoked/);
  t.ok(Date.now() - started < 1000, `within a second (${Date.now() - started} ms)`);
  t.equal(owner.readyState, WebSocket.OPEN, "the owner's stays open");
  t.equal(controller.readyState, WebSocket.OPEN, "another share's stays open");
  t.equal((await get('/desktop/alice-dev/__echo', { host: host('alice-dev'), cookie: bob('alice-dev') })).status, 403, 'the next request is refused');

  // A mode change is a revocation of the old mode.
  const controllerClosed = closeOf(controller);
  await stack.put({ ...dev, shares: [{ id: 'share-carol', user: 'user-carol', mode: 'view' }] });
  t.equal((await controllerClosed).code, 4001, 'control turned into view closes the control socket');

  // An expiry closes on time, with no route change.
  await stack.put({ ...dev, shares: [{ id: 'share-bob', user: 'user-bob', mode: 'view', expiresAt: Date.now() + 1500 }] });
  const expiring = await open(url, opts(bob('alice-dev')));
  const expired = await closeOf(expiring);
  t.equal(expired.code, 4001);
  t.match(expired.reason, /ended/);
  t.equal((await get('/desktop/alice-dev/__echo', { host: host('alice-dev'), cookie: bob('alice-dev') })).status, 403, 'an expired share is refused');
  t.equal(owner.readyState, WebSocket.OPEN, "and the owner's is still open");
  owner.close();
  await stack.put(dev);
});

async function waitUntil(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
