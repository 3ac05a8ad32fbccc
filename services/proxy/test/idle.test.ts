/**
 * A desktop held disconnected by the idle clock (route field `disconnected`), and presence (someone
 * connected), on real sockets and the route stream on a real Redis:
 * - the put that holds it closes its open WebSockets with 4000 and the reason, after a half-sent
 *   1 MiB desktop frame arrives intact; another desktop's WebSocket stays open; one log line;
 * - its upgrades are refused with 409 and the reason (plain HTTP passes) until a put without it,
 *   and a refused attempt is neither activity nor presence; a stranger gets 403, never the reason;
 * - a put that leaves the upstream alone (sharing changed, `disconnected` removed) cuts nothing,
 *   also while an upgrade's access check is under way, and a hold arriving then refuses it;
 * - presence: every request let through, and an open WebSocket at each flush with no traffic.
 */
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import t from 'tap';
import WebSocket from 'ws';
import { createSigner, generateKeyPair, toPublicKey } from '@deskhub/access-token';
import { startRedis } from '@deskhub/testkit/redis';
import type { Route } from '@deskhub/route-stream';
import { createAccessControl } from '../src/access.ts';
import type { AccessHook } from '../src/index.ts';
import { makeRoute, send, startStack, type Stack } from './helpers.ts';
import { closeOf, open, startHalfFrameDesktop, startRecordingDesktop, upgrade } from './ws-helpers.ts';

const REASON = 'Disconnected after 30 minutes without input';
const REFUSAL = `${REASON}. Reconnect it from deskhub.`;

const redis = await startRedis();
t.teardown(() => redis.close());

const wsUrl = (stack: Stack, path: string): string => `${stack.proxy.url.replace(/^http/, 'ws')}/desktop/${path}/websockify`;
const held = (route: Route, reason = REASON): Route => ({ ...route, disconnected: reason });

/** The merged time of `path` in both maps after this proxy's flush. */
async function timesOf(stack: Stack, path: string): Promise<{ activity?: number; presence?: number }> {
  await stack.subscriber.flushActivity();
  const [activity, presence] = await Promise.all([stack.publisher.readActivity(), stack.publisher.readPresence()]);
  return { activity: activity.get(path), presence: presence.get(path) };
}

t.test('held disconnected: open WebSockets get 4000 and the reason after the desktop frame in progress; other desktops untouched', async (t) => {
  const payload = randomBytes(1024 * 1024);
  const desktop = await startHalfFrameDesktop(payload);
  t.teardown(() => desktop.close());
  const other = await startRecordingDesktop();
  t.teardown(() => other.close());
  const logged: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) });
  const vnc = makeRoute('ann-vnc', desktop.url, { activity: { on: 'input', rfb: 'kasmvnc' } });
  const stack = await startStack(t, [vnc, makeRoute('bob-vnc', other.url)], { redisUrl: redis.url, logger });

  const ws = await open(wsUrl(stack, 'ann-vnc'));
  const messages: Buffer[] = [];
  ws.on('message', (data: Buffer) => messages.push(Buffer.from(data)));
  const closed = closeOf(ws);
  const bystander = await open(wsUrl(stack, 'bob-vnc'));
  t.teardown(() => bystander.terminate());

  desktop.sendFirstHalf();
  await new Promise((r) => setTimeout(r, 200)); // half of the frame is through the proxy
  t.equal(messages.length, 0, 'half a frame is not a message yet');
  await stack.put(held(vnc));
  await new Promise((r) => setTimeout(r, 100));
  desktop.sendRest();
  t.same(await closed, { code: 4000, reason: REASON }, 'closed with 4000 and the reason the route carries');
  t.equal(messages.length, 1, 'one message: the frame in progress, and nothing after the close');
  t.ok(messages[0]!.equals(payload), 'the 1 MiB frame arrived intact');
  await desktop.closed;
  t.pass('the connection to the desktop is closed too');

  t.equal(bystander.readyState, WebSocket.OPEN, "another desktop's WebSocket stays open");
  await new Promise<void>((resolve) => bystander.send(Buffer.from('still here'), () => resolve()));
  t.ok(await eventually(() => other.received.some((m) => m.toString() === 'still here')), 'and still carries bytes');

  const lines = logged.filter((l) => l.msg === 'closed the WebSockets of a desktop held disconnected');
  t.equal(lines.length, 1, 'one log line for the route');
  t.match(lines[0], { level: 30, route: 'ann-vnc', closed: 1, reason: REASON });

  await stack.put(held(vnc, 'Disconnected by an administrator'));
  t.equal(logged.filter((l) => l.msg === 'closed the WebSockets of a desktop held disconnected').length, 2, 'another reason: the route is closed again (nothing open: closed 0)');
});

