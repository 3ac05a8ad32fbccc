// End to end with Docker: the whole of deskhub in this process (control plane + proxy + route
// stream, real Postgres) with the Docker runtime. A kasm-test desktop created through the API
// is reached through the proxy (page and WebSocket echo); then the real desktop image is opened
// through the proxy in headless Chromium, which must show noVNC "Connected" and a desktop, count
// its input, and live by the idle clocks: typing keeps it connected, left alone it is warned then
// disconnected (the desktop keeps running), a keep-alive brings the stream back, and with no page
// open it is stopped.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import WebSocket from 'ws';
import { buildImage, desktopDiagnostics, startDockerDeskhub } from './docker-helpers.ts';
import { waitFor } from './helpers.ts';
import { openNoVnc, screenshotDesktop } from './docker-browser.ts';
import { launchIsolatedChromium } from './isolated-browser.ts';

await buildImage('kasm-test');
await buildImage('desktop');

// A known port, so PUBLIC_URL (default http://127.0.0.1:PORT) is where the proxy really is: the
// URLs the API returns and the Origin the proxy expects are then the real ones.
const { deskhub, runtime, base, signIn, api } = await startDockerDeskhub(t, 'docker-e2e', {
  // The idle clocks, short, for every type (the real-browser check below).
  IDLE_DISCONNECT_AFTER: '40s',
  IDLE_WARN: '20s',
  EXPIRE_AFTER: '40s',
  EXPIRE_WARN: '20s',
  CLOCKS_INTERVAL_MS: '1000',
  ACTIVITY_INTERVAL_MS: '1000',
});
t.equal(deskhub.publicUrl, base, 'PUBLIC_URL is the proxy');

interface DesktopView {
  id: string;
  type: string;
  proxyPath: string;
  url: string;
  state: string;
  reason?: string | null;
}

/** Polls the API until the desktop is running or has failed. */
function waitUntilRunning(cookie: string, id: string): Promise<DesktopView> {
  return waitFor(`desktop ${id} running or failed`, async () => {
    const view = (await api<DesktopView>(cookie, 'GET', `/api/desktops/${id}`)).body;
    return view.state === 'running' || view.state === 'failed' ? view : undefined;
  }, 120_000, 250);
}


