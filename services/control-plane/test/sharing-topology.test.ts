/**
 * Sharing in the deployed topology: one control plane (Postgres, Redis) and two proxy replicas as
 * processes of their own, desktops on origins of their own (DESKTOP_ORIGIN). The public address
 * is `localhost:<port>` (a load balancer's, in production); requests go to either replica with the
 * Host a browser would send. A viewer with WebSockets open at both replicas, and a link holder at
 * one, are shown as connected; revoking the viewer's share through one replica closes the
 * viewer's WebSockets at both within a second of the answer (4001), leaves the others open, and
 * refuses the viewer at both; revoking the link does the same for its holder.
 */
import t from 'tap';
import WebSocket from 'ws';
import { freePort } from '@deskhub/testkit/net';
import { startService } from '@deskhub/testkit/service';
import { cookieOf, hostRequest, startTopologyBase, testEnv, waitFor, type DesktopJson } from './helpers.ts';

const { dir, redis, db, privatePem, publicPem, services } = await startTopologyBase(t, 'sharing-topology');

// What users open; each request below goes to one replica with this Host.
const publicPort = await freePort();
const ui = `localhost:${publicPort}`;
const publicUrl = `http://${ui}`;
const desktopOrigin = `http://*.localhost:${publicPort}`;


const controlPlane = await startService({
  entry: 'services/control-plane/src/main.ts',
  readyMessage: 'control plane listening',
  env: testEnv(dir, { ...db.env, REDIS_URL: redis.url, PUBLIC_URL: publicUrl, DESKTOP_ORIGIN: desktopOrigin, ACCESS_TOKEN_KEY: privatePem }),
});
services.push(controlPlane);
const replicas = await Promise.all(
  [0, 1].map(() =>
    startService({
      entry: 'services/proxy/src/main.ts',
      readyMessage: 'proxy listening',
      env: {
        PORT: '0',
        METRICS_PORT: '0',
        REDIS_URL: redis.url,
        CONTROL_PLANE_URL: String(controlPlane.ready.url),
        PUBLIC_URL: publicUrl,
        DESKTOP_ORIGIN: desktopOrigin,
        AUTH_MODE: 'oidc',
        ACCESS_TOKEN_PUBLIC_KEYS: publicPem,
      },
    }),
  ),
);
services.push(...replicas);
const [portA, portB] = replicas.map((r) => Number(new URL(String(r.ready.url)).port)) as [number, number];

const api = (port: number, path: string, options: { cookie?: string; method?: string; json?: unknown } = {}) => hostRequest(port, ui, path, { ...options, origin: publicUrl });
const signIn = async (username: string) => cookieOf(await api(portA, '/auth/dev-login', { method: 'POST', json: { username } }), 'deskhub_session')!;
const alice = await signIn('alice');
const bob = await signIn('bob');
const carol = await signIn('carol');

const created = JSON.parse((await api(portB, '/api/desktops', { method: 'POST', cookie: alice, json: { type: 'demo' } })).text) as DesktopJson;
const desktop = await waitFor('the demo desktop to run', async () => {
  const d = JSON.parse((await api(portA, `/api/desktops/${created.id}`, { cookie: alice })).text) as DesktopJson;
  if (d.state === 'failed') throw new Error(`failed: ${d.reason}`);
  return d.state === 'running' ? d : undefined;
}, 120_000, 200);
const host = `${desktop.proxyPath}.localhost:${publicPort}`;

/** The hand-off through `port`: the desktop origin's cookie for `session`. */
async function handoff(port: number, session: string): Promise<string> {
  const first = await api(port, `/auth/desktop-handoff?desktop=${desktop.proxyPath}`, { cookie: session });
  if (first.status !== 302) throw new Error(`hand-off: ${first.status} ${first.text}`);
  const to = new URL(first.location!);
  const exchanged = await hostRequest(port, to.host, to.pathname + to.search);
  const cookie = cookieOf(exchanged, '__Host-deskhub_access');
  if (!cookie) throw new Error(`exchange: ${exchanged.status} ${exchanged.text}`);
  return cookie;
}