t.test('held disconnected: upgrades refused with 409 and the reason, and neither activity nor presence, until a put without it', async (t) => {
  const desktop = await startRecordingDesktop();
  t.teardown(() => desktop.close());
  const web = makeRoute('ann-web', desktop.url, { activity: { on: 'traffic' } });
  const stack = await startStack(t, [held(web)], { redisUrl: redis.url, subscriberOptions: { activityFlushMs: 60_000 } });

  const refused = await upgrade(wsUrl(stack, 'ann-web'));
  t.equal(refused.status, 409, '409 Conflict');
  t.same(JSON.parse(refused.body ?? ''), { statusCode: 409, error: 'Conflict', message: REFUSAL }, 'the reason, and what to do');
  const page = await upgrade(wsUrl(stack, 'ann-web'), { headers: { accept: 'text/html' } });
  t.equal(page.status, 409);
  t.match(page.body ?? '', `<p>${REFUSAL}</p>`, 'as a page for a browser that asks for one');
  t.equal(desktop.connections, 0, 'nothing reached the desktop');
  t.same(await timesOf(stack, 'ann-web'), {}, 'refused attempts are neither activity nor presence');

  const t0 = Date.now();
  const http = await send(`${stack.proxy.url}/desktop/ann-web/`);
  t.equal(http.status, 200, 'plain HTTP passes as usual');
  t.equal(http.text, 'page');
  const times = await timesOf(stack, 'ann-web');
  t.ok(times.presence! >= t0 && times.activity! >= t0, 'and counts as it always did');

  await stack.put(web);
  const ws = await open(wsUrl(stack, 'ann-web'));
  t.teardown(() => ws.terminate());
  t.equal(desktop.connections, 1, 'a put without `disconnected`: accepted again');
  await new Promise<void>((resolve) => ws.send(Buffer.from('hello'), () => resolve()));
  t.ok(await eventually(() => desktop.received.length === 1), 'and carries bytes');
});

t.test('a stranger asking for a desktop held disconnected gets 401 or 403, never the reason', async (t) => {
  const PUBLIC_URL = 'https://desk.example.test';
  const keys = generateKeyPair();
  const signer = createSigner({ privateKey: keys.privateKeyPem, lifetimeMs: 60_000 });
  const cookieFor = (userId: string) => `deskhub_access=${signer.sign({ userId, username: userId, sessionId: `session-${userId}` }).token}`;
  const access = createAccessControl({ publicKeys: [toPublicKey(keys.publicKeyPem)], publicUrl: PUBLIC_URL });
  const desktop = await startRecordingDesktop();
  t.teardown(() => desktop.close());
  const route = held(makeRoute('ann', desktop.url, { owner: 'user-ann' }));
  const stack = await startStack(t, [route], { redisUrl: redis.url, authorize: access.authorize, authMode: 'oidc', publicUrl: PUBLIC_URL, subscriberOptions: { activityFlushMs: 60_000 } });

  for (const [who, headers, status] of [
    ['another user', { cookie: cookieFor('user-bob'), origin: PUBLIC_URL }, 403],
    ['no token', { origin: PUBLIC_URL }, 401],
    ['the owner from a foreign origin', { cookie: cookieFor('user-ann'), origin: 'https://evil.example' }, 403],
  ] as const) {
    const refused = await upgrade(wsUrl(stack, 'ann'), { headers });
    t.equal(refused.status, status, `${who}: ${status}`);
    t.notMatch(refused.body ?? '', /Disconnected|Reconnect/, `${who}: the reason is not shown`);
  }
  const owner = await upgrade(wsUrl(stack, 'ann'), { headers: { cookie: cookieFor('user-ann'), origin: PUBLIC_URL } });
  t.equal(owner.status, 409, 'the owner: 409');
  t.match(owner.body ?? '', REFUSAL, 'with the reason');
  t.same(await timesOf(stack, 'ann'), {}, 'no refused attempt is presence');
});

