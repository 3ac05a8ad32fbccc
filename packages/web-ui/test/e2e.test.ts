/**
 * The web UI end to end, as a person uses it: Debian's Chromium (headless, driven by
 * playwright-core) against the real embedded start (`pnpm start`'s entry: control plane, proxy,
 * process runtime, dev sign-in) on a loopback port. Sign in, launch the demo desktop, watch the
 * progress reach Ready, open it and see its page through the proxy, stop it, delete it; a second
 * user sees none of it; an admin sees and acts on everyone's; the UI keeps the short-lived desktop
 * access cookie fresh; an API token is created, used and revoked; a desktop keeping a home shows it,
 * and the home outlives the desktop until deleted in the Homes view; a pooled type's ready member
 * shows in the admin view's Warm pool, a launch claims it at once and the pool refills. axe-core checks every page and
 * screenshots go to test-artifacts/web-ui/.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import axe from 'axe-core';
import type { Locator, Page } from 'playwright-core';
import t, { type Test } from 'tap';
import { artifacts, chromiumMissing, defaultCatalog, embeddedMissing, launchChromium, repo, startDeskhub } from './embedded-deskhub.ts';

const KASM_IFRAME_QUERY = 'show_control_bar=true&resize=remote&clipboard_up=true&clipboard_down=true&clipboard_seamless=true';
/** Generous: two shared cores, other test suites running, a desktop process to start. */
const WAIT_MS = 120_000;
/** The admin the embedded start is told about (see ADMIN_USERS below). */
const ADMIN = 'root-e2e';
/** The desktop access cookie's lifetime in this run: short, so renewal has to happen during the test. */
const ACCESS_LIFETIME_S = 16;
/** The catalog type with short idle clocks (added to the default catalog for this run, see testCatalog). */
const CLOCKS_TYPE = 'demo-clocks';
/** Its clocks: a warning window long enough to look at, deadlines short enough to wait for. */
const IDLE_AFTER_S = 16;
const EXPIRE_AFTER_S = 40;
/** A catalog type keeping a home (added for this run): busybox httpd serving its HOME, after writing a file there. */
const HOME_TYPE = 'notes';
/** A catalog type with a warm pool of one (added for this run): busybox httpd, as services/control-plane/test/warm-pool.test.ts has it. */
const POOL_TYPE = 'pooled-e2e';

/**
 * The default catalog plus a copy of the demo desktop with short clocks, and a small type that
 * keeps a home (as services/control-plane/test/homes.test.ts has it), and a pooled one. The file lives in the
 * run's DATA_DIR, so the demo entries get absolute paths (the default one is relative to its folder).
 */
async function testCatalog(dir: string): Promise<string> {
  const controlPlane = join(repo, 'services/control-plane');
  const clocksType = `
  - id: ${CLOCKS_TYPE}
    name: Demo desktop with short clocks
    description: The demo desktop, disconnected after ${IDLE_AFTER_S} s without use and stopped after ${EXPIRE_AFTER_S} s without a connection
    runtime: process
    workingDir: ${controlPlane}
    command: ["{node}", "--import", "tsx", "${join(repo, 'packages/demo-desktop/src/main.ts')}"]
    port: 6901
    scheme: https
    verifyTls: false
    stripPrefix: true
    credentials: { kind: kasm }
    activity: traffic
    env: { HOST: 127.0.0.1, PORT: "{port}", TLS: "true", DESKTOP_NAME: "{path}" }
    readiness: { path: /, timeoutSeconds: 60 }
    entryQuery: path=desktop/{path}/websockify
    idle: { disconnectAfter: ${IDLE_AFTER_S}s, warn: 12s }
    expire: { after: ${EXPIRE_AFTER_S}s, warn: 30s, action: stop }
    maxLifetime: { after: 10m, warnBefore: 9m59s }
`;
  const homeType = `
  - id: ${HOME_TYPE}
    name: Notes with a home
    description: Writes a line into its home at each start and serves the home's files
    runtime: process
    workingDir: ${controlPlane}
    command: ["sh", "-c", "echo {port} >> \\"$HOME/notes.txt\\"; exec busybox httpd -f -p 127.0.0.1:{port} -h \\"$HOME\\""]
    port: 80
    readiness: { path: /notes.txt, timeoutSeconds: 30 }
    home: { path: /home/kasm-user }
`;
  const www = join(dir, 'pool-www');
  await mkdir(www, { recursive: true });
  await writeFile(join(www, 'index.html'), '<!doctype html><title>Pooled</title><p>Pooled</p>\n');
  const poolType = `
  - id: ${POOL_TYPE}
    name: Pooled web page
    description: Kept started in a warm pool of one, so a launch takes it at once
    runtime: process
    workingDir: ${controlPlane}
    command: ["busybox", "httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "${www}"]
    port: 80
    readiness: { path: /, timeoutSeconds: 30 }
    pool: { size: 1 }
`;
  return defaultCatalog(dir, `${clocksType}${homeType}${poolType}`);
}

const missing = embeddedMissing() ?? chromiumMissing();


if (missing) t.skip(`the web UI end to end: ${missing}`, () => {});
else await main();

