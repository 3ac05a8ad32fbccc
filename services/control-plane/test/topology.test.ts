/**
 * The deployed topology, each service a process of its own as `pnpm start:control-plane` and
 * `pnpm start:proxy` run them: one control plane on Postgres and Redis, two proxy replicas that
 * know routes and revocations only through Redis and hold only the access-token public key.
 * A session made through one replica opens its desktop through both; another user is refused at
 * both; logging out through one replica closes the session's WebSockets at both and voids its
 * token everywhere, including at a replica that starts after the logout.
 */
import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import type WebSocket from 'ws';
import { startRedis } from '@deskhub/testkit/redis';
import { freePort } from '@deskhub/testkit/net';
import { startService, type ServiceProcess } from '@deskhub/testkit/service';
import { databases, echo, tempDir, testEnv, testProcesses, upgradeDesktop, waitFor, type DesktopJson } from './helpers.ts';

const { dir, cleanup } = tempDir('topology');
const redis = await startRedis();
const db = await databases.find((d) => d.name === 'postgres')!.setup();
const keys = generateKeyPairSync('ed25519');
const privatePem = keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
const publicPem = keys.publicKey.export({ format: 'pem', type: 'spki' }).toString();

// Users reach replica A's address (in production a load balancer spreads them over the replicas).
const portA = await freePort();
const publicUrl = `http://127.0.0.1:${portA}`;

const services: ServiceProcess[] = [];
t.teardown(async () => {
  await Promise.all(services.map((s) => s.stop()));
  for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
  await redis.close();
  await db.cleanup();
  cleanup();
});

const controlPlane = await startService({
  entry: 'services/control-plane/src/main.ts',
  readyMessage: 'control plane listening',
  env: testEnv(dir, { ...db.env, REDIS_URL: redis.url, PUBLIC_URL: publicUrl, ACCESS_TOKEN_KEY: privatePem }),
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
