/**
 * The deployed topology, each service a process of its own as `pnpm start:control-plane` and
 * `pnpm start:proxy` run them: one control plane on Postgres and Redis, two proxy replicas that
 * know routes and revocations only through Redis and hold only the access-token public key.
 * A session made through one replica opens its desktop through both; another user is refused at
 * both; logging out through one replica closes the session's WebSockets at both and voids its
 * token everywhere, including at a replica that starts after the logout. The idle clocks across
 * replicas: input through A and through B both keep a desktop connected; left alone, its
 * WebSockets at both are closed with the reason and upgrades refused until a keep-alive; a web
 * app's requests count as activity and presence; nobody connected, it is stopped.
 */
import t from 'tap';
import type WebSocket from 'ws';
import { freePort } from '@deskhub/testkit/net';
import { startService, type ServiceProcess } from '@deskhub/testkit/service';
import { appendFileSync } from 'node:fs';
import path from 'node:path';
import { demoMain, echo, repoRoot, startTopologyBase, testEnv, upgradeDesktop, waitFor, type DesktopJson } from './helpers.ts';

const { dir, redis, db, privatePem, publicPem, services } = await startTopologyBase(t, 'topology');

// Users reach replica A's address (in production a load balancer spreads them over the replicas).
const portA = await freePort();
const publicUrl = `http://127.0.0.1:${portA}`;


const cpEnv = testEnv(dir, { ...db.env, REDIS_URL: redis.url, PUBLIC_URL: publicUrl, ACCESS_TOKEN_KEY: privatePem, CLOCKS_INTERVAL_MS: '300' });
// Two types with short clocks (proxies flush activity and presence every 5 s).
appendFileSync(
  cpEnv.CATALOG!,
  `
  - id: idle-demo
    name: Demo with idle clocks
    runtime: process
    command: ["{node}", "--import", "tsx", "${demoMain}"]
    workingDir: ${repoRoot}
    port: 6901
    scheme: https
    verifyTls: false
    credentials: { kind: kasm }
    activity: input
    rfb: standard
    env: { HOST: 127.0.0.1, PORT: "{port}", TLS: "true", DESKTOP_NAME: "{path}", DESKHUB_TEST_RUN: "${path.basename(dir)}" }
    entryQuery: path=desktop/{path}/websockify
    idle: { disconnectAfter: 15s, warn: 8s }
    expire: false

  - id: idle-web
    name: Web app with idle clocks
    runtime: process
    command: ["busybox", "httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "${path.join(dir, 'www')}"]
    port: 80
    activity: traffic
    env: { DESKHUB_TEST_RUN: "${path.basename(dir)}" }
    idle: { disconnectAfter: 15s, warn: 8s }
    expire: { after: 20s, warn: 10s }
`,
);
const controlPlane = await startService({
  entry: 'services/control-plane/src/main.ts',
  readyMessage: 'control plane listening',
  env: cpEnv,
});
services.push(controlPlane);

function startReplica(port: number): Promise<ServiceProcess> {
  return startService({
    entry: 'services/proxy/src/main.ts',
    readyMessage: 'proxy listening',
    env: {
      PORT: String(port),
      METRICS_PORT: '0',
      REDIS_URL: redis.url,
      CONTROL_PLANE_URL: String(controlPlane.ready.url),
      PUBLIC_URL: publicUrl,
      AUTH_MODE: 'dev',
      ACCESS_TOKEN_PUBLIC_KEYS: publicPem,
    },
  });
}
const replicaA = await startReplica(portA);
const replicaB = await startReplica(0);
services.push(replicaA, replicaB);
const urlA = String(replicaA.ready.url);
const urlB = String(replicaB.ready.url);