async function main(): Promise<void> {
  // ---- the system under test: the embedded start, as `pnpm start` runs it -------------------------
  const deskhub = await startDeskhub({
    catalog: testCatalog,
    env: {
      ADMIN_USERS: ADMIN,
      // Short-lived desktop access cookies, so the test sees the UI renew them (every half lifetime).
      ACCESS_TOKEN_LIFETIME_S: String(ACCESS_LIFETIME_S),
      // The default catalog plus a type with short idle clocks, checked often, with presence copied often.
      CLOCKS_INTERVAL_MS: '500',
      ACTIVITY_INTERVAL_MS: '1000',
      // The warm pool's passes: a claimed member is replaced within a second or so.
      POOL_INTERVAL_MS: '300',
    },
  });
  const base = deskhub.base;

  // One long story of many steps, each waiting for real processes: more than tap's default file timeout.
  t.setTimeout(900_000);
  t.teardown(() => deskhub.close());

  const waitReady = () => deskhub.ready(WAIT_MS);

  // ---- the browser ------------------------------------------------------------------------------
  // Nothing may leave the machine: any request to another host is a defect (CDN, fonts, telemetry).
  const browser = (name: string) => launchChromium(t, name, /^http:\/\/127\.0\.0\.1:\d+\//, WAIT_MS);

  async function screenshot(page: Page, name: string): Promise<void> {
    await mkdir(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
  }

  interface AxeViolation {
    id: string;
    impact: string | null;
    help: string;
    nodes: { target: string[] }[];
  }

  /** axe-core in the page (its Playwright wrapper needs Node 22); fails on serious or critical violations. */
  async function accessible(t: Test, page: Page, name: string): Promise<void> {
    await page.evaluate(axe.source);
    // The desktop inside an iframe is the container's page, not ours: axe checks this document only.
    const violations = await page.evaluate(async () => {
      const result = await (globalThis as unknown as { axe: { run(ctx: unknown, o: unknown): Promise<{ violations: AxeViolation[] }> } }).axe.run(
        (globalThis as unknown as { document: unknown }).document,
        { resultTypes: ['violations'], iframes: false },
      );
      return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => ({ target: n.target })) }));
    });
    await mkdir(artifacts, { recursive: true });
    await writeFile(join(artifacts, `${name}.axe.json`), JSON.stringify(violations, null, 2));
    const severe = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    t.same(
      severe.map((v) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`),
      [],
      `${name}: no serious or critical accessibility violation`,
    );
    for (const v of violations.filter((v) => !severe.includes(v))) t.comment(`${name}: ${v.impact} ${v.id}: ${v.help}`);
  }

  async function signIn(page: Page, username: string): Promise<void> {
    await page.goto(`${base}/`);
    await page.waitForURL(/\/signin\?next=/);
    const field = page.getByLabel('Username');
    await field.waitFor();
    // Keyboard only: focus the field, type, Enter submits the form.
    await field.focus();
    await page.keyboard.type(username);
    await page.keyboard.press('Enter');
    await page.locator('#whoami', { hasText: username }).waitFor();
  }

  /** Records every stage the progress panel shows, in order, so the test can see it move forward. */
  async function recordStages(page: Page): Promise<void> {
    await page.evaluate(() => {
      const w = globalThis as unknown as { __stages: string[]; __streamLost: boolean; document: any; MutationObserver: any };
      w.__stages = [];
      w.__streamLost = false;
      const look = () => {
        const current = w.document.querySelector('.progress [aria-current="step"]');
        const text = current ? String(current.getAttribute('data-stage')) : null;
        if (text && w.__stages[w.__stages.length - 1] !== text) w.__stages.push(text);
        const message = w.document.querySelector('.progress-message');
        if (message && String(message.textContent).includes('live details unavailable')) w.__streamLost = true;
      };
      new w.MutationObserver(look).observe(w.document.body, { subtree: true, childList: true, characterData: true, attributes: true });
      look();
    });
  }

  /** How far the page scrolls sideways (0 when it fits the viewport). */
  async function sidewaysOverflow(page: Page): Promise<number> {
    return page.evaluate(() => {
      const d = (globalThis as any).document.documentElement;
      return d.scrollWidth - d.clientWidth;
    });
  }

  /** Waits until `count()` reaches `target`. */
  async function waitForCount(count: () => number, target: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (count() < target) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${target} (have ${count()})`);
      await sleep(100);
    }
  }

  /** Later steps need the launched desktop; without it they fail at once instead of timing out one by one. */
  function launched(t: Test, id: string): boolean {
    if (id) return true;
    t.fail('no desktop was launched, see the launch step');
    return false;
  }

  /** Whether the embedded start made ADMIN an admin and serves the admin API; null when it did, else why not. */
  /** data-stage values of the progress steps, in the order a launch goes through them. */
  const STAGE_ORDER = ['pull', 'start', 'wait', 'ready'];

  t.test('the web UI against the real control plane and proxy', async (t) => {
    await waitReady();
    const home = await fetch(`${base}/`);
    if (home.status !== 200 || !(home.headers.get('content-type') ?? '').startsWith('text/html')) {
      // Without the UI every later step would only time out: say what is missing and stop here.
      t.fail(`GET / answered ${home.status} ${home.headers.get('content-type')}: the control plane does not serve the web UI (register webUi from @deskhub/web-ui in services/control-plane/src/app.ts)`);
      return;
    }
    t.pass('the control plane serves the UI at /');
    t.match(home.headers.get('content-security-policy') ?? '', /script-src 'self'/, 'with its CSP, through the proxy');

    const alice = await browser('alice');
    const bob = await browser('bob');
    const aliceName = 'alice-e2e';
    const bobName = 'bob-e2e';
    let desktopId = '';
    let proxyPath = '';

    await t.test('sign in with the dev sign-in, keyboard only', async (t) => {
      const { page } = alice;
      await page.goto(`${base}/`);
      await page.waitForURL(/\/signin\?next=/);
      await page.getByLabel('Username').waitFor();
      // What a first visit really downloads through the proxy (compressed sizes as transferred).
      const loaded = await page.evaluate(() => {
        const perf = (globalThis as unknown as { performance: { getEntriesByType(t: string): { name: string; encodedBodySize: number; decodedBodySize: number }[] } }).performance;
        return [...perf.getEntriesByType('navigation'), ...perf.getEntriesByType('resource')]
          .filter((e) => !e.name.includes('/api/') && !e.name.includes('/auth/'))
          .map((e) => ({ url: new URL(e.name).pathname, encoded: e.encodedBodySize, decoded: e.decodedBodySize }))
          // The favicon can be listed twice (document and tab strip); count each file once.
          .filter((e, i, all) => all.findIndex((x) => x.url === e.url) === i);
      });
      const total = loaded.reduce((sum, e) => sum + e.encoded, 0);
      await mkdir(artifacts, { recursive: true });
      await writeFile(join(artifacts, '01-first-load.json'), JSON.stringify({ total, files: loaded }, null, 2));
      t.comment(`first visit downloads ${total} bytes of UI (${loaded.map((e) => `${e.url} ${e.encoded}`).join(', ')})`);
      t.ok(total > 0 && total < 40 * 1024, 'the UI a first visit downloads stays under 40 kB');
      await screenshot(page, '01-signin');
      await accessible(t, page, '01-signin');
      await signIn(page, aliceName);
      t.equal(new URL(page.url()).pathname, '/', 'back where the visit started');
      await page.locator('#catalog').waitFor();
      // A visible focus ring: Tab onto the first control and read its outline.
      await page.keyboard.press('Tab');
      const outline = await page.evaluate(() => {
        const el = (globalThis as unknown as { document: { activeElement: unknown } }).document.activeElement;
        const style = (globalThis as unknown as { getComputedStyle(e: unknown): { outlineStyle: string; outlineWidth: string } }).getComputedStyle(el);
        return `${style.outlineStyle} ${style.outlineWidth}`;
      });
      t.match(outline, /^solid [23]px$/, `the focused control shows a ring (${outline})`);
    });

    await t.test('the catalog says the demo desktop can run here', async (t) => {
      const { page } = alice;
      const card = page.locator('[data-type-id="demo"]');
      await card.waitFor();
      t.match(await card.locator('.badge').textContent(), /Can run here/);
      t.equal(await card.getByRole('button', { name: /Launch/ }).isEnabled(), true);
      for (const unavailable of await page.locator('.card.type.unavailable').all()) {
        t.match(await unavailable.locator('.reason').textContent(), /Why not: \S/, 'an unavailable type says why');
      }
      await screenshot(page, '02-dashboard');
      await accessible(t, page, '02-dashboard');
    });

    await t.test('launch the demo desktop and watch the progress reach Ready', async (t) => {
      const { page } = alice;
      await recordStages(page);
      const launch = page.locator('[data-type-id="demo"]').getByRole('button', { name: /Launch/ });
      await launch.focus();
      await page.keyboard.press('Enter');
      const card = page.locator('#my-desktops [data-desktop-id]').first();
      await card.waitFor();
      desktopId = (await card.getAttribute('data-desktop-id')) ?? '';
      t.ok(desktopId, 'the new desktop is listed');
      await card.locator('.progress').waitFor();
      await screenshot(page, '03-launching');
      await accessible(t, page, '03-launching');
      await card.locator('.badge[data-state="running"]').waitFor();
      await card.locator('.progress [aria-current="step"]', { hasText: 'Ready' }).waitFor();
      const stages = await page.evaluate(() => (globalThis as unknown as { __stages: string[] }).__stages);
      const streamLost = await page.evaluate(() => (globalThis as unknown as { __streamLost: boolean }).__streamLost);
      await writeFile(join(artifacts, '03-stages.json'), JSON.stringify(stages, null, 2));
      t.equal(stages.at(-1), 'ready', `progress ends at Ready (${stages.join(' > ')})`);
      t.ok(stages.length >= 2, 'the panel showed at least one stage before Ready');
      const order = stages.map((s) => STAGE_ORDER.indexOf(s));
      t.notOk(order.includes(-1), 'only known stages');
      t.same(order, [...order].sort((a, b) => a - b), 'stages only move forward');
      t.equal(streamLost, false, 'the live event stream (GET /api/desktops/:id/events/stream) carried the progress');
      for (const done of await card.locator('.step-done').all()) t.match(await done.textContent(), /\(done\)/);
      proxyPath = ((await card.locator('.facts code').textContent()) ?? '').replace(/^\/desktop\//, '').replace(/\/$/, '');
      t.match(proxyPath, new RegExp(`^${aliceName}-demo`), `the address follows <user>-<type> (${proxyPath})`);
      await screenshot(page, '04-ready');
      await accessible(t, page, '04-ready');
    });

    await t.test('open it full window: the desktop answers through the proxy', async (t) => {
      if (!launched(t, desktopId)) return;
      const { page } = alice;
      const card = page.locator(`[data-desktop-id="${desktopId}"]`);
      await card.getByRole('link', { name: /Open .* here/ }).click();
      await page.waitForURL(`${base}/desktops/${encodeURIComponent(desktopId)}`);
      const frame = page.locator('iframe');
      await frame.waitFor();
      const src = (await frame.getAttribute('src')) ?? '';
      t.ok(src.startsWith(`/desktop/${proxyPath}/?`), `the iframe opens the desktop's path (${src})`);
      t.ok(src.includes(`path=desktop/${proxyPath}/websockify`), 'with the KasmVNC websocket path');
      t.ok(src.endsWith(KASM_IFRAME_QUERY), 'and the iframe query for control bar, clipboard and resize');
      const inside = page.frameLocator('iframe');
      await inside.locator('h1', { hasText: `Demo desktop ${proxyPath}` }).waitFor();
      await inside.locator('#status', { hasText: 'Connected' }).waitFor();
      t.pass('the demo page loaded in the iframe and its WebSocket echo answered through the proxy');
      await screenshot(page, '05-desktop-in-page');
      await accessible(t, page, '05-desktop-in-page');
    });

    await t.test('open it in a new tab', async (t) => {
      if (!launched(t, desktopId)) return;
      const { page, context } = alice;
      await page.goBack();
      const card = page.locator(`[data-desktop-id="${desktopId}"]`);
      const [tab] = await Promise.all([context.waitForEvent('page'), card.getByRole('link', { name: /in new tab/ }).click()]);
      await tab.waitForLoadState();
      t.equal(new URL(tab.url()).pathname, `/desktop/${proxyPath}/`);
      await tab.locator('#status', { hasText: 'Connected' }).waitFor();
      t.pass('the desktop works in its own tab');
      await tab.close();
    });

    await t.test('the open UI renews the desktop access cookie, so the desktop stays reachable past its lifetime', async (t) => {
      if (!launched(t, desktopId)) return;
      const { page, context } = alice;
      await page.goto(`${base}/`);
      await page.locator('#catalog').waitFor();
      const renewals: { at: number; status: number }[] = [];
      page.on('response', (res) => {
        if (res.url() === `${base}/auth/desktop-access` && res.request().method() === 'POST') renewals.push({ at: Date.now(), status: res.status() });
      });
      const accessExpiry = async () => (await context.cookies(`${base}/desktop/${proxyPath}/`)).find((c) => c.name === 'deskhub_access')?.expires ?? null;
      const first = await accessExpiry();
      t.ok(first && first > Date.now() / 1000, 'the access cookie is set, for /desktop/');
      // Past the moment the first cookie would have expired: only renewals can keep it.
      const deadline = Date.now() + 3 * ACCESS_LIFETIME_S * 1000;
      while (Date.now() < Math.min(deadline, (first ?? 0) * 1000 + 1500)) await sleep(500);
      const later = await accessExpiry();
      t.ok(later !== null && first !== null && later > first, `its expiry moved forward (${first} -> ${later})`);
      t.ok(renewals.length >= 1, `POST /auth/desktop-access was called (${renewals.length} times)`);
      t.ok(renewals.every((r) => r.status === 204), `and answered 204 (${renewals.map((r) => r.status).join(', ')})`);
      // A plain fetch (not a page load, which the proxy would send through renewal itself) needs a valid cookie.
      const status = await page.evaluate(async (path) => (await fetch(`/desktop/${path}/`)).status, proxyPath);
      t.equal(status, 200, `the desktop answers after the first cookie's lifetime (${ACCESS_LIFETIME_S} s) is over`);

      // Coming back to a hidden tab renews at once (its timers may have been throttled meanwhile).
      await waitForCount(() => renewals.length, renewals.length + 1, 2 * ACCESS_LIFETIME_S * 1000);
      const before = renewals.length;
      const shownAt = Date.now();
      await page.evaluate(() => {
        const d = (globalThis as any).document;
        Object.defineProperty(d, 'visibilityState', { configurable: true, get: () => 'hidden' });
        d.dispatchEvent(new Event('visibilitychange'));
        Object.defineProperty(d, 'visibilityState', { configurable: true, get: () => 'visible' });
        d.dispatchEvent(new Event('visibilitychange'));
      });
      await waitForCount(() => renewals.length, before + 1, 10_000);
      const delay = renewals[before]!.at - shownAt;
      t.ok(delay < (ACCESS_LIFETIME_S * 1000) / 2 - 2000, `a renewal follows the tab becoming visible (${delay} ms, sooner than the period)`);
      await page.evaluate(() => delete (globalThis as any).document.visibilityState);
    });

    await t.test('API tokens: create one (shown once, copied), use it, revoke it; keyboard only', async (t) => {
      const { page, context } = alice;
      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
      await page.goto(`${base}/`);
      await page.getByRole('link', { name: 'API tokens' }).click();
      await page.waitForURL(`${base}/tokens`);
      await page.getByRole('heading', { level: 1, name: 'API tokens' }).waitFor();
      await page.getByText('No tokens yet.').waitFor();
      t.equal(await page.locator('#scope-admin').count(), 0, 'the admin scope is not offered to a non-admin');
      await screenshot(page, '13-tokens');
      await accessible(t, page, '13-tokens');

      await page.getByLabel('Name', { exact: true }).focus();
      await page.keyboard.type('e2e script');
      await page.locator('#scope-desktops\\:write').focus();
      await page.keyboard.press('Space');
      t.equal(await page.locator('#scope-desktops\\:write').isChecked(), true, 'Space ticks a scope');
      await page.getByLabel('Name', { exact: true }).focus();
      await page.keyboard.press('Enter');
      const shown = page.locator('#created-token');
      await shown.waitFor();
      const token = await page.locator('#created-token-value').inputValue();
      t.match(token, /^dhk_[A-Za-z0-9_-]{43}$/, 'the new token is shown');
      t.equal(await page.evaluate(() => (globalThis as any).document.activeElement?.id), 'created-title', 'focus moves to it');
      await page.getByRole('button', { name: 'Copy token' }).click();
      await page.getByText('Copied to the clipboard.').waitFor();
      t.equal(await page.evaluate(() => (globalThis as any).navigator.clipboard.readText()), token, 'Copy puts it on the clipboard');
      await screenshot(page, '14-token-created');
      await accessible(t, page, '14-token-created');

      const card = page.locator('#my-tokens [data-token-id]', { hasText: 'e2e script' });
      await card.waitFor();
      t.match(await card.textContent(), /desktops:read.*desktops:write/, 'listed with its scopes');
      const me = await fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${token}` } });
      t.equal(me.status, 200, 'the token works with curl-like requests');
      t.equal(((await me.json()) as { username: string }).username, aliceName);
      const listed = await fetch(`${base}/api/desktops`, { headers: { authorization: `Bearer ${token}` } });
      t.ok((await listed.text()).includes(desktopId), "and lists alice's desktops");

      await page.getByRole('button', { name: 'Done' }).click();
      await shown.waitFor({ state: 'detached' });
      await page.reload();
      await card.waitFor();
      t.notOk((await page.content()).includes(token), 'after Done (and a reload) the token text is nowhere on the page');

      await card.getByRole('button', { name: /^Revoke/ }).focus();
      await page.keyboard.press('Enter');
      const dialog = page.getByRole('dialog');
      await dialog.waitFor();
      t.equal(await page.evaluate(() => (globalThis as any).document.activeElement?.textContent), 'Cancel', 'Cancel has the focus first');
      await screenshot(page, '15-token-revoke');
      await accessible(t, page, '15-token-revoke');
      await page.keyboard.press('Tab');
      await page.keyboard.press('Enter');
      await card.waitFor({ state: 'detached' });
      const after = await fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${token}` } });
      t.equal(after.status, 401, 'the revoked token is refused');
      t.match(((await after.json()) as { message: string }).message, /revoked/);
    });

    await t.test('a second user does not see the first one’s desktops', async (t) => {
      if (!launched(t, desktopId)) return;
      const { page } = bob;
      await signIn(page, bobName);
      await page.locator('#catalog').waitFor();
      await page.getByText('No desktops yet').waitFor();
      t.equal(await page.locator(`[data-desktop-id="${desktopId}"]`).count(), 0, 'not in the list');
      const listed = await page.evaluate(async () => (await fetch('/api/desktops')).json());
      t.notOk(JSON.stringify(listed).includes(desktopId), 'not in the API answer either');
      await page.goto(`${base}/desktops/${encodeURIComponent(desktopId)}`);
      await page.locator('.error[role="alert"]').waitFor();
      t.equal(await page.locator('iframe').count(), 0, "another user's desktop is not shown");
      await screenshot(page, '06-second-user');
      await accessible(t, page, '06-second-user');
      await page.goto(`${base}/`);
      await page.locator('#catalog').waitFor();
      await accessible(t, page, '06-second-user-dashboard');
    });

    await t.test('the admin sees every desktop with its owner and can stop any', async (t) => {
      if (!launched(t, desktopId)) return;
      const admin = await browser('admin');
      await signIn(admin.page, ADMIN);
      await admin.page.getByRole('link', { name: 'Admin' }).click();
      await admin.page.waitForURL(`${base}/admin`);
      const card = admin.page.locator(`#all-desktops [data-desktop-id="${desktopId}"]`);
      await card.waitFor();
      t.match(await card.locator('.facts').textContent(), new RegExp(`Owner${aliceName}`), 'with its owner');
      t.equal(await card.getByRole('button', { name: /^Stop/ }).count(), 1, 'and Stop for it');
      t.equal(await card.getByRole('button', { name: /^Delete/ }).count(), 1, 'and Delete for it');
      await screenshot(admin.page, '07-admin');
      await accessible(t, admin.page, '07-admin');

      // Exempt it from the idle clocks (PUT /api/admin/desktops/:id/clocks), then put it back.
      const exempt = async () =>
        admin.page.evaluate(async (id) => {
          const list = (await (await fetch('/api/admin/desktops')).json()) as { id: string; clocks: { exempt: boolean } }[];
          return list.find((d) => d.id === id)?.clocks.exempt;
        }, desktopId);
      t.match(await card.locator('.facts').textContent(), /Idle clocksApply/, 'the idle clocks apply to it');
      await card.getByRole('button', { name: /^Exempt from idle clocks/ }).click();
      await card.locator('[data-exempt="true"]').waitFor();
      t.equal(await exempt(), true, 'Exempt from idle clocks exempts it on the server');
      await card.getByRole('button', { name: /^Apply idle clocks/ }).click();
      await card.locator('[data-exempt="false"]').waitFor();
      t.equal(await exempt(), false, 'and Apply idle clocks puts it back');

      // The admin acts on someone else's desktop: bob launches one, the admin stops and deletes it.
      const bobsId = await bob.page.evaluate(async () => {
        const res = await fetch('/api/desktops', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ type: 'demo', name: 'adm' }) });
        return ((await res.json()) as { id: string }).id;
      });
      t.ok(bobsId, "bob's desktop created");
      const bobsCard = admin.page.locator(`#all-desktops [data-desktop-id="${bobsId}"]`);
      await admin.page.getByRole('button', { name: 'Refresh' }).click();
      await bobsCard.locator('.badge[data-state="running"]').waitFor();
      await bobsCard.getByRole('button', { name: /^Stop/ }).click();
      await bobsCard.locator('.badge[data-state="stopped"]').waitFor();
      await bobsCard.getByRole('button', { name: /^Delete/ }).click();
      await admin.page.getByRole('dialog').getByRole('button', { name: 'Delete desktop' }).click();
      await bobsCard.waitFor({ state: 'detached' });
      const bobsStatus = await bob.page.evaluate(async (id) => (await fetch(`/api/desktops/${id}`)).status, bobsId);
      t.equal(bobsStatus, 404, "the admin stopped and deleted bob's desktop");
    });

    await t.test('stop it', async (t) => {
      if (!launched(t, desktopId)) return;
      const { page } = alice;
      await page.goto(`${base}/`);
      const card = page.locator(`[data-desktop-id="${desktopId}"]`);
      await card.getByRole('button', { name: /^Stop/ }).click();
      await card.locator('.badge[data-state="stopped"]').waitFor();
      t.equal(await card.getByRole('button', { name: /^Start/ }).count(), 1, 'a stopped desktop offers Start');
      t.equal(await card.getByRole('link', { name: /Open/ }).count(), 0, 'and no Open');
      await screenshot(page, '08-stopped');
      await accessible(t, page, '08-stopped');
      const gone = await page.evaluate(async (path) => (await fetch(`/desktop/${path}/`)).status, proxyPath);
      t.not(gone, 200, `a stopped desktop is no longer reachable (${gone})`);
    });

    await t.test('start it again: progress to Ready, and it answers again', async (t) => {
      if (!launched(t, desktopId)) return;
      const { page } = alice;
      const card = page.locator(`[data-desktop-id="${desktopId}"]`);
      await card.getByRole('button', { name: /^Start/ }).click();
      await card.locator('.progress').waitFor();
      await card.locator('.badge[data-state="running"]').waitFor();
      await card.locator('.progress [aria-current="step"][data-stage="ready"]').waitFor();
      t.pass('the restarted desktop shows its progress up to Ready');
      const status = await page.evaluate(async (path) => (await fetch(`/desktop/${path}/`)).status, proxyPath);
      t.equal(status, 200, 'and is reachable through the proxy again');
    });

    await t.test('delete it, after confirming, with the keyboard', async (t) => {
      if (!launched(t, desktopId)) return;
      const { page } = alice;
      const card = page.locator(`[data-desktop-id="${desktopId}"]`);
      await card.getByRole('button', { name: /^Delete/ }).focus();
      await page.keyboard.press('Enter');
      const dialog = page.getByRole('dialog');
      await dialog.waitFor();
      t.match(await dialog.textContent(), /cannot be undone/);
      t.equal(await page.evaluate(() => (globalThis as any).document.activeElement?.textContent), 'Cancel', 'Cancel has the focus first');
      await screenshot(page, '09-confirm-delete');
      await accessible(t, page, '09-confirm-delete');
      await page.keyboard.press('Escape');
      await dialog.waitFor({ state: 'hidden' });
      t.equal(await card.count(), 1, 'Escape cancels: the desktop is still there');
      await card.getByRole('button', { name: /^Delete/ }).focus();
      await page.keyboard.press('Enter');
      await dialog.waitFor();
      await page.keyboard.press('Tab');
      await page.keyboard.press('Enter');
      await card.waitFor({ state: 'detached' });
      const status = await page.evaluate(async (id) => (await fetch(`/api/desktops/${id}`)).status, desktopId);
      t.equal(status, 404, 'the API no longer knows it');
      await screenshot(page, '10-deleted');
      await accessible(t, page, '10-deleted');
    });

    await t.test('a home: shown on its desktop, kept after the desktop, deleted in the Homes view', async (t) => {
      const { page } = alice;
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.goto(`${base}/`);
      const launch = page.locator(`[data-type-id="${HOME_TYPE}"]`).getByRole('button', { name: /Launch/ });
      await launch.click();
      const card = page.locator('#my-desktops [data-desktop-id]', { has: page.locator('[data-home-id]') }).first();
      await card.locator('.badge[data-state="running"]').waitFor();
      const homeId = (await card.locator('dd[data-home-id]').getAttribute('data-home-id')) ?? '';
      const path = ((await card.locator('.facts code').textContent()) ?? '').replace(/^\/desktop\//, '').replace(/\/$/, '');
      await card.getByRole('link', { name: `${HOME_TYPE} in Homes` }).waitFor();
      t.pass(`the card says its home is "${HOME_TYPE}" and links to Homes`);

      // A second desktop on the same home is refused: the launch shows the server's reason.
      await launch.click();
      const refused = page.locator(`[data-type-id="${HOME_TYPE}"] .error[role="alert"]`);
      await refused.waitFor();
      t.match(await refused.textContent(), `the home "${HOME_TYPE}" is in use by the desktop at /desktop/${path}/: stop that desktop first`, 'a second launch on the home says which desktop holds it');

      await card.getByRole('link', { name: /in Homes/ }).click();
      await page.waitForURL(`${base}/homes`);
      await page.getByRole('heading', { level: 1, name: 'Homes' }).waitFor();
      const home = page.locator(`#my-homes [data-home-id="${homeId}"]`);
      await home.waitFor();
      const size = (await home.locator('dd[data-size]').textContent()) ?? '';
      t.match(size, /^\d+(\.\d)? (bytes?|kB|MB)$/, `its size is shown (${size})`);
      t.match(await home.textContent(), `/desktop/${path}/ (Running)`, 'with the desktop using it');
      await screenshot(page, '19-homes');
      await accessible(t, page, '19-homes');

      // Deleting it while the desktop exists: confirmed, then refused with the server's message.
      await home.getByRole('button', { name: /^Delete home/ }).click();
      const dialog = page.getByRole('dialog');
      await dialog.waitFor();
      t.match(await dialog.textContent(), /gone for good/, 'the confirmation says the files are gone for good');
      await accessible(t, page, '20-homes-confirm');
      await dialog.getByRole('button', { name: 'Delete home' }).click();
      const conflict = home.locator('.error[role="alert"]');
      await conflict.waitFor();
      t.match(await conflict.textContent(), `is used by /desktop/${path}/: delete that desktop first`, 'a 409 shows the server message');

      // The admin sees it among everyone's homes, with its owner.
      const admin = await browser('admin-homes');
      await signIn(admin.page, ADMIN);
      await admin.page.goto(`${base}/admin`);
      const everyone = admin.page.locator(`#all-homes [data-home-id="${homeId}"]`);
      await everyone.waitFor();
      t.match(await everyone.locator('.facts').textContent(), new RegExp(`Owner${aliceName}`), "the admin view lists alice's home with its owner");
      t.equal(await everyone.getByRole('button', { name: `Delete home ${HOME_TYPE} of ${aliceName}` }).count(), 1, 'and Delete for it');
      await accessible(t, admin.page, '21-admin-homes');
      await admin.context.close();

      // Delete the desktop, then the home.
      await page.goto(`${base}/`);
      const again = page.locator(`[data-desktop-id="${await card.getAttribute('data-desktop-id')}"]`);
      await again.getByRole('button', { name: /^Delete/ }).click();
      await page.getByRole('dialog').getByRole('button', { name: 'Delete desktop' }).click();
      await again.waitFor({ state: 'detached' });
      await page.getByRole('link', { name: 'Homes', exact: true }).click();
      await home.waitFor();
      t.match(await home.textContent(), /Used byNo desktop/, 'the home is kept after its desktop is deleted');
      await page.setViewportSize({ width: 360, height: 740 });
      t.equal(await sidewaysOverflow(page), 0, 'the Homes view does not scroll sideways at 360 px');
      await page.setViewportSize({ width: 1280, height: 900 });
      await home.getByRole('button', { name: /^Delete home/ }).click();
      await dialog.getByRole('button', { name: 'Delete home' }).click();
      await home.waitFor({ state: 'detached' });
      await page.getByText('You have no homes yet. Desktops of types with a home keep your files here across stop, delete and re-create.').waitFor();
      t.same(await page.evaluate(async () => (await fetch('/api/volumes')).json()), [], 'the API lists no home');
      await accessible(t, page, '22-homes-empty');
    });

    await t.test('the warm pool: a ready member in the admin view, claimed by a launch at once, refilled', async (t) => {
      const admin = await browser('admin-pool');
      await signIn(admin.page, ADMIN);
      await admin.page.goto(`${base}/admin`);
      const pool = admin.page.locator(`#warm-pool [data-pool-type="${POOL_TYPE}"]`);
      const readyMember = pool.locator('[data-desktop-id]', { has: admin.page.locator('.badge[data-state="running"]') });
      await readyMember.first().waitFor();
      const memberId = (await readyMember.first().getAttribute('data-desktop-id')) ?? '';
      t.match(await pool.locator('h3').textContent(), /Pooled web page \(pooled-e2e\): 1 ready/, 'the Warm pool section counts the ready member per type');
      t.match(await readyMember.first().textContent(), /ReadyReady since.*OwnerNone until claimed/, 'with its state, how long it has waited and no owner');
      t.equal(await readyMember.first().getByRole('link').count(), 0, 'and nothing to open (it has no route)');
      t.equal(await admin.page.locator(`#all-desktops [data-desktop-id="${memberId}"]`).count(), 0, "it is not among the users' desktops");
      await screenshot(admin.page, '23-admin-pool');
      await accessible(t, admin.page, '23-admin-pool');

      const dave = await browser('dave');
      await signIn(dave.page, 'dave-e2e');
      await recordStages(dave.page);
      await dave.page.locator(`[data-type-id="${POOL_TYPE}"]`).getByRole('button', { name: /Launch/ }).click();
      const card = dave.page.locator('#my-desktops [data-desktop-id]').first();
      await card.locator('.badge[data-state="running"]').waitFor();
      t.equal(await card.getAttribute('data-desktop-id'), memberId, 'the launch got the ready member');
      await card.locator('.progress [aria-current="step"][data-stage="ready"]').waitFor();
      const claimed = card.locator('.progress-note[data-claimed]');
      t.match(await claimed.textContent(), /^Claimed a ready Pooled web page from the warm pool for \/desktop\/dave-e2e-pooled-e2e\/$/, 'its progress shows the claim');
      t.match(await card.locator('.progress').textContent(), /Taken from the warm pool/, 'as the step before Ready');
      const stages = await dave.page.evaluate(() => (globalThis as unknown as { __stages: string[] }).__stages);
      t.notOk(stages.slice(0, -1).includes('ready'), `no earlier Ready from the member's own start (${stages.join(' > ')})`);
      const reach = await dave.page.evaluate(async () => (await fetch('/desktop/dave-e2e-pooled-e2e/')).status);
      t.equal(reach, 200, 'and it answers through the proxy at its new address');
      await screenshot(dave.page, '24-claimed');
      await accessible(t, dave.page, '24-claimed');

      // Refresh rather than wait for the view's 5 s poll: the pool refills within a second or so.
      const shown = async (locator: Locator) => {
        for (const deadline = Date.now() + 30_000; Date.now() < deadline && (await locator.count()) === 0; await sleep(500)) {
          await admin.page.getByRole('button', { name: 'Refresh' }).click();
        }
        await locator.waitFor({ timeout: 1000 });
      };
      // The pool refills with another member; the claimed one is dave's desktop now.
      const other = pool.locator(`[data-desktop-id]:not([data-desktop-id="${memberId}"])`, { has: admin.page.locator('.badge[data-state="running"]') }).first();
      await shown(other);
      const refillId = (await other.getAttribute('data-desktop-id')) ?? '';
      t.not(refillId, memberId, 'the Warm pool shows a new ready member');
      await admin.page.locator(`#all-desktops [data-desktop-id="${memberId}"]`).waitFor();
      t.match(await admin.page.locator(`#all-desktops [data-desktop-id="${memberId}"] .facts`).textContent(), /Ownerdave-e2e/, "the claimed one is listed with dave's desktops");

      // An admin deletes a member (confirmed); the pool starts another.
      await other.getByRole('button', { name: /^Delete Member/ }).click();
      const dialog = admin.page.getByRole('dialog');
      t.match(await dialog.textContent(), /starts another in its place/, 'the confirmation says the pool replaces it');
      await dialog.getByRole('button', { name: 'Delete member' }).click();
      await admin.page.locator(`#warm-pool [data-desktop-id="${refillId}"]`).waitFor({ state: 'detached' });
      await shown(pool.locator(`[data-desktop-id]:not([data-desktop-id="${refillId}"])`).first());
      t.pass('a deleted member is replaced');
      await accessible(t, admin.page, '25-admin-pool-refilled');

      const status = await dave.page.evaluate(async (id) => (await fetch(`/api/desktops/${id}`, { method: 'DELETE' })).status, memberId);
      t.equal(status, 204, 'cleaned up');
      t.same([...admin.errors, ...dave.errors], [], 'no script error and no request off this machine');
      await admin.context.close();
      await dave.context.close();
    });

    await t.test('signing out ends the session', async (t) => {
      const { page, context } = alice;
      // A second tab of the UI, left open while the first signs out.
      const other = await context.newPage();
      await other.goto(`${base}/tokens`);
      await other.getByRole('heading', { level: 1, name: 'API tokens' }).waitFor();
      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.waitForURL(/\/signin/);
      const me = await page.evaluate(async () => (await fetch('/api/me')).status);
      t.equal(me, 401);
      // Its next renewal (here: the tab shown again) gets 401, and it goes to sign-in instead of retrying.
      const refused = other.waitForResponse((res) => res.url() === `${base}/auth/desktop-access` && res.status() === 401);
      await other.evaluate(() => (globalThis as any).document.dispatchEvent(new Event('visibilitychange')));
      await refused;
      await other.waitForURL(/\/signin\?next=%2Ftokens/);
      t.pass('the other tab learns the session ended at its next renewal and shows sign-in');
      await other.close();
    });

    await t.test('readable on a phone', async (t) => {
      const { page } = bob;
      await page.setViewportSize({ width: 360, height: 740 });
      await page.goto(`${base}/`);
      await page.locator('#catalog').waitFor();
      const overflow = await sidewaysOverflow(page);
      t.equal(overflow, 0, 'no sideways scrolling at 360 px');
      await screenshot(page, '11-phone');
      await accessible(t, page, '11-phone');
      // The dark theme has its own colours: contrast is checked there too.
      await page.emulateMedia({ colorScheme: 'dark' });
      await screenshot(page, '12-phone-dark');
      await accessible(t, page, '12-phone-dark');
      // The API tokens page on a phone, dark.
      await page.goto(`${base}/tokens`);
      await page.getByRole('heading', { level: 1, name: 'API tokens' }).waitFor();
      await page.locator('#token-name').waitFor();
      const tokensOverflow = await sidewaysOverflow(page);
      t.equal(tokensOverflow, 0, 'the API tokens page does not scroll sideways at 360 px either');
      await screenshot(page, '16-tokens-phone-dark');
      await accessible(t, page, '16-tokens-phone-dark');
    });

    await t.test('the idle clocks: a countdown before, Keep it running, disconnected and Reconnect', async (t) => {
      const carol = await browser('carol');
      const { page, context } = carol;
      await signIn(page, 'carol-e2e');
      await page.locator(`[data-type-id="${CLOCKS_TYPE}"]`).getByRole('button', { name: /Launch/ }).click();
      const card = page.locator('#my-desktops [data-desktop-id]').first();
      await card.locator('.badge[data-state="running"]').waitFor();
      const id = (await card.getAttribute('data-desktop-id')) ?? '';
      type Clocks = { disconnected: { reason: string } | null; deadlines: { clock: string; at: string }[] };
      const clocks = async () => page.evaluate(async (id) => ((await (await fetch(`/api/desktops/${id}`)).json()) as { clocks: Clocks }).clocks, id);
      const WARN_WAIT = { timeout: 30_000 };

      // Nobody connected: the expiry warns (after 10 s of its 40), in the list, counting down by itself.
      const expire = card.locator('[data-clock="expire"]');
      await expire.waitFor(WARN_WAIT);
      t.match(await expire.textContent(), new RegExp(`^Stops in 0:[0-3]\\d: nobody has been connected for ${EXPIRE_AFTER_S} seconds`), 'the list warns before the expiry stops it');
      const first = await expire.locator('.countdown').textContent();
      await sleep(1300);
      const second = await expire.locator('.countdown').textContent();
      t.not(second, first, `the countdown ticks without a refetch (${first} -> ${second})`);
      t.equal(await expire.getByRole('timer').count(), 1, 'the countdown is a timer (not announced every second)');
      const spoken = (await card.locator('.clocks > [role="status"]').textContent()) ?? '';
      t.match(spoken, /stops in less than a minute: nobody has been connected for 40 seconds/i, `the live region says it coarsely (${spoken})`);
      t.notMatch(spoken, /\d:\d\d/, 'without the seconds');
      const lifetime = card.locator('[data-clock="lifetime"]');
      t.match(await lifetime.textContent(), /^Stops in 9:\d\d: its lifetime of 10 minutes ends/, 'the lifetime warns too');
      t.equal(await lifetime.getByRole('button').count(), 0, 'without Keep it running, which cannot extend it');
      await screenshot(page, '17-clock-warning');
      await accessible(t, page, '17-clock-warning');

      const before = (await clocks()).deadlines.find((d) => d.clock === 'expire')!.at;
      await expire.getByRole('button', { name: /^Keep it running/ }).click();
      await expire.waitFor({ state: 'detached' });
      const after = (await clocks()).deadlines.find((d) => d.clock === 'expire')!.at;
      t.ok(Date.parse(after) - Date.parse(before) > 5000, `Keep it running moved the server's deadline (${before} -> ${after}) and the warning went`);
      t.equal(await page.evaluate(() => (globalThis as any).document.activeElement?.id), `desktop-${id}-title`, 'focus goes to the desktop, not lost');

      // Open it: the demo page's WebSocket makes it connected, so its idle clock runs.
      await card.getByRole('link', { name: /Open .* here/ }).click();
      await page.waitForURL(`${base}/desktops/${encodeURIComponent(id)}`);
      const inside = page.frameLocator('iframe');
      await inside.locator('#status', { hasText: 'Connected' }).waitFor();
      const notice = page.locator('.viewer-notice');

      // Kasm's client gave up by its own idle timer: only a message from the desktop's iframe counts.
      await page.evaluate(() => (globalThis as any).postMessage({ action: 'idle_session_timeout', value: 'Idle session timeout exceeded' }, '*'));
      await sleep(300);
      t.equal(await notice.locator('[data-clock="disconnected"]').count(), 0, 'a message from elsewhere than the iframe is ignored');
      const frame = async () => (await page.locator('iframe').elementHandle())!.contentFrame();
      await (await frame())!.evaluate(() => {
        const w = globalThis as any;
        w.__before = true;
        w.parent.postMessage({ action: 'idle_session_timeout', value: 'Idle session timeout exceeded' }, '*');
      });
      const clientGone = notice.locator('[data-clock="disconnected"]');
      await clientGone.waitFor();
      t.match(await clientGone.textContent(), /its idle timeout/, "Kasm's idle_session_timeout shows the disconnected state");
      await clientGone.getByRole('button', { name: /^Reconnect/ }).click();
      await clientGone.waitFor({ state: 'detached' });
      await inside.locator('#status', { hasText: 'Connected' }).waitFor();
      t.equal(await (await frame())!.evaluate(() => (globalThis as any).__before ?? null), null, 'Reconnect loaded the desktop again');

      // No use for a while: warned in the open view, then its streams are held disconnected.
      const idle = notice.locator('[data-clock="idle"]');
      await idle.waitFor(WARN_WAIT);
      t.match(await idle.textContent(), /^Disconnects in 0:[01]\d because nobody has used it/, 'the open view warns before the idle disconnect');
      t.equal(await idle.getByRole('button', { name: /^Keep it running/ }).count(), 1, 'with Keep it running');
      const held = notice.locator('[data-clock="disconnected"]');
      await held.waitFor(WARN_WAIT);
      const reason = `Disconnected after ${IDLE_AFTER_S} seconds without use`;
      t.match(await held.textContent(), reason, 'then says why it was disconnected (the event stream told the view)');
      t.match((await clocks()).disconnected?.reason, reason, 'as the API does');
      await screenshot(page, '18-disconnected');
      await accessible(t, page, '18-disconnected');
      // The list in another tab says so too, with Reconnect.
      const list = await context.newPage();
      await list.goto(`${base}/`);
      const listed = list.locator(`[data-desktop-id="${id}"] [data-clock="disconnected"]`);
      await listed.waitFor();
      t.match(await listed.textContent(), reason, 'the list shows the reason');
      t.equal(await listed.getByRole('button', { name: /^Reconnect/ }).count(), 1, 'and Reconnect');
      await list.close();

      await held.getByRole('button', { name: /^Reconnect/ }).click();
      await held.waitFor({ state: 'detached' });
      t.equal((await clocks()).disconnected, null, 'Reconnect re-armed it (clocks.disconnected is null)');
      await inside.locator('#status', { hasText: 'Connected' }).waitFor();
      t.pass("the reloaded desktop's WebSocket is let through again");

      const status = await page.evaluate(async (id) => (await fetch(`/api/desktops/${id}`, { method: 'DELETE' })).status, id);
      t.equal(status, 204, 'cleaned up');
      t.same(carol.errors, [], 'no script error and no request off this machine');
    });

    t.same([...alice.errors, ...bob.errors], [], 'no script error and no request off this machine');
  });

}
