import t from 'tap';
import { request } from 'node:https';
import WebSocket from 'ws';
import { isOwnerApi, startDemoDesktop } from '../src/index.ts';

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { rejectUnauthorized: false, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('speaks the Kasm contract: TLS, basic auth, WebSocket echo', async (t) => {
  const d = await startDemoDesktop({ name: 'alice-demo', tls: true, password: 'secret-pw' });
  t.teardown(() => d.close());
  const auth = 'Basic ' + Buffer.from('kasm_user:secret-pw').toString('base64');

  const anon = await get(d.url + '/');
  t.equal(anon.status, 401);
  t.match(anon.headers['www-authenticate'], /^Basic/);

  const ok = await get(d.url + '/', { authorization: auth });
  t.equal(ok.status, 200);
  t.match(ok.body, /Demo desktop <span id="name">alice-demo<\/span>/);
  t.equal(ok.headers['cross-origin-embedder-policy'], 'require-corp');

  const ws = new WebSocket(d.url.replace('https', 'wss') + '/any/path/websockify', ['base64', 'binary'], {
    rejectUnauthorized: false,
    headers: { authorization: auth },
    origin: 'https://example.test',
  });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  t.equal(ws.protocol, 'binary');
  const reply = new Promise<string>((resolve) => ws.once('message', (m) => resolve(m.toString())));
  ws.send('ping');
  t.equal(await reply, 'ping');
  ws.close();

  const noOrigin = new WebSocket(d.url.replace('https', 'wss') + '/websockify', { rejectUnauthorized: false, headers: { authorization: auth } });
  const status = await new Promise<number>((resolve) => noOrigin.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)));
  t.equal(status, 404, 'no Origin, no WebSocket (KasmVNC #205)');
});

t.test("Kasm's two users: kasm_viewer has the owner's password, everything but the owner API", async (t) => {
  const d = await startDemoDesktop({ name: 'bob-demo', tls: true, password: 'secret-pw' });
  t.teardown(() => d.close());
  const as = (user: string, password = 'secret-pw') => ({ authorization: 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64') });

  t.equal((await get(d.url + '/', as('kasm_viewer', 'wrong-pw'))).status, 401, 'kasm_viewer, wrong password: 401');
  t.equal((await get(d.url + '/', as('someone'))).status, 401, 'another user with the right password: 401');
  t.equal((await get(d.url + '/', as('kasm_viewer'))).status, 200, 'kasm_viewer gets the page');

  for (const user of ['kasm_user', 'kasm_viewer']) {
    const echo = await get(d.url + '/__echo', as(user));
    t.equal(echo.headers['x-echo-user'], user, `/__echo names ${user}`);
  }

  const api = await get(d.url + '/api/get_screenshot?width=100', as('kasm_user'));
  t.equal(api.status, 200, 'kasm_user: /api/ answers');
  t.same(JSON.parse(api.body), { user: 'kasm_user', api: '/api/get_screenshot' });
  for (const path of ['/api/get_screenshot', '/api', '//api/x', '/%61pi/x', '/./api/x', '/x/../api/y']) {
    const refused = await get(d.url + path, as('kasm_viewer'));
    t.equal(refused.status, 403, `kasm_viewer: ${path} refused`);
    t.same(JSON.parse(refused.body), { user: 'kasm_viewer', error: 'the API is for the owner only' });
  }
  t.equal((await get(d.url + '/apiary', as('kasm_viewer'))).status, 404, '/apiary is not the API');

  const ws = new WebSocket(d.url.replace('https', 'wss') + '/websockify', ['binary'], {
    rejectUnauthorized: false,
    headers: as('kasm_viewer'),
    origin: 'https://example.test',
  });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const reply = new Promise<string>((resolve) => ws.once('message', (m) => resolve(m.toString())));
  ws.send('viewer ping');
  t.equal(await reply, 'viewer ping', "kasm_viewer's WebSocket works like the owner's");
  ws.close();

  const refused = new WebSocket(d.url.replace('https', 'wss') + '/websockify', {
    rejectUnauthorized: false,
    headers: as('kasm_viewer', 'wrong-pw'),
    origin: 'https://example.test',
  });
  const status = await new Promise<number>((resolve) => refused.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)));
  t.equal(status, 401, 'a WebSocket with the wrong password: 401');
});

t.test('without a password there are no users: everything is open, /__echo names nobody', async (t) => {
  const d = await startDemoDesktop({ name: 'open-demo', tls: true });
  t.teardown(() => d.close());
  t.equal((await get(d.url + '/')).status, 200);
  t.equal((await get(d.url + '/__echo')).headers['x-echo-user'], '');
  t.equal((await get(d.url + '/api/get_screenshot')).status, 200, 'the API too (no viewer to refuse)');
});

t.test('the owner API is /api and below, however the request spells the path', async (t) => {
  // Raw request targets, as a client that does not normalise them would send them.
  for (const path of ['/api', '/api/', '/api/get_screenshot?x=1', '//api/x', '/./api/x', '/x/../api/y', '/%2e/api', '/%61pi/x', '/api#x']) {
    t.ok(isOwnerApi(path), path);
  }
  for (const path of ['/', '/apiary', '/x/api/y', '/?/api/', '/__echo', '/%zz/api']) t.notOk(isOwnerApi(path), path);
});