async function signIn(via: string, username: string): Promise<{ session: string; access: string }> {
  const res = await fetch(`${via}/auth/dev-login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username }) });
  if (res.status !== 200) throw new Error(`dev-login ${username} via ${via}: ${res.status} ${await res.text()}`);
  const cookies = new Map(res.headers.getSetCookie().map((c) => c.split(';')[0]!.split(/=(.*)/s).slice(0, 2) as [string, string]));
  return { session: `deskhub_session=${cookies.get('deskhub_session')}`, access: `deskhub_access=${cookies.get('deskhub_access')}` };
}

/** The socket, or the status the upgrade was refused with. */
async function openSocket(url: string, cookie: string): Promise<WebSocket | number> {
  const { status, ws } = await upgradeDesktop(url, { cookie, origin: publicUrl });
  return status === 'open' ? ws! : status;
}

const alice = await signIn(urlA, 'alice');
const bob = await signIn(urlB, 'bob');

// Created through replica B: the API is the control plane's, whichever replica carries it.
const created = await fetch(`${urlB}/api/desktops`, { method: 'POST', headers: { cookie: alice.session, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'demo' }) });
if (created.status !== 201) throw new Error(`create: ${created.status} ${await created.text()}`);
const desktop = await waitFor(
  'the demo desktop to run',
  async () => {
    const d = (await (await fetch(`${urlA}/api/desktops/${((await created.clone().json()) as DesktopJson).id}`, { headers: { cookie: alice.session } })).json()) as DesktopJson;
    if (d.state === 'failed') throw new Error(`failed: ${d.reason}`);
    return d.state === 'running' ? d : undefined;
  },
  120_000,
  200,
);
const page = `/desktop/${desktop.proxyPath}/`;
const socketPath = `/desktop/${desktop.proxyPath}/websockify`;

t.test('the owner reaches the desktop through every replica; another user through none', async (t) => {
  t.equal(desktop.url.startsWith(`${publicUrl}${page}`), true, 'the desktop URL is on PUBLIC_URL');
  for (const [name, url] of [['A', urlA], ['B', urlB]] as const) {
    const owner = await fetch(`${url}${page}`, { headers: { cookie: alice.access } });
    t.equal(owner.status, 200, `replica ${name}: the owner's page loads`);
    t.match(await owner.text(), /Demo desktop/);
    const other = await fetch(`${url}${page}`, { headers: { cookie: bob.access, accept: 'application/json' } });
    t.equal(other.status, 403, `replica ${name}: another user gets 403`);
    t.equal((await fetch(`${url}${page}`, { headers: { accept: 'application/json' } })).status, 401, `replica ${name}: no token gets 401`);
    t.equal(await openSocket(`${url.replace('http', 'ws')}${socketPath}`, bob.access), 403, `replica ${name}: another user's WebSocket gets 403`);
  }
});

t.test('logout through one replica ends the session at every replica', async (t) => {
  const sockets = await Promise.all([urlA, urlB].map((url) => openSocket(`${url.replace('http', 'ws')}${socketPath}`, alice.access)));
  for (const ws of sockets) {
    if (typeof ws === 'number') throw new Error(`the owner's WebSocket was refused with ${ws}`);
    t.equal(await echo(ws, 'hello'), 'hello', 'the owner has a working WebSocket');
  }
  const closed = sockets.map(
    (ws, i) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`replica ${'AB'[i]}: the session's WebSocket was still open 10 s after logout`)), 10_000);
        (ws as WebSocket).once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      }),
  );

  const out = await fetch(`${urlB}/auth/logout`, { method: 'POST', headers: { cookie: alice.session } });
  t.equal(out.status, 204, 'logged out through replica B');
  await Promise.all(closed);
  t.pass("the session's WebSockets closed at both replicas");
  for (const [name, url] of [['A', urlA], ['B', urlB]] as const) {
    t.equal((await fetch(`${url}${page}`, { headers: { cookie: alice.access, accept: 'application/json' } })).status, 401, `replica ${name}: the old token gets 401`);
    t.equal(await openSocket(`${url.replace('http', 'ws')}${socketPath}`, alice.access), 401, `replica ${name}: a new WebSocket with it gets 401`);
  }

  // A replica that starts after the logout learns of it from Redis, not only from the channel.
  const late = await startReplica(0);
  services.push(late);
  const urlC = String(late.ready.url);
  await waitFor('the late replica to have the route', async () => ((await fetch(`${urlC}${page}`, { headers: { cookie: bob.access, accept: 'application/json' } })).status === 403 ? true : undefined), 15_000);
  t.equal((await fetch(`${urlC}${page}`, { headers: { cookie: alice.access, accept: 'application/json' } })).status, 401, 'a replica started after the logout refuses the token too');
  const again = await signIn(urlC, 'alice');
  t.equal((await fetch(`${urlC}${page}`, { headers: { cookie: again.access } })).status, 200, 'a new sign-in opens the desktop again');
});