function openAt(port: number, cookie: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/desktop/${desktop.proxyPath}/websockify`, ['binary'], { headers: { host, cookie }, origin: `http://${host}`, handshakeTimeout: 10_000 });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

const closing = (ws: WebSocket) => new Promise<{ code: number; at: number }>((resolve) => ws.once('close', (code) => resolve({ code, at: Date.now() })));

t.test('revoking through one replica closes exactly that share, at every replica, within a second', async (t) => {
  const share = JSON.parse((await api(portA, `/api/desktops/${desktop.id}/shares`, { method: 'POST', cookie: alice, json: { username: 'bob', mode: 'view' } })).text) as { id: string };
  const link = JSON.parse((await api(portB, `/api/desktops/${desktop.id}/links`, { method: 'POST', cookie: alice, json: {} })).text) as { share: { id: string }; url: string };
  t.equal((await api(portA, '/api/shared/links', { method: 'POST', cookie: carol, json: { secret: link.url.split('/').pop() } })).status, 200, 'carol opens the link');

  const bobCookie = await handoff(portB, bob);
  const carolCookie = await handoff(portA, carol);
  const aliceCookie = await handoff(portA, alice);
  const bobSockets = [await openAt(portA, bobCookie), await openAt(portB, bobCookie)];
  const carolSocket = await openAt(portB, carolCookie);
  const aliceSocket = await openAt(portA, aliceCookie);
  const connected = await waitFor('everyone to show as connected', async () => {
    const view = JSON.parse((await api(portA, `/api/desktops/${desktop.id}/shares`, { cookie: alice })).text) as { connected: Array<{ username: string; role: string }> };
    return view.connected.length === 3 ? view.connected : undefined;
  }, 20_000, 500);
  t.same(connected.map((c) => `${c.username} ${c.role}`), ['alice owner', 'bob view', 'carol view'], 'who has it open, across both replicas');

  const bobClosed = bobSockets.map(closing);
  const revoked = await api(portB, `/api/desktops/${desktop.id}/shares/${share.id}`, { method: 'DELETE', cookie: alice });
  const answeredAt = Date.now();
  t.equal(revoked.status, 204);
  const closes = await Promise.all(bobClosed);
  for (const [i, c] of closes.entries()) {
    t.equal(c.code, 4001, `replica ${'AB'[i]}: bob's WebSocket closed with 4001`);
    t.ok(c.at - answeredAt < 1000, `replica ${'AB'[i]}: within a second of the answer (${c.at - answeredAt} ms)`);
  }
  t.equal(carolSocket.readyState, WebSocket.OPEN, "carol's (the link) stays open");
  const after = JSON.parse((await api(portB, `/api/desktops/${desktop.id}/shares`, { cookie: alice })).text) as { connected: Array<{ username: string; role: string }> };
  t.same(after.connected.map((c) => `${c.username} ${c.role}`), ['alice owner', 'carol view'], 'bob is no longer listed as connected, at once');
  t.equal(aliceSocket.readyState, WebSocket.OPEN, "alice's stays open");
  for (const [name, port] of [['A', portA], ['B', portB]] as const) {
    t.equal((await hostRequest(port, host, `/desktop/${desktop.proxyPath}/`, { cookie: bobCookie })).status, 403, `replica ${name}: bob is refused`);
  }

  const carolClosed = closing(carolSocket);
  t.equal((await api(portA, `/api/desktops/${desktop.id}/shares/${link.share.id}`, { method: 'DELETE', cookie: alice })).status, 204);
  t.equal((await carolClosed).code, 4001, "revoking the link closes carol's");
  t.equal((await hostRequest(portB, host, `/desktop/${desktop.proxyPath}/`, { cookie: carolCookie })).status, 403, 'and refuses her');
  t.equal(aliceSocket.readyState, WebSocket.OPEN, "alice's is still open");
  aliceSocket.close();
});