t.test('a kasm-test desktop created through the API answers through the proxy', async (t) => {
  const cookie = await signIn('alice');
  const created = await api<DesktopView>(cookie, 'POST', '/api/desktops', { type: 'kasm-test' });
  t.equal(created.status, 201, JSON.stringify(created.body));
  t.equal(created.body.proxyPath, 'alice-kasm-test');
  const view = await waitUntilRunning(cookie, created.body.id);
  t.equal(view.state, 'running', view.reason ?? '');

  const [container] = (await runtime.list()).filter((s) => s.desktopId === created.body.id);
  t.ok(container?.running, 'a container labelled with the desktop runs');
  const info = await runtime.docker.getContainer(container!.runtimeId).inspect();
  t.equal(info.Config.Labels['deskhub.path'], 'alice-kasm-test');
  t.equal(info.HostConfig.NetworkMode, runtime.networkName);

  const page = await fetch(view.url, { headers: { cookie } });
  t.equal(page.status, 200);
  t.match(await page.text(), /<h1>Demo desktop/, "the container's page, through the proxy");

  const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/desktop/alice-kasm-test/websockify`, ['binary'], { headers: { cookie, origin: base } });
  const echoed = await new Promise<string>((resolve, reject) => {
    ws.on('open', () => ws.send('hello through deskhub'));
    ws.on('message', (data) => resolve(String(data)));
    ws.on('error', reject);
    ws.on('unexpected-response', (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)));
  });
  ws.close();
  t.equal(echoed, 'hello through deskhub');

  // Removed outside deskhub: the route goes away and the desktop is no longer running.
  await runtime.docker.getContainer(container!.runtimeId).remove({ force: true });
  const after = await waitFor('the desktop to stop running after docker rm -f', async () => {
    const view = (await api<DesktopView>(cookie, 'GET', `/api/desktops/${created.body.id}`)).body;
    return view.state !== 'running' ? view : undefined;
  }, 30_000, 250);
  t.not(after.state, 'running', `state after docker rm -f: ${after.state} (${after.reason ?? ''})`);
  const gone = await fetch(view.url, { headers: { cookie } });
  t.not(gone.status, 200, `the proxy no longer forwards (${gone.status})`);

  t.equal((await api(cookie, 'DELETE', `/api/desktops/${created.body.id}`)).status, 204);
});

t.test('the real desktop image, through the API and the proxy, in headless Chromium', async (t) => {
  const cookie = await signIn('bob');
  const created = await api<DesktopView>(cookie, 'POST', '/api/desktops', { type: 'desktop' });
  t.equal(created.status, 201, JSON.stringify(created.body));
  const view = await waitUntilRunning(cookie, created.body.id);
  t.equal(view.state, 'running', view.reason ?? '');
  t.match(view.url, /\/desktop\/bob-desktop\/\?path=desktop\/bob-desktop\/websockify/);

  // In a network namespace of its own: containers other tests start must not cut this page's
  // WebSocket (Chromium cuts open connections when the host's interfaces change).
  const { browser, close: closeBrowser } = await launchIsolatedChromium(mkdtempSync(path.join(os.tmpdir(), 'deskhub-browser-')), [Number(new URL(base).port)]);
  t.teardown(closeBrowser);
  // No certificate exception and no HTTP credentials: the proxy injects the desktop's password.
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  // Every WebSocket close the page sees, with its code and reason (the proxy's idle disconnect says why).
  await context.addInitScript(`
    window.__closes = [];
    (() => {
      // A factory returning the native socket (noVNC refuses a subclass: "Raw channel missing property").
      const Native = window.WebSocket;
      const Recording = function (...args) {
        const ws = new Native(...args);
        ws.addEventListener('close', (e) => window.__closes.push({ code: e.code, reason: e.reason }));
        return ws;
      };
      Recording.prototype = Native.prototype;
      for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Recording[k] = Native[k];
      window.WebSocket = Recording;
    })();
  `);
  const page = await context.newPage();
  // What the page said, for a failure's diagnosis.
  const consoleLines: string[] = [];
  page.on('console', (m) => void consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => void consoleLines.push(`pageerror: ${e.message}`));
  t.teardown(() => {
    if (t.passing()) return;
    t.comment(`the page's console:\n${consoleLines.slice(-40).join('\n')}`);
  });
  await page.goto(`${base}/`);
  const login = await page.request.post(`${base}/auth/dev-login`, { data: { username: 'bob' }, headers: { origin: base } });
  t.ok(login.ok(), `browser signed in (${login.status()})`);
  const { status, networkChanges } = await openNoVnc(page, view.url, { timeoutMs: 90_000 });
  if (networkChanges > 0) t.comment(`noVNC reloaded ${networkChanges} time(s) after Chromium saw the host's network change (Docker interfaces)`);
  t.match(status, /^Connected/, status);
  const shot = await screenshotDesktop(page, 'docker-e2e-desktop.png');
  let diagnostics = '';
  if (shot.colours < 1000) {
    const [container] = (await runtime.list()).filter((s) => s.desktopId === created.body.id);
    diagnostics = container ? `\n${await desktopDiagnostics(runtime.docker, container.runtimeId)}` : ' (no container)';
  }
  t.ok(shot.colours >= 1000, `the screenshot has ${shot.colours} distinct colours (saved at ${shot.file})${diagnostics}`);

  // Idle on input, with the real noVNC client and x11vnc (standard RFB): an open page that nobody
  // touches sends update requests all the time, and they are not input; a mouse movement and a
  // key press are. Activity reaches the database within a flush (5 s) and a reconcile (1 s).
  const lastActivity = async (): Promise<string | null> => (await api<DesktopView & { lastActivityAt: string | null; activity: string }>(cookie, 'GET', `/api/desktops/${created.body.id}`)).body.lastActivityAt;
  t.equal((await api<DesktopView & { activity: string }>(cookie, 'GET', `/api/desktops/${created.body.id}`)).body.activity, 'input', 'the desktop type counts input');
  // Whatever the connection's start left (a browser may send one pointer event when the layout
  // changes) has reached the database after 8 s; the next 8 s of an untouched page must not move it.
  await new Promise((r) => setTimeout(r, 8000));
  const settled = await lastActivity();
  await new Promise((r) => setTimeout(r, 8000));
  t.equal(await lastActivity(), settled, `an open page nobody touches is not activity: update requests and keep-alives for 8 s leave it at ${settled}`);
  const canvas = await page.locator('canvas').first().boundingBox();
  t.ok(canvas, 'the noVNC canvas is there');
  const before = Date.now();
  await page.mouse.move(canvas!.x + 100, canvas!.y + 100);
  await page.mouse.move(canvas!.x + 200, canvas!.y + 150);
  await page.keyboard.press('a');
  const seen = await waitFor('the input to reach lastActivityAt', async () => {
    const at = await lastActivity();
    return at !== null && at !== settled ? at : undefined;
  }, 30_000, 500);
  t.ok(Date.parse(seen) >= before - 1000 && seen !== settled, `a mouse movement and a key press are activity (${seen})`);

  // The idle clocks (40 s without input while connected: disconnect; 40 s with nobody connected: stop).
  type Clocked = DesktopView & { clocks: { disconnected: { reason: string } | null; deadlines: Array<{ clock: string; at: string; warnAt: string }> } };
  const current = async () => (await api<Clocked>(cookie, 'GET', `/api/desktops/${created.body.id}`)).body;
  const closes = () => page.evaluate('window.__closes') as Promise<Array<{ code: number; reason: string }>>;
  for (let i = 0; i < 10; i++) {
    await page.mouse.move(canvas!.x + 100 + i * 20, canvas!.y + 120);
    await page.keyboard.press('b');
    await new Promise((r) => setTimeout(r, 5000));
  }
  t.same(await closes(), [], 'typing and moving the mouse for 50 s kept the stream connected (disconnectAfter is 40 s)');
  t.match(await page.locator('#noVNC_status').textContent(), /^Connected/);

  let warned = false;
  const held = await waitFor('the untouched page to be disconnected', async () => {
    const d = await current();
    const idle = d.clocks.deadlines.find((x) => x.clock === 'idle');
    if (idle && Date.parse(idle.warnAt) <= Date.now()) warned = true;
    return d.clocks.disconnected ? d : undefined;
  }, 90_000, 500);
  t.ok(warned, 'the API showed the idle warning before the disconnect');
  t.equal(held.state, 'running', 'the desktop keeps running');
  t.equal(held.clocks.disconnected!.reason, 'Disconnected after 40 seconds without input');
  const closed = await waitFor('the page to see its WebSocket closed', async () => ((await closes()).length > 0 ? closes() : undefined), 15_000, 250);
  t.same(closed[0], { code: 4000, reason: 'Disconnected after 40 seconds without input' }, 'the browser got a close frame with the reason');
  const [container] = (await runtime.list()).filter((s) => s.desktopId === created.body.id);
  t.ok(container?.running, 'its container still runs');

  t.equal((await api(cookie, 'POST', `/api/desktops/${created.body.id}/keepalive`)).status, 200);
  t.match((await openNoVnc(page, view.url, { timeoutMs: 60_000 })).status, /^Connected/, 'after a keep-alive the page connects again');

  await page.close();
  const stopped = await waitFor('the desktop with no page open to be stopped', async () => {
    const d = await current();
    return d.state === 'stopped' ? d : undefined;
  }, 120_000, 1000);
  t.equal(stopped.reason, 'Stopped: nobody was connected for 40 seconds');
  t.notOk((await runtime.list()).find((s) => s.desktopId === created.body.id)?.running, 'its container is stopped');

  t.equal((await api(cookie, 'DELETE', `/api/desktops/${created.body.id}`)).status, 204);
  await waitFor('its container to be removed', async () => ((await runtime.list()).some((s) => s.desktopId === created.body.id) ? undefined : true), 30_000, 250);
  t.notOk((await runtime.list()).some((s) => s.desktopId === created.body.id), 'its container is removed');
});
