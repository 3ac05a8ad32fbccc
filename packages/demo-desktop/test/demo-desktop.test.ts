import t from 'tap';
import { request } from 'node:https';
import WebSocket from 'ws';
import { startDemoDesktop } from '../src/index.ts';

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
