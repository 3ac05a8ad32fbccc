// Sharing the real X desktop in a real browser (Debian's Chromium), with Docker and desktops on
// origins of their own (DESKTOP_ORIGIN=http://*.localhost:<port>, UI on http://localhost:<port>).
// Alice opens her desktop and shares it with Bob for viewing; Bob opens it from his own browser
// through the hand-off and sees it. What Bob types and clicks changes nothing (the desktop's
// read-only user, and the proxy's filter behind it), while Alice's typing runs; the owner API and
// the owner's Downloads answer 403 to Bob and not to Alice; revoking closes Bob's stream at once.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import type { Page } from 'playwright-core';
import { buildImage, desktopDiagnostics, execIn, startDockerDeskhub } from './docker-helpers.ts';
import { cookieOf, hostRequest, waitFor } from './helpers.ts';
import { openNoVnc, screenshotDesktop } from './docker-browser.ts';
import { launchIsolatedChromium } from './isolated-browser.ts';

await buildImage('desktop');

t.test('a desktop shared for viewing, in a real browser', async (t) => {
  let port = 0;
  const { runtime } = await startDockerDeskhub(t, 'docker-sharing', (p) => {
    port = p;
    return { PUBLIC_URL: `http://localhost:${p}`, DESKTOP_ORIGIN: `http://*.localhost:${p}` };
  });
  const ui = `localhost:${port}`;
  const uiOrigin = `http://${ui}`;
  const api = async <T>(cookie: string, method: string, path: string, json?: unknown): Promise<{ status: number; body: T }> => {
    const answer = await hostRequest(port, ui, path, { cookie, method, origin: uiOrigin, ...(json === undefined ? {} : { json }) });
    return { status: answer.status, body: (answer.text ? JSON.parse(answer.text) : null) as T };
  };
  const signIn = async (username: string) => cookieOf(await hostRequest(port, ui, '/auth/dev-login', { method: 'POST', origin: uiOrigin, json: { username } }), 'deskhub_session')!;

  interface DesktopView {
    id: string;
    proxyPath: string;
    url: string;
    openUrl: string;
    state: string;
    reason?: string | null;
  }

  const alice = await signIn('alice');
  const bob = await signIn('bob');
  const created = await api<DesktopView>(alice, 'POST', '/api/desktops', { type: 'desktop' });
  t.equal(created.status, 201);
  const desktop = await waitFor('the desktop to run', async () => {
    const view = (await api<DesktopView>(alice, 'GET', `/api/desktops/${created.body.id}`)).body;
    if (view.state === 'failed') throw new Error(`failed: ${view.reason}`);
    return view.state === 'running' ? view : undefined;
  }, 180_000, 500);
  const [container] = (await runtime.list()).filter((s) => s.desktopId === desktop.id);
  t.teardown(async () => {
    if (t.passing()) return;
    console.error(await desktopDiagnostics(runtime.docker, container!.runtimeId).catch((e: Error) => e.message));
  });
  const shared = await api<{ id: string }>(alice, 'POST', `/api/desktops/${desktop.id}/shares`, { username: 'bob', mode: 'view' });
  t.equal(shared.status, 201, JSON.stringify(shared.body));
  const [forBob] = (await api<Array<{ openUrl: string; mode: string }>>(bob, 'GET', '/api/shared')).body;
  t.equal(forBob?.mode, 'view');

  // In a network namespace of its own: containers other tests start must not cut this page's
  // WebSocket (Chromium cuts open connections when the host's interfaces change).
  const { browser, close: closeBrowser } = await launchIsolatedChromium(mkdtempSync(path.join(os.tmpdir(), 'deskhub-browser-')), [port]);
  t.teardown(closeBrowser);
  /** A browser context signed in as `session` (the UI's cookie, on the UI's host only). */
  async function pageFor(session: string): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const [name, value] = session.split('=') as [string, string];
    await context.addCookies([{ name, value, domain: 'localhost', path: '/', httpOnly: true, sameSite: 'Lax' }]);
    return context.newPage();
  }
  const alicePage = await pageFor(alice);
  const bobPage = await pageFor(bob);

  const typedFiles = async () => (await execIn(runtime.docker, container!.runtimeId, ['sh', '-c', 'cd "$HOME" && ls typed-* 2>/dev/null || true'])).split(/\s+/).filter(Boolean).sort();

  t.test('both open it through the hand-off, on its own origin', async (t) => {
    await openNoVnc(alicePage, desktop.openUrl);
    t.equal(new URL(alicePage.url()).host, `alice-desktop.localhost:${port}`, "alice's page is on the desktop's origin");
    await openNoVnc(bobPage, forBob!.openUrl);
    t.equal(new URL(bobPage.url()).host, `alice-desktop.localhost:${port}`, "and so is bob's");
    const shot = await screenshotDesktop(bobPage, 'docker-sharing-viewer.png');
    t.ok(shot.colours >= 1000, `bob sees the desktop (${shot.colours} colours, ${shot.file})`);
    const cookies = await bobPage.context().cookies(`http://alice-desktop.localhost:${port}`);
    t.match(cookies.map((c) => `${c.name} ${c.sameSite} ${c.secure} ${c.httpOnly}`), ['__Host-deskhub_access None true true'], "the desktop's origin holds its own access cookie, and no session");
  });

  t.test("bob's typing and clicks change nothing; alice's run", async (t) => {
    const canvas = async (page: Page) => (await page.locator('canvas').first().boundingBox())!;
    const a = await canvas(alicePage);
    const b = await canvas(bobPage);
    // The xterm sits at 40,40 on the remote screen; its shell must be ready and focused.
    await waitFor('alice\'s "touch typed-by-owner-1"', async () => {
      if ((await typedFiles()).includes('typed-by-owner-1')) return true;
      await alicePage.mouse.click(a.x + 200, a.y + 120);
      await alicePage.keyboard.type('touch typed-by-owner-1\n');
      return undefined;
    }, 60_000, 2000);
    await bobPage.mouse.click(b.x + 600, b.y + 400);
    await bobPage.mouse.click(b.x + 200, b.y + 120);
    await bobPage.keyboard.type('touch typed-by-viewer\n');
    await bobPage.waitForTimeout(2000);
    await alicePage.keyboard.type('touch typed-by-owner-2\n');
    await waitFor('alice\'s "touch typed-by-owner-2"', async () => ((await typedFiles()).includes('typed-by-owner-2') ? true : undefined), 20_000, 250);
    t.same(await typedFiles(), ['typed-by-owner-1', 'typed-by-owner-2'], 'only what alice typed ran');
  });

  t.test("the owner API and the owner's Downloads are alice's alone", async (t) => {
    await execIn(runtime.docker, container!.runtimeId, ['sh', '-c', 'echo "alice only" > "$HOME/Downloads/secret.txt"']);
    const fetchStatus = (page: Page, path: string) => page.evaluate(async (p) => {
      const res = await fetch(p);
      return `${res.status} ${res.status === 200 ? (await res.text()).trim() : ''}`.trim();
    }, path);
    t.equal(await fetchStatus(bobPage, '/desktop/alice-desktop/api/get_screenshot'), '403', 'the owner API refuses bob');
    t.equal(await fetchStatus(bobPage, '/desktop/alice-desktop/Downloads/Downloads/secret.txt'), '403', "alice's Downloads refuse bob");
    t.equal(await fetchStatus(bobPage, '/desktop/alice-desktop/%44ownloads/Downloads/secret.txt'), '403', 'however it is spelt');
    t.equal(await fetchStatus(alicePage, '/desktop/alice-desktop/Downloads/Downloads/secret.txt'), '200 alice only', 'alice fetches her file');
    t.match(await fetchStatus(alicePage, '/desktop/alice-desktop/api/get_screenshot'), /^200/, 'and reaches her desktop\'s API');
  });

  t.test("revoking closes bob's stream at once and refuses him", async (t) => {
    const revoked = await api(alice, 'DELETE', `/api/desktops/${desktop.id}/shares/${shared.body.id}`);
    t.equal(revoked.status, 204);
    // Revoked (a clean close, 4001): noVNC leaves the connected state at once; with reconnect=true
    // it tries again after its delay and the proxy refuses it, which it reports as a failure.
    type Doc = { documentElement: { classList: { contains(c: string): boolean } }; getElementById(id: string): { textContent: string | null } | null };
    await bobPage.waitForFunction(() => !(globalThis as unknown as { document: Doc }).document.documentElement.classList.contains('noVNC_connected'), undefined, { timeout: 2000, polling: 50 });
    t.pass("bob's noVNC left the connected state within 2 s");
    const status = await bobPage.waitForFunction(() => {
      const text = (globalThis as unknown as { document: Doc }).document.getElementById('noVNC_status')?.textContent ?? '';
      return /failed|disconnect|went wrong/i.test(text) ? text : false;
    }, undefined, { timeout: 20_000, polling: 200 });
    t.match(String(await status.jsonValue()), /failed|disconnect|went wrong/i, `and its reconnect is refused: ${String(await status.jsonValue())}`);
    const reload = await bobPage.goto(`http://alice-desktop.localhost:${port}/desktop/alice-desktop/`);
    t.equal(reload?.status(), 403, 'a reload is refused');
    t.match(await alicePage.evaluate(() => (globalThis as unknown as { document: { getElementById(id: string): { textContent: string | null } | null } }).document.getElementById('noVNC_status')?.textContent ?? ''), /^Connected/, "alice's stays connected");
  });
});
