/**
 * Sharing a desktop, end to end in Debian's Chromium (headless, playwright-core) against the real
 * embedded start with desktops on origins of their own: DESKTOP_ORIGIN=http://*.localhost:<port>
 * (Chromium resolves every *.localhost name to loopback), the UI on PUBLIC_URL=http://localhost:<port>.
 *
 * alice opens her demo desktop (its document is on http://<path>.localhost:<port>, reached through
 * the hand-off); she shares it with bob for viewing; bob finds it under "Shared with me", opens it
 * and sees its page; alice's view names him in the banner. From inside bob's desktop frame: no
 * deskhub cookie is readable, the UI's API cannot be read (CORS), a WebSocket to another desktop
 * is refused, and the owner-only path /api/ answers 403. Past the first access cookie's lifetime
 * (the renewal frame at work), a WebSocket opened from inside the frame still gets in. alice
 * revokes: bob's open WebSocket closes within seconds and his frame is refused. A link alice
 * creates takes carol (signed out: sign-in first) to the desktop. axe-core checks the new pages;
 * screenshots go to test-artifacts/web-ui/sharing-*.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import axe from 'axe-core';
import type { Frame, Page } from 'playwright-core';
import t, { type Test } from 'tap';

import { artifacts, chromiumMissing, embeddedMissing, launchChromium, startDeskhub } from './embedded-deskhub.ts';

const WAIT_MS = 60_000;
/** Short, so the test outlives the first access cookie and sees the renewal frame keep it. */
const ACCESS_LIFETIME_S = 16;

const missing = embeddedMissing() ?? chromiumMissing();
if (missing) t.skip(`sharing end to end: ${missing}`, () => {});
else await main();

interface Api {
  id: string;
  proxyPath: string;
  state: string;
  url: string;
  openUrl: string;
}

