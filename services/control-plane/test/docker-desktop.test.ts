// The real desktop image (deskhub/desktop:local) run by the Docker runtime: the Kasm contract
// checked at the container (401 without credentials, 200 with, TLS only, a WebSocket speaking
// RFB), then the noVNC page opened in headless Chromium straight at the container, waiting for
// "Connected" and checking the screenshot shows a desktop. (The same through the API and the
// proxy is in docker-e2e.test.ts.)
import t from 'tap';
import { request } from 'node:http';
import WebSocket from 'ws';
import { basicAuth, desktopDiagnostics, httpsGet, startDesktopImage } from './docker-helpers.ts';
import { launchChromium, openNoVnc, screenshotDesktop } from './docker-browser.ts';

const { runtime, desktop, password, host, port } = await startDesktopImage(t);

t.test('the desktop keeps the Kasm contract', async (t) => {
  const denied = await httpsGet(host, port, '/');
  t.equal(denied.status, 401, 'no credentials: 401');
  t.match(denied.headers['www-authenticate'], /^Basic/);
  t.equal((await httpsGet(host, port, '/', basicAuth('wrong-password'))).status, 401, 'wrong password: 401');
  const page = await httpsGet(host, port, '/', basicAuth(password));
  t.equal(page.status, 200);
  t.match(page.body, /noVNC/);
  t.equal((await httpsGet(host, port, '/vnc.html', basicAuth(password))).status, 200);

  const plain = await new Promise<string>((resolve) => {
    const req = request({ host, port, path: '/', timeout: 5000 }, (res) => resolve(`status ${res.statusCode}`));
    req.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code ?? e.message}`));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
  t.notMatch(plain, /^status 200/, `plain HTTP is refused (${plain})`);

  const ws = new WebSocket(`wss://${host}:${port}/websockify`, ['binary'], {
    rejectUnauthorized: false,
    headers: { authorization: basicAuth(password), origin: `https://${host}:${port}` },
  });
  const first = await new Promise<{ protocol: string; data: string }>((resolve, reject) => {
    ws.on('message', (data: Buffer) => resolve({ protocol: ws.protocol, data: data.toString('latin1') }));
    ws.on('error', reject);
  });
  ws.close();
  t.equal(first.protocol, 'binary');
  t.match(first.data, /^RFB 003\.00\d/, 'the VNC server speaks RFB through websockify');
});

t.test('noVNC connects in headless Chromium and shows a desktop', async (t) => {
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, // reached directly: the container's certificate is self-signed
    httpCredentials: { username: 'kasm_user', password },
    viewport: { width: 1280, height: 720 },
  });
  const page = await context.newPage();
  const { status, networkChanges } = await openNoVnc(page, `https://${host}:${port}/?path=websockify&autoconnect=true&resize=remote`);
  if (networkChanges > 0) t.comment(`noVNC reloaded ${networkChanges} time(s) after Chromium saw the host's network change (Docker interfaces)`);
  t.match(status, /^Connected/);
  const shot = await screenshotDesktop(page, 'docker-desktop-direct.png');
  const diagnostics = shot.colours >= 1000 ? '' : `\n${await desktopDiagnostics(runtime.docker, desktop.runtimeId)}`;
  t.ok(shot.colours >= 1000, `the screenshot has ${shot.colours} distinct colours (saved at ${shot.file})${diagnostics}`);
});

t.test('stop and remove', async (t) => {
  await runtime.stop(desktop.runtimeId);
  t.match(await runtime.inspect(desktop.runtimeId), { running: false });
  await runtime.remove(desktop.runtimeId);
  t.equal(await runtime.inspect(desktop.runtimeId), null);
});