t.test('idle clocks across replicas', async (t) => {
  const owner = await signIn(urlA, 'carol');
  const get = async (id: string) => (await (await fetch(`${urlA}/api/desktops/${id}`, { headers: { cookie: owner.session } })).json()) as DesktopJson & { clocks: { disconnected: { reason: string } | null } };
  const launch = async (type: string) => {
    const res = await fetch(`${urlA}/api/desktops`, { method: 'POST', headers: { cookie: owner.session, 'content-type': 'application/json' }, body: JSON.stringify({ type }) });
    if (res.status !== 201) throw new Error(`create ${type}: ${res.status} ${await res.text()}`);
    const id = ((await res.json()) as DesktopJson).id;
    return waitFor(`${type} to run`, async () => {
      const d = await get(id);
      if (d.state === 'failed') throw new Error(`failed: ${d.reason}`);
      return d.state === 'running' ? d : undefined;
    }, 120_000, 200);
  };
  const [demo, web] = await Promise.all([launch('idle-demo'), launch('idle-web')]);
  const sockets = `/desktop/${demo.proxyPath}/websockify`;
  const wsUrl = (url: string) => `${url.replace('http', 'ws')}${sockets}`;
  /** An RFB client as noVNC starts one: version, security type None, ClientInit; then its messages. */
  const rfbClient = async (url: string) => {
    const ws = await openSocket(wsUrl(url), owner.access);
    if (typeof ws === 'number') throw new Error(`the owner's WebSocket was refused with ${ws}`);
    ws.send(Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([1, 1])]));
    return ws;
  };
  const keyPress = (ws: WebSocket) => ws.send(Buffer.from([4, 1, 0, 0, 0, 0, 0, 0x61]));
  const updateRequest = (ws: WebSocket) => ws.send(Buffer.from([3, 1, 0, 0, 0, 0, 0, 100, 0, 100]));
  const closes = (ws: WebSocket) => new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  const a = await rfbClient(urlA);
  const b = await rfbClient(urlB);
  const closedA = closes(a);
  const closedB = closes(b);
  let closedEarly = false;
  void Promise.race([closedA, closedB]).then(() => (closedEarly = true));

  // The web app: a request every 3 s through replica B for 24 s (longer than its expire.after).
  let requests = 0;
  const webPage = `${urlB}/desktop/${web.proxyPath}/`;
  const browsing = setInterval(() => void fetch(webPage, { headers: { cookie: owner.access } }).then((r) => r.arrayBuffer()).then(() => requests++), 3000);

  // 24 s of input (longer than disconnectAfter): the first half through A only, the second through B only;
  // both sockets also send update requests all along, which are not input.
  for (let i = 0; i < 8; i++) {
    keyPress(i < 4 ? a : b);
    updateRequest(a);
    updateRequest(b);
    await new Promise((r) => setTimeout(r, 3000));
  }
  clearInterval(browsing);
  t.notOk(closedEarly, 'input through A, then through B, kept both WebSockets open for 24 s (disconnectAfter is 15 s)');
  t.ok(requests >= 6, `the web app answered ${requests} requests through B`);
  t.equal((await get(web.id)).state, 'running', 'requests kept the web app from expiring (expire.after is 20 s)');

  // Left alone (update requests only): warned, then disconnected at both replicas.
  const quiet = setInterval(() => {
    if (a.readyState === a.OPEN) updateRequest(a);
    if (b.readyState === b.OPEN) updateRequest(b);
  }, 2000);
  t.teardown(() => clearInterval(quiet));
  const [atA, atB] = await Promise.all([closedA, closedB]);
  clearInterval(quiet);
  t.same(atA, { code: 4000, reason: 'Disconnected after 15 seconds without input' }, 'replica A closed its socket with the reason');
  t.same(atB, atA, 'so did replica B');
  const held = await get(demo.id);
  t.equal(held.state, 'running', 'the desktop keeps running');
  t.equal(held.clocks.disconnected?.reason, 'Disconnected after 15 seconds without input');
  const events = (await (await fetch(`${urlA}/api/desktops/${demo.id}/events`, { headers: { cookie: owner.session } })).json()) as Array<{ kind: string; message: string }>;
  t.ok(events.some((e) => e.kind === 'clock' && /^Disconnects in/.test(e.message)), 'a warning came first');
  for (const url of [urlA, urlB]) t.equal(await openSocket(wsUrl(url), owner.access), 409, `a new WebSocket through ${url === urlA ? 'A' : 'B'} is refused until it is re-armed`);

  const kept = await fetch(`${urlB}/api/desktops/${demo.id}/keepalive`, { method: 'POST', headers: { cookie: owner.session } });
  t.equal(kept.status, 200, 'keepalive re-arms it');
  const again = await waitFor('a WebSocket through A to open again', async () => {
    const ws = await openSocket(wsUrl(urlA), owner.access);
    return typeof ws === 'number' ? undefined : ws;
  }, 15_000, 250);
  t.equal(await echo(again, 'back'), 'back', 'the stream works again');
  again.close();

  // Nobody has requested the web app since: stopped after expire.after.
  const stopped = await waitFor('the web app to be stopped', async () => {
    const d = await get(web.id);
    return d.state === 'stopped' ? d : undefined;
  }, 45_000, 500);
  t.equal(stopped.reason, 'Stopped: nobody was connected for 20 seconds');
});