async function main(): Promise<void> {
  const deskhub = await startDeskhub({ desktopOrigins: true, env: { ACCESS_TOKEN_LIFETIME_S: String(ACCESS_LIFETIME_S), ACTIVITY_INTERVAL_MS: '1000' } });
  const { base, port, originOf } = deskhub;
  const output = deskhub.output;
  t.setTimeout(300_000);
  t.teardown(() => deskhub.close());

  /** A browser of one person: its own profile, nothing but this deskhub (the UI's origin and the desktops') reachable. */
  const browser = (name: string) => launchChromium(t, name, new RegExp(`^http://([a-z0-9-]+\\.)?localhost:${port}/`), WAIT_MS);

  async function screenshot(page: Page, name: string): Promise<void> {
    await mkdir(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, `sharing-${name}.png`), fullPage: true });
  }

  /** axe-core on the UI's document (not the desktop inside its frame); serious or critical fail. */
  async function accessible(t: Test, page: Page, name: string): Promise<void> {
    await page.evaluate(axe.source);
    const violations = await page.evaluate(async () => {
      const result = await (globalThis as any).axe.run((globalThis as any).document, { resultTypes: ['violations'], iframes: false });
      return (result.violations as any[]).map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n: any) => n.target.join(' ')) }));
    });
    await mkdir(artifacts, { recursive: true });
    await writeFile(join(artifacts, `sharing-${name}.axe.json`), JSON.stringify(violations, null, 2));
    const severe = violations.filter((v: any) => v.impact === 'serious' || v.impact === 'critical');
    t.same(severe.map((v: any) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.join(', ')})`), [], `${name}: no serious or critical accessibility violation`);
    for (const v of violations.filter((v: any) => !severe.includes(v))) t.comment(`${name}: ${v.impact} ${v.id}: ${v.help}`);
  }

  /** Signs in from `start` (signed out: the UI sends the visit to sign-in, then back there). */
  async function signIn(page: Page, username: string, start = `${base}/`): Promise<void> {
    await page.goto(start);
    await page.waitForURL(/\/signin\?next=/);
    await page.getByLabel('Username').fill(username);
    await page.keyboard.press('Enter');
    if (start === `${base}/`) await page.locator('#whoami', { hasText: username }).waitFor();
  }

  /** POST /api/desktops from the page (its session and Origin), then wait until it runs. */
  async function launch(page: Page, name: string): Promise<Api> {
    const created = await page.evaluate(async (name) => {
      const res = await fetch('/api/desktops', { method: 'POST', headers: { 'content-type': 'application/json', 'x-deskhub-csrf': '1' }, body: JSON.stringify({ type: 'demo', name }) });
      return (await res.json()) as Api;
    }, name);
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const d = await page.evaluate(async (id) => (await (await fetch(`/api/desktops/${id}`)).json()) as Api, created.id);
      if (d.state === 'running') return d;
      if (d.state === 'failed' || Date.now() > deadline) throw new Error(`desktop ${name} did not start (${d.state}):\n${output()}`);
      await sleep(300);
    }
  }

  /** The desktop's document inside the page's viewer iframe. */
  async function desktopFrame(page: Page): Promise<Frame> {
    const handle = await page.locator('iframe.viewer-frame').elementHandle();
    const frame = await handle!.contentFrame();
    if (!frame) throw new Error('the viewer iframe has no document');
    return frame;
  }

  t.test('sharing a desktop between browsers, desktops on origins of their own', async (t) => {
    const started = Date.now();
    await deskhub.ready(WAIT_MS);
    const alice = await browser('alice');
    const bob = await browser('bob');
    const carol = await browser('carol');
    await signIn(alice.page, 'alice');
    // bob must have signed in once to be shared with by name.
    await signIn(bob.page, 'bob');
    const [desktop, other] = await Promise.all([launch(alice.page, 'shared'), launch(bob.page, 'other')]);
    const path = desktop.proxyPath;
    t.equal(new URL(desktop.url).origin, originOf(path), `the desktop is on its own origin (${desktop.url})`);
    t.match(desktop.openUrl, `${base}/auth/desktop-handoff?desktop=${path}&next=`, 'and opened through the hand-off');

    let frameLoadedAt = 0;
    await t.test('alice opens it: the frame is on the desktop origin, through the hand-off', async (t) => {
      const { page } = alice;
      await page.goto(`${base}/desktops/${desktop.id}`);
      const iframe = page.locator('iframe.viewer-frame');
      const src = (await iframe.getAttribute('src')) ?? '';
      t.match(src, /^\/auth\/desktop-handoff\?desktop=/, `the iframe starts at the hand-off (${src})`);
      t.match(decodeURIComponent(src), /show_control_bar=true/, 'with the KasmVNC iframe query on its next');
      t.match(await iframe.getAttribute('allow'), /clipboard-read; clipboard-write/);
      const inside = page.frameLocator('iframe.viewer-frame');
      await inside.locator('h1', { hasText: `Demo desktop ${path}` }).waitFor();
      await inside.locator('#status', { hasText: 'Connected' }).waitFor();
      t.equal(new URL((await desktopFrame(page)).url()).origin, originOf(path), "its document is on the desktop's origin");
      await screenshot(page, '01-owner-view');
      await accessible(t, page, '01-owner-view');
    });

    await t.test('alice shares it with bob, view only, from the panel', async (t) => {
      const { page } = alice;
      await page.locator('.viewer-bar').getByRole('button', { name: /^Share/ }).click();
      const dialog = page.getByRole('dialog', { name: /^Share / });
      await dialog.waitFor();
      await dialog.getByText('Nobody yet').waitFor();
      await screenshot(page, '02-panel');
      await accessible(t, page, '02-panel');
      await dialog.getByLabel('Username').fill('bob');
      t.equal(await dialog.getByRole('radio', { name: 'View only' }).first().isChecked(), true, 'view only is the default');
      await dialog.getByRole('button', { name: 'Share', exact: true }).click();
      const row = dialog.locator('#share-list [data-share-kind="user"]', { hasText: 'bob' });
      await row.waitFor();
      t.match(await row.textContent(), /View only.*Until revoked/, 'listed with its mode and no end');
      await page.keyboard.press('Escape');
      await dialog.waitFor({ state: 'hidden' });
    });

    await t.test('bob finds it under Shared with me and opens it', async (t) => {
      const { page } = bob;
      await page.goto(`${base}/`);
      const card = page.locator(`#shared-with-me [data-shared-id="${desktop.id}"]`);
      await card.waitFor();
      t.match(await card.textContent(), /View only/);
      t.match(await card.textContent(), /Owneralice/);
      await screenshot(page, '03-shared-with-me');
      await accessible(t, page, '03-shared-with-me');
      await card.getByRole('link', { name: /^Open .*shared$|^Open$/ }).first().click();
      await page.waitForURL(`${base}/shared/${desktop.id}`);
      t.equal(await page.locator('#share-mode').textContent(), 'View only', 'the bar says View only');
      const inside = page.frameLocator('iframe.viewer-frame');
      await inside.locator('h1', { hasText: `Demo desktop ${path}` }).waitFor();
      frameLoadedAt = Date.now();
      t.equal(new URL((await desktopFrame(page)).url()).origin, originOf(path), "bob's frame is on the desktop's origin too");
      await inside.locator('#status', { hasText: 'Connected' }).waitFor({ timeout: 15_000 });
      t.pass("the desktop's WebSocket answered bob, the viewer");
      await screenshot(page, '04-viewer');
      await accessible(t, page, '04-viewer');
    });

    await t.test("alice's view names bob in its banner", async (t) => {
      const banner = alice.page.locator('#connected-banner');
      await banner.waitFor({ timeout: 20_000 });
      t.match(await banner.textContent(), /bob is watching/);
      await screenshot(alice.page, '05-banner');
    });

    await t.test("inside bob's frame: no deskhub cookie, no reading the UI, no other desktop, no owner paths", async (t) => {
      const frame = await desktopFrame(bob.page);
      t.notMatch(await frame.evaluate(() => (globalThis as any).document.cookie as string), /deskhub/, 'document.cookie holds no deskhub cookie');
      const me = await frame.evaluate(async (url) => {
        try {
          const res = await fetch(url, { credentials: 'include' });
          return `read ${res.status}: ${await res.text()}`;
        } catch (err) {
          return `refused: ${(err as Error).name}`;
        }
      }, `${base}/api/me`);
      t.match(me, /^refused: TypeError/, `the UI's /api/me cannot be read from the desktop's page (${me.slice(0, 80)})`);
      const ws = (url: string) =>
        frame.evaluate(
          (url) =>
            new Promise<string>((resolve) => {
              const socket = new (globalThis as any).WebSocket(url, ['binary']);
              const timer = setTimeout(() => resolve('timeout'), 5000);
              socket.onopen = () => {
                clearTimeout(timer);
                socket.close();
                resolve('open');
              };
              socket.onerror = () => {
                clearTimeout(timer);
                resolve('refused');
              };
            }),
          url,
        );
      const otherPath = other.proxyPath;
      t.equal(await ws(`ws://${otherPath}.localhost:${port}/desktop/${otherPath}/websockify`), 'refused', "a WebSocket to bob's other desktop, on its origin, is refused");
      t.equal(await ws(`ws://${path}.localhost:${port}/desktop/${otherPath}/websockify`), 'refused', 'and through this origin too');
      const owner = await frame.evaluate(async (p) => (await fetch(`/desktop/${p}/api/x`)).status, path);
      t.equal(owner, 403, "the owner's /api/ answers 403 to the viewer");
    });

    await t.test('past the first cookie lifetime, a new WebSocket from inside the frame gets in (the renewal frame)', async (t) => {
      const renewals: number[] = [];
      bob.page.on('response', (res) => {
        const url = res.url();
        if (url.startsWith(`${originOf(path)}/.deskhub/handoff?`) && !url.includes('next=')) renewals.push(res.status());
      });
      const until = frameLoadedAt + (ACCESS_LIFETIME_S + 3) * 1000;
      while (Date.now() < until) await sleep(500);
      t.ok(renewals.length >= 1, `the renewal frame loaded the hand-off (${renewals.join(', ')})`);
      t.ok(renewals.every((s) => s === 200), 'and the desktop origin answered "renewed"');
      t.ok((await bob.page.locator('iframe.renewal-frame').count()) <= 1, 'one renewal frame at a time');
      const frame = await desktopFrame(bob.page);
      const echoed = await frame.evaluate(
        () =>
          new Promise<string>((resolve) => {
            const w = globalThis as any;
            const path = new w.URLSearchParams(w.location.search).get('path');
            const socket = new w.WebSocket(`ws://${w.location.host}/${path}`, ['binary']);
            const timer = setTimeout(() => resolve('timeout'), 8000);
            socket.onopen = () => socket.send('again');
            socket.onmessage = (e: any) => {
              clearTimeout(timer);
              resolve(String(e.data));
            };
            socket.onerror = () => {
              clearTimeout(timer);
              resolve('refused');
            };
            // Kept open, to be cut when the share is revoked; its close is told to the test by the console
            // (the frame itself goes once the view learns the share has ended).
            w.__kept = socket;
            socket.onclose = () => w.console.log(`kept-socket-closed ${Date.now()}`);
          }),
      );
      t.equal(echoed, 'again', `${Math.round((Date.now() - frameLoadedAt) / 1000)} s after the frame loaded, a new WebSocket is accepted`);
    });

    await t.test("alice revokes: bob's WebSocket closes at once, his frame is refused", async (t) => {
      const { page } = alice;
      let closedAt: number | undefined;
      bob.page.on('console', (m) => {
        const found = /^kept-socket-closed (\d+)$/.exec(m.text());
        if (found) closedAt = Number(found[1]);
      });
      // bob's view checks its share only while the tab is visible: held "hidden" here, so his frame
      // stays for the reload below; made visible again afterwards, it finds the share gone.
      const setVisibility = (state: string) =>
        bob.page.evaluate((state) => {
          const d = (globalThis as any).document;
          Object.defineProperty(d, 'visibilityState', { configurable: true, get: () => state });
          if (state === 'visible') d.dispatchEvent(new Event('visibilitychange'));
        }, state);
      await setVisibility('hidden');
      await page.locator('.viewer-bar').getByRole('button', { name: /^Share/ }).click();
      const dialog = page.getByRole('dialog', { name: /^Share / });
      const row = dialog.locator('#share-list [data-share-kind="user"]', { hasText: 'bob' });
      const frame = await desktopFrame(bob.page);
      t.equal(await frame.evaluate(() => (globalThis as any).__kept?.readyState), 1, "bob's WebSocket is open");
      const revokedAt = Date.now();
      await row.getByRole('button', { name: /^Revoke/ }).click();
      await row.waitFor({ state: 'detached' });
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && closedAt === undefined) await sleep(100);
      t.ok(closedAt !== undefined && closedAt - revokedAt < 3000, `bob's open WebSocket closed ${closedAt ? closedAt - revokedAt : '(never)'} ms after Revoke`);
      const refused = bob.page.waitForResponse((r) => r.url().startsWith(`${originOf(path)}/desktop/${path}/`), { timeout: 10_000 });
      await frame.evaluate(() => (globalThis as any).location.reload());
      t.equal((await refused).status(), 403, 'reloading his frame is refused');
      await setVisibility('visible');
      await bob.page.locator('#not-shared').waitFor({ timeout: 15_000 });
      t.pass('his view then says it is no longer shared with him');
      await screenshot(bob.page, '06-revoked');
      await accessible(t, bob.page, '06-revoked');
      await page.keyboard.press('Escape');
    });

    await t.test('a link alice creates takes carol (signed out) to the desktop, after sign-in', async (t) => {
      const { page, context } = alice;
      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
      await page.locator('.viewer-bar').getByRole('button', { name: /^Share/ }).click();
      const dialog = page.getByRole('dialog', { name: /^Share / });
      await dialog.getByRole('button', { name: 'Create link' }).click();
      await dialog.locator('#share-link-made').waitFor();
      const url = await dialog.locator('#share-link-made-value').inputValue();
      t.match(url, new RegExp(`^${base}/share/[A-Za-z0-9_-]{20,}$`), 'the link is shown once');
      await dialog.getByRole('button', { name: 'Copy link' }).click();
      await dialog.getByText('Copied to the clipboard.').waitFor();
      t.equal(await page.evaluate(() => (globalThis as any).navigator.clipboard.readText()), url, 'Copy puts it on the clipboard');
      await screenshot(page, '07-link');
      await accessible(t, page, '07-link');
      await dialog.getByRole('button', { name: 'Done' }).click();
      await dialog.locator('#share-list [data-share-kind="link"]').waitFor();

      await signIn(carol.page, 'carol', url);
      await carol.page.waitForURL(`${base}/shared/${desktop.id}`);
      t.notOk(carol.page.url().includes('/share/'), "the link's secret is gone from the address bar");
      await carol.page.frameLocator('iframe.viewer-frame').locator('h1', { hasText: `Demo desktop ${path}` }).waitFor();
      t.pass('carol sees the desktop');
      await screenshot(carol.page, '08-link-viewer');

      await carol.page.goto(`${base}/share/not-a-link-that-exists-at-all-0000`);
      await carol.page.locator('#share-link-error').waitFor();
      t.match(await carol.page.locator('#share-link-error').textContent(), /does not exist, was revoked, or has ended/);
      await screenshot(carol.page, '09-bad-link');
      await accessible(t, carol.page, '09-bad-link');
    });

    for (const who of [alice, bob, carol]) t.same(who.errors, [], 'no page error and no request off this machine');
    t.comment(`sharing end to end took ${Math.round((Date.now() - started) / 1000)} s`);
  });
}
