/**
 * The proxy's access hook (src/access.ts) in a real proxy in front of a real demo desktop, with
 * tokens from a real signer, and revocations arriving through a real Redis (the path separate
 * proxies use): denied over HTTP and WebSocket without a token, with a tampered or expired one,
 * with another user's, with a foreign or missing Origin; a revoked session is refused at once and
 * its open WebSockets are closed, other sessions' stay open.
 */
import t from 'tap';
import WebSocket from 'ws';
import { createSigner, generateKeyPair, toPublicKey } from '@deskhub/access-token';
import { createRevocationChannel } from '@deskhub/route-stream';
import { startDemoDesktop } from '@deskhub/demo-desktop';
import { startRedis } from '@deskhub/testkit/redis';
import { createAccessControl } from '../src/access.ts';
import { KASM_AUTH, KASM_PASSWORD, makeRoute, send, silentLogger, startStack } from './helpers.ts';

const PUBLIC_URL = 'https://desk.example.test';
const keys = generateKeyPair();
const signer = createSigner({ privateKey: keys.privateKeyPem, lifetimeMs: 60_000 });
const cookieFor = (userId: string, sessionId: string, now?: number) => `deskhub_access=${signer.sign({ userId, username: userId, sessionId }, now).token}`;

const redis = await startRedis();
t.teardown(() => redis.close());
const desktop = await startDemoDesktop({ name: 'ann-kasm', tls: true, password: KASM_PASSWORD });
t.teardown(() => desktop.close());

const access = createAccessControl({ publicKeys: [toPublicKey(keys.publicKeyPem)], publicUrl: PUBLIC_URL });
const stack = await startStack(t, [makeRoute('ann', desktop.url, { owner: 'user-ann', authorization: KASM_AUTH })], { authorize: access.authorize, authMode: 'oidc', publicUrl: PUBLIC_URL });
const revocations = createRevocationChannel({ redisUrl: redis.url, keyPrefix: 'access-test:', logger: silentLogger });
t.teardown(() => revocations.close());
const subscriber = createRevocationChannel({ redisUrl: redis.url, keyPrefix: 'access-test:', logger: silentLogger });
t.teardown(() => subscriber.close());
await subscriber.subscribe((r) => access.revokeSession(r.sessionId, r.until));

const base = stack.proxy.url;
const ann = cookieFor('user-ann', 'session-ann-1');
const ann2 = cookieFor('user-ann', 'session-ann-2');
const bob = cookieFor('user-bob', 'session-bob-1');
const [p0, p1, p2, p3] = ann.slice('deskhub_access='.length).split('.');
const claims = JSON.parse(Buffer.from(p2!, 'base64url').toString()) as Record<string, unknown>;
const tampered = `deskhub_access=${[p0, p1, Buffer.from(JSON.stringify({ ...claims, userId: 'user-ann', username: 'ann2' })).toString('base64url'), p3].join('.')}`;
const expired = cookieFor('user-ann', 'session-ann-1', Date.now() - 120_000);

function upgrade(headers: Record<string, string>): Promise<{ status: number | 'open'; ws?: WebSocket }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/desktop/ann/websockify`, ['binary'], { headers, handshakeTimeout: 10_000 });
    ws.once('open', () => resolve({ status: 'open', ws }));
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
      ws.terminate();
    });
    ws.once('error', reject);
  });
}

t.test('HTTP: only the owner', async (t) => {
  t.equal((await send(`${base}/desktop/ann/`, { headers: { cookie: ann } })).status, 200, 'owner: 200');
  for (const [what, cookie, status] of [
    ['no token', undefined, 401],
    ['a tampered token', tampered, 401],
    ['an expired token', expired, 401],
    ["another user's token", bob, 403],
    ['a token from another key', `deskhub_access=${createSigner({ privateKey: generateKeyPair().privateKeyPem }).sign({ userId: 'user-ann', username: 'ann', sessionId: 's' }).token}`, 401],
  ] as const) {
    const reply = await send(`${base}/desktop/ann/`, { headers: cookie ? { cookie, accept: 'application/json' } : { accept: 'application/json' } });
    t.equal(reply.status, status, `${what}: ${status}`);
  }
  const page = await send(`${base}/desktop/ann/?a=b`, { headers: { accept: 'text/html' } });
  t.equal(page.status, 302, 'a page load without a token is redirected');
  t.equal(page.headers.location, `/auth/desktop-access?next=${encodeURIComponent('/desktop/ann/?a=b')}`);
  const echo = await send(`${base}/desktop/ann/__echo`, { headers: { cookie: `${ann}; other=1` } });
  const seen = JSON.parse(Buffer.from(String(echo.headers['x-echo-headers']), 'base64').toString()) as Record<string, string>;
  t.equal(seen.cookie, 'other=1', 'the access cookie does not reach the desktop');
});

t.test('WebSocket: owner, token and Origin checked', async (t) => {
  const ok = await upgrade({ cookie: ann, origin: PUBLIC_URL });
  t.equal(ok.status, 'open');
  ok.ws!.close();
  for (const [what, headers, status] of [
    ['no token', { origin: PUBLIC_URL }, 401],
    ['a tampered token', { cookie: tampered, origin: PUBLIC_URL }, 401],
    ['an expired token', { cookie: expired, origin: PUBLIC_URL }, 401],
    ["another user's token", { cookie: bob, origin: PUBLIC_URL }, 403],
    ['a foreign Origin', { cookie: ann, origin: 'https://evil.example' }, 403],
    ['a lookalike Origin', { cookie: ann, origin: 'https://desk.example.test.evil.example' }, 403],
    ['no Origin', { cookie: ann }, 403],
  ] as const) {
    t.equal((await upgrade(headers as Record<string, string>)).status, status, `${what}: ${status}`);
  }
});

t.test('a revocation through Redis refuses the session at once and closes its WebSockets', async (t) => {
  const first = await upgrade({ cookie: ann, origin: PUBLIC_URL });
  const second = await upgrade({ cookie: ann2, origin: PUBLIC_URL });
  t.equal(first.status, 'open');
  t.equal(second.status, 'open');
  t.equal(access.openSockets('session-ann-1'), 1);
  const closed = new Promise<void>((resolve) => first.ws!.once('close', () => resolve()));
  await revocations.publish({ sessionId: 'session-ann-1', until: Date.now() + 120_000 });
  await closed;
  t.pass('the revoked session’s WebSocket closed');
  t.equal(second.ws!.readyState, WebSocket.OPEN, 'another session of the same user stays open');
  second.ws!.close();
  t.equal((await send(`${base}/desktop/ann/`, { headers: { cookie: ann, accept: 'application/json' } })).status, 401, 'HTTP: 401 after revocation');
  t.equal((await upgrade({ cookie: ann, origin: PUBLIC_URL })).status, 401, 'WebSocket: 401 after revocation');
  t.equal((await send(`${base}/desktop/ann/`, { headers: { cookie: ann2 } })).status, 200, 'the other session still works');

  // A proxy that starts later loads the revocations still in force.
  const late = createAccessControl({ publicKeys: [toPublicKey(keys.publicKeyPem)], publicUrl: PUBLIC_URL });
  const lateChannel = createRevocationChannel({ redisUrl: redis.url, keyPrefix: 'access-test:', logger: silentLogger });
  t.teardown(() => lateChannel.close());
  await lateChannel.subscribe((r) => late.revokeSession(r.sessionId, r.until));
  t.equal(late.verifier.isRevoked('session-ann-1'), true, 'a proxy started afterwards knows');
  t.equal(late.verifier.isRevoked('session-ann-2'), false);
});