t.test('a put that leaves the upstream alone cuts nothing, also during the access check; a hold arriving then refuses', async (t) => {
  const desktop = await startRecordingDesktop();
  t.teardown(() => desktop.close());
  let gate: Promise<void> | null = null;
  let checking: () => void = () => undefined;
  const authorize: AccessHook = async () => {
    if (gate) {
      checking();
      await gate;
    }
    return { allow: true };
  };
  const vnc = makeRoute('ann-vnc', desktop.url);
  const stack = await startStack(t, [vnc], { redisUrl: redis.url, authorize });

  // An open WebSocket: puts that change sharing, then state, replace the route object and nothing else.
  const ws = await open(wsUrl(stack, 'ann-vnc'));
  t.teardown(() => ws.terminate());
  await stack.put({ ...vnc, shares: [{ id: 'share-bob', user: 'user-bob', mode: 'view' }] });
  await stack.put({ ...vnc, state: 'stopping' });
  await new Promise<void>((resolve) => ws.send(Buffer.from('after the puts'), () => resolve()));
  t.ok(await eventually(() => desktop.received.some((m) => m.toString() === 'after the puts')), 'still open and carrying bytes');
  t.equal(ws.readyState, WebSocket.OPEN);

  /** Starts an upgrade whose access check waits until `during` has run. */
  const upgradeWhile = async (during: () => Promise<void>): Promise<Awaited<ReturnType<typeof upgrade>>> => {
    let release: () => void = () => undefined;
    gate = new Promise((resolve) => (release = resolve));
    const inCheck = new Promise<void>((resolve) => (checking = resolve));
    const pending = upgrade(wsUrl(stack, 'ann-vnc'));
    await inCheck;
    await during();
    gate = null;
    release();
    return pending;
  };

  // Held while no connection is open, released while an upgrade's access check runs: the route
  // object the upgrade looked up is gone, the upstream is the same: the connection stays.
  await stack.put(held(vnc));
  const released = await upgradeWhile(() => stack.put(vnc));
  t.ok(released.ws, 'released during the check: accepted');
  const stays = released.ws!;
  t.teardown(() => stays.terminate());
  await new Promise((r) => setTimeout(r, 100));
  t.equal(stays.readyState, WebSocket.OPEN, 'and not cut as "moved"');
  await new Promise<void>((resolve) => stays.send(Buffer.from('released'), () => resolve()));
  t.ok(await eventually(() => desktop.received.some((m) => m.toString() === 'released')), 'carrying bytes');
  ws.terminate();
  stays.terminate();

  const connections = desktop.connections;
  const refused = await upgradeWhile(() => stack.put(held(vnc)));
  t.equal(refused.status, 409, 'held during the check: refused with 409');
  t.match(refused.body ?? '', REFUSAL);
  t.equal(desktop.connections, connections, 'and nothing reached the desktop');
});

t.test('presence: every request let through, and an open WebSocket at each flush with no traffic', async (t) => {
  const desktop = await startRecordingDesktop();
  t.teardown(() => desktop.close());
  const vnc = makeRoute('ann-vnc', desktop.url, { activity: { on: 'input', rfb: 'kasmvnc' } });
  const web = makeRoute('ann-web', desktop.url, { activity: { on: 'traffic' } });
  const stack = await startStack(t, [vnc, web], { redisUrl: redis.url, subscriberOptions: { activityFlushMs: 100 } });
  const presenceOf = async (path: string): Promise<number | undefined> => (await stack.publisher.readPresence()).get(path);

  // HTTP, both kinds of activity: presence either way; activity only where traffic counts.
  const t0 = Date.now();
  t.equal((await send(`${stack.proxy.url}/desktop/ann-vnc/`)).status, 200);
  t.equal((await send(`${stack.proxy.url}/desktop/ann-web/`)).status, 200);
  const vncTimes = await timesOf(stack, 'ann-vnc');
  const webTimes = await timesOf(stack, 'ann-web');
  t.ok(vncTimes.presence! >= t0, 'a page load of a VNC desktop is presence');
  t.equal(vncTimes.activity, undefined, 'but not its activity (input is)');
  t.ok(webTimes.presence! >= t0 && webTimes.activity! >= t0, "a web app's request is both");
  t.equal((await send(`${stack.proxy.url}/desktop/nobody/`)).status, 404);
  t.equal(await presenceOf('nobody'), undefined, 'an unknown desktop is nobody');

  // An open WebSocket that carries nothing: present at each flush (every 100 ms here), no activity.
  const ws = await open(wsUrl(stack, 'ann-vnc'));
  const opened = Date.now();
  await new Promise((r) => setTimeout(r, 350));
  const first = await presenceOf('ann-vnc');
  t.ok(first! >= opened, 'present at a flush after the open, with no byte sent');
  t.ok(await eventually(async () => (await presenceOf('ann-vnc'))! > first!), 'and again at a later flush');
  t.equal((await stack.publisher.readActivity()).get('ann-vnc'), undefined, 'an idle connection is not activity');

  // Closed: presence stays at the last flush it was open for.
  const closed = closeOf(ws);
  ws.close();
  await closed;
  await new Promise((r) => setTimeout(r, 150)); // the proxy has seen the close, a flush has run
  const last = await presenceOf('ann-vnc');
  await new Promise((r) => setTimeout(r, 350));
  t.equal(await presenceOf('ann-vnc'), last, 'nobody connected: presence no longer moves');
});

async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}
