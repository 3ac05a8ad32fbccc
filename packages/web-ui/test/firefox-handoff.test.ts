/**
 * The hand-off and its renewal frame in Firefox (Debian's firefox-esr, headless, driven over
 * WebDriver BiDi by puppeteer-core; no browser is downloaded), beside Chromium's sharing-e2e:
 * Firefox keeps third-party cookies apart by its own rules (Total Cookie Protection), so the
 * `__Host-`, `SameSite=None; Secure; Partitioned` cookie a desktop origin sets inside the UI's
 * page is checked here too. alice opens her demo desktop in the UI: its document is on
 * http://<path>.localhost:<port> and its WebSocket answers; past the first cookie's lifetime the
 * renewal frame has renewed it, and a new WebSocket from inside the desktop's frame gets in.
 * Skips, saying why, without firefox-esr (FIREFOX_PATH) or the embedded start.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import puppeteer, { type Frame, type Page } from 'puppeteer-core';
import t from 'tap';
import { artifacts, embeddedMissing, startDeskhub } from './embedded-deskhub.ts';

const FIREFOX = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr';
const WAIT_MS = 60_000;
const ACCESS_LIFETIME_S = 16;

const missing = embeddedMissing() ?? (!existsSync(FIREFOX) ? `${FIREFOX} is not installed (apt-get install firefox-esr)` : null);
if (missing) t.skip(`the hand-off in Firefox: ${missing}`, () => {});
else await main();

async function main(): Promise<void> {
  const deskhub = await startDeskhub({ desktopOrigins: true, env: { ACCESS_TOKEN_LIFETIME_S: String(ACCESS_LIFETIME_S) } });
  const { base, originOf } = deskhub;
  t.setTimeout(180_000);
  t.teardown(() => deskhub.close());

  t.test('Firefox: a desktop on its own origin, through the hand-off, renewed by the frame', async (t) => {
    await deskhub.ready(WAIT_MS);
    const browser = await puppeteer.launch({
      browser: 'firefox',
      protocol: 'webDriverBiDi',
      executablePath: FIREFOX,
      headless: true,
      // Nothing but this deskhub: no update, telemetry, captive-portal or safe-browsing requests.
      extraPrefsFirefox: {
        'network.captive-portal-service.enabled': false,
        'network.connectivity-service.enabled': false,
        'browser.safebrowsing.malware.enabled': false,
        'browser.safebrowsing.phishing.enabled': false,
        'datareporting.healthreport.uploadEnabled': false,
        'app.update.enabled': false,
      },
    });
    t.teardown(() => browser.close());
    const page: Page = await browser.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(String(err)));
    const started = Date.now();

    await page.goto(`${base}/`);
    await page.waitForSelector('#dev-username');
    await page.type('#dev-username', 'alice');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#whoami');
    const desktop = await page.evaluate(async () => {
      const res = await fetch('/api/desktops', { method: 'POST', headers: { 'content-type': 'application/json', 'x-deskhub-csrf': '1' }, body: JSON.stringify({ type: 'demo' }) });
      return (await res.json()) as { id: string; proxyPath: string };
    });
    for (let i = 0; ; i++) {
      const state = await page.evaluate(async (id) => ((await (await fetch(`/api/desktops/${id}`)).json()) as { state: string }).state, desktop.id);
      if (state === 'running') break;
      if (state === 'failed' || i > 200) throw new Error(`the demo desktop did not start (${state}):\n${deskhub.output()}`);
      await sleep(300);
    }
    const path = desktop.proxyPath;

    await page.goto(`${base}/desktops/${desktop.id}`);
    await page.waitForSelector('iframe.viewer-frame');
    const desktopFrame = async (): Promise<Frame> => {
      for (let i = 0; i < 100; i++) {
        const frame = page.frames().find((f) => f.url().startsWith(`${originOf(path)}/desktop/${path}/`));
        if (frame) return frame;
        await sleep(100);
      }
      throw new Error(`no frame on ${originOf(path)} (frames: ${page.frames().map((f) => f.url()).join(', ')})`);
    };
    const frame = await desktopFrame();
    t.pass(`the desktop's document is on its own origin (${new URL(frame.url()).origin})`);
    await frame.waitForFunction(() => (globalThis as any).document.getElementById('status')?.textContent === 'Connected', { timeout: WAIT_MS });
    t.pass("Firefox sent the desktop origin's access cookie on its WebSocket");
    const loadedAt = Date.now();
    await mkdir(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, 'firefox-01-desktop.png') });

    // Past the first cookie's lifetime: only the renewal frame can have kept it.
    while (Date.now() < loadedAt + (ACCESS_LIFETIME_S + 3) * 1000) await sleep(500);
    const renewed = page.frames().filter((f) => f.url().startsWith(`${originOf(path)}/.deskhub/handoff`));
    t.ok(renewed.length >= 1, `the renewal frame is on the desktop origin (${renewed.map((f) => f.url().replace(/code=[^&]+/, 'code=…')).join(', ')})`);
    if (renewed[0]) t.match(await renewed[0].evaluate(() => (globalThis as any).document.body?.textContent ?? ''), /Desktop access renewed/, 'and says it renewed the cookie');
    const echoed = await frame.evaluate(
      () =>
        new Promise<string>((resolve) => {
          const w = globalThis as any;
          const socket = new w.WebSocket(`ws://${w.location.host}/${new w.URLSearchParams(w.location.search).get('path')}`, ['binary']);
          const timer = setTimeout(() => resolve('timeout'), 8000);
          socket.onopen = () => socket.send('again');
          socket.onmessage = (e: any) => {
            clearTimeout(timer);
            socket.close();
            resolve(String(e.data));
          };
          socket.onerror = () => {
            clearTimeout(timer);
            resolve('refused');
          };
        }),
    );
    t.equal(echoed, 'again', `${Math.round((Date.now() - loadedAt) / 1000)} s after the desktop loaded, a new WebSocket from its frame is accepted`);
    t.same(errors, [], 'no page error');
    t.comment(`Firefox hand-off check took ${Math.round((Date.now() - started) / 1000)} s`);
  });
}
