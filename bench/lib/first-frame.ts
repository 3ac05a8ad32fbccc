/**
 * Click to first frame (issue 31, section 3): in headless Chromium, a user on the dashboard presses
 * Launch on the real X desktop (the shipped `desktop` type, image deskhub/desktop:local: Xvfb,
 * openbox, x11vnc, noVNC over HTTPS), waits for its card to say Running, presses "Open here", and
 * the desktop's noVNC, in the page's iframe, connects through the proxy and paints. Timed:
 * - from the Launch click (the button's own click listener reads the clock) to the card's Running;
 * - from the "Open here" click to the first framebuffer update painted by noVNC, read from the
 *   iframe: an init script wraps the 2D canvas's drawing calls and notes the first copy onto the
 *   visible canvas after noVNC decoded an update into its backbuffer (FIRST_PAINT_PROBE);
 * - click to first frame, the sum: what the user waits, less the time the harness takes to
 *   notice Running and click (reported apart, as `reactionMs`).
 * Both clocks are the browser's (`performance.timeOrigin + performance.now()` in each document).
 * Cold (a type with no pool) and from the pool (the same type with a pool of one, full before each
 * claim) alternate; each desktop is deleted before the next launch.
 *
 * A pooled claim refills the pool at once, so a container starts on this machine while noVNC
 * loads, and a Chromium on this machine would see Docker's new veth interface as a network change
 * and abort the load. So Chromium runs in a network namespace of its own (services/control-plane/test/isolated-browser.ts),
 * as a user's browser on another machine sees none of the server's interfaces; each sample still
 * counts the ERR_NETWORK_CHANGED messages the page saw (expected: none).
 */
import path from 'node:path';
import { catalogYaml, shippedType } from '../../services/control-plane/test/catalog-fixtures.ts';
import { waitFor } from '../../soak/lib/topology.ts';
import { launchIsolatedChromium } from '../../services/control-plane/test/isolated-browser.ts';
import { startDeployedTopology } from './deployed.ts';
import { dockerUnavailable, poolFull } from './pool.ts';
import { median, percentile } from './stats.ts';

export interface FirstFrameSettings {
  /** Launches per kind (cold and pooled each). */
  launches: number;
  replicas: number;
}

export interface FirstFrameSample {
  /** Launch click to the card's Running, ms. */
  launchToRunningMs: number;
  /** The harness noticing Running and clicking "Open here", ms. */
  reactionMs: number;
  /** "Open here" click to the first painted framebuffer update, ms. */
  openToFrameMs: number;
  /** Of that: the click until noVNC made its WebSocket (the page, its iframe and noVNC's scripts loaded), ms. */
  openToSocketMs: number;
  /** The WebSocket made until open (the upgrade through the proxy to the desktop), ms. */
  socketOpenMs: number;
  /** Open until the first frame painted (RFB handshake, the first update, drawn), ms. */
  socketToFrameMs: number;
  /** launchToRunning + openToFrame, ms. */
  clickToFrameMs: number;
  /** Chromium messages naming ERR_NETWORK_CHANGED while the sample ran. */
  networkChanges: number;
}

export interface FirstFrameSeries {
  samples: FirstFrameSample[];
  clickToFrameMedianMs: number;
  clickToFrameP99Ms: number;
  launchToRunningMedianMs: number;
  openToFrameMedianMs: number;
  openToSocketMedianMs: number;
  socketOpenMedianMs: number;
  socketToFrameMedianMs: number;
}

export interface FirstFrameResult {
  settings: FirstFrameSettings;
  desktop: string;
  cold?: FirstFrameSeries;
  pooled?: FirstFrameSeries;
  notMeasured?: string;
}

const IMAGE = 'deskhub/desktop:local';
const COLD = 'desktop-cold';
const POOLED = 'desktop-pooled';

/** Runs in every document, the noVNC iframe included, before its own scripts. */
const FIRST_PAINT_PROBE = `(() => {
  if ('__deskhubFirstPaint' in window) return;
  window.__deskhubFirstPaint = null;
  // noVNC decodes each update into a backbuffer canvas (never in the page) with fillRect,
  // putImageData and drawImage, then copies it onto the visible canvas with drawImage. The first
  // copy onto a visible canvas after the first decoded update is the first frame painted. One
  // backbuffer call is not an update: when noVNC sizes the backbuffer for the desktop it puts back
  // the blank 300x150 a new canvas starts with.
  let decoded = false;
  const sizeable = (c) => c.width >= 64 && c.height >= 64;
  const proto = CanvasRenderingContext2D.prototype;
  for (const name of ['fillRect', 'putImageData', 'drawImage']) {
    const original = proto[name];
    proto[name] = function (...args) {
      const result = original.apply(this, args);
      const canvas = this.canvas;
      if (window.__deskhubFirstPaint === null && sizeable(canvas)) {
        if (!canvas.isConnected) {
          const sizing = name === 'putImageData' && args[0].width === 300 && args[0].height === 150 && args[1] === 0 && args[2] === 0;
          if (!sizing) decoded = true;
        } else if (decoded && name === 'drawImage') {
          window.__deskhubFirstPaint = performance.timeOrigin + performance.now();
        }
      }
      return result;
    };
  }
  // Where the time goes: the first WebSocket noVNC opens, made and open. noVNC sets its onopen
  // right after making the socket; replacing the WebSocket class instead broke noVNC's checks.
  window.__deskhubSocket = {};
  const onopen = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onopen');
  Object.defineProperty(WebSocket.prototype, 'onopen', {
    configurable: true,
    enumerable: onopen.enumerable,
    get() { return onopen.get.call(this); },
    set(handler) {
      const mark = window.__deskhubSocket;
      if (mark.created === undefined) mark.created = performance.timeOrigin + performance.now();
      onopen.set.call(this, typeof handler !== 'function' ? handler : function (...args) {
        if (mark.open === undefined) mark.open = performance.timeOrigin + performance.now();
        return handler.apply(this, args);
      });
    },
  });
})();`;

function catalogText(): string {
  const desktop = shippedType('desktop');
  return catalogYaml([
    { ...desktop, id: COLD, name: 'X desktop (cold)' },
    { ...desktop, id: POOLED, name: 'X desktop (pooled)', pool: { size: 1, expireAfter: '4h' } },
  ]);
}

function summary(samples: FirstFrameSample[]): FirstFrameSeries {
  const click = samples.map((s) => s.clickToFrameMs);
  return {
    samples,
    clickToFrameMedianMs: median(click),
    clickToFrameP99Ms: percentile(click, 99),
    launchToRunningMedianMs: median(samples.map((s) => s.launchToRunningMs)),
    openToFrameMedianMs: median(samples.map((s) => s.openToFrameMs)),
    openToSocketMedianMs: median(samples.map((s) => s.openToSocketMs)),
    socketOpenMedianMs: median(samples.map((s) => s.socketOpenMs)),
    socketToFrameMedianMs: median(samples.map((s) => s.socketToFrameMs)),
  };
}

export async function firstFrameFigures(
  runDir: string,
  settings: FirstFrameSettings,
  log: (m: string) => void,
  onStarted: (close: () => Promise<void>) => void = () => {},
): Promise<FirstFrameResult> {
  const result: FirstFrameResult = { settings, desktop: `${IMAGE} (the shipped \`desktop\` type)` };
  const missing = await dockerUnavailable(IMAGE);
  if (missing) return { ...result, notMeasured: missing };
  const topo = await startDeployedTopology(runDir, { name: 'first-frame', catalog: catalogText, docker: true, replicas: settings.replicas }, log);
  onStarted(topo.close);
  const isolated = await launchIsolatedChromium(topo.dir, [Number(new URL(topo.publicUrl).port)]).catch(async (err: Error) => {
    await topo.close();
    throw new Error(`Chromium did not start (CHROMIUM_PATH or /usr/bin/chromium, in a network namespace of its own): ${err.message}`);
  });
  const { browser } = isolated;
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await context.addInitScript({ content: FIRST_PAINT_PROBE });
    const page = await context.newPage();
    let networkChanges = 0;
    // What went wrong in the page during a sample, for the error when no frame comes.
    let trouble: string[] = [];
    const seen = (text: string) => {
      if (text.includes('ERR_NETWORK_CHANGED')) networkChanges++;
      if (trouble.length < 20) trouble.push(text.slice(0, 300));
    };
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') seen(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (err) => seen(`page error: ${err.message}`));
    page.on('requestfailed', (r) => seen(`request failed: ${r.url()}: ${r.failure()?.errorText ?? ''}`));
    page.on('response', (r) => {
      if (r.status() >= 400) seen(`${r.status()} for ${r.url()}`);
    });

    // Signed in as a user would be, through the public address.
    await page.goto(`${topo.publicUrl}/`);
    await page.waitForURL(/\/signin\?next=/);
    await page.getByLabel('Username').fill('frame');
    await page.keyboard.press('Enter');
    await page.locator('#whoami', { hasText: 'frame' }).waitFor();
    const user = await topo.signIn('frame');

    const launchOnce = async (type: string): Promise<FirstFrameSample> => {
      networkChanges = 0;
      trouble = [];
      await page.goto(`${topo.publicUrl}/`);
      const button = page.locator(`[data-type-id="${type}"]`).getByRole('button', { name: /Launch/ });
      await button.waitFor();
      const clockAt = (selector: string) =>
        page.evaluate((sel) => {
          const w = globalThis as unknown as { document: { querySelector(s: string): { addEventListener(e: string, f: () => void, o: unknown): void } | null }; __clicked?: Record<string, number> };
          w.__clicked ??= {};
          w.document.querySelector(sel)!.addEventListener('click', () => (w.__clicked![sel] = performance.timeOrigin + performance.now()), { capture: true, once: true });
        }, selector);
      const launchSelector = `[data-type-id="${type}"] button[type="submit"]`;
      await clockAt(launchSelector);
      // The moment the card says Running, seen by the page itself (the page starts with no desktop).
      await page.evaluate(() => {
        const w = globalThis as unknown as { document: { body: unknown; querySelector(s: string): unknown }; __runningAt?: number; MutationObserver: new (f: () => void) => { observe(n: unknown, o: unknown): void; disconnect(): void } };
        const observer = new w.MutationObserver(() => {
          if (w.__runningAt === undefined && w.document.querySelector('#my-desktops .badge[data-state="running"]')) {
            w.__runningAt = performance.timeOrigin + performance.now();
            observer.disconnect();
          }
        });
        observer.observe(w.document.body, { subtree: true, childList: true, attributes: true });
      });
      await button.click();
      const card = page.locator('#my-desktops [data-desktop-id]').first();
      await card.locator('.badge[data-state="running"]').waitFor({ timeout: 180_000 });
      const runningAt = await page.evaluate(() => (globalThis as unknown as { __runningAt: number }).__runningAt);
      const id = (await card.getAttribute('data-desktop-id')) ?? '';
      const open = card.getByRole('link', { name: /^Open .* here$/ });
      const openSelector = `[data-desktop-id="${id}"] a.button.primary`;
      await clockAt(openSelector);
      await open.click();
      const frame = await waitFor('the desktop in the page', async () => page.frames().find((f) => f.url().includes('/desktop/')), 30_000, 20);
      const painted = await frame.waitForFunction(() => (globalThis as unknown as { __deskhubFirstPaint: number | null }).__deskhubFirstPaint, undefined, { timeout: 120_000, polling: 20 }).catch(async (err: Error) => {
        // What the page showed, for the error: noVNC's status line and its canvases.
        const shot = path.join(topo.dir, `first-frame-${type}-${Date.now()}.png`);
        await page.screenshot({ path: shot }).catch(() => {});
        const state = await frame
          .evaluate(() => {
            const d = (globalThis as unknown as { document: { querySelector(s: string): { textContent: string } | null; querySelectorAll(s: string): { width: number; height: number; isConnected: boolean }[] } }).document;
            return { status: d.querySelector('#noVNC_status')?.textContent ?? null, canvases: [...d.querySelectorAll('canvas')].map((c) => `${c.width}x${c.height}`) };
          })
          .catch((e: Error) => ({ error: e.message }));
        throw new Error(`no frame painted in the desktop (${frame.url()}): ${err.message}; page state ${JSON.stringify(state)}; screenshot ${shot}; seen in the page: ${trouble.join(' | ') || 'nothing'}`);
      });
      const paintAt = (await painted.jsonValue()) as number;
      const socket = await frame.evaluate(() => (globalThis as unknown as { __deskhubSocket: { created?: number; open?: number } }).__deskhubSocket);
      const clicked = await page.evaluate(() => (globalThis as unknown as { __clicked: Record<string, number> }).__clicked);
      const launchAt = clicked[launchSelector]!;
      const openAt = clicked[openSelector]!;
      await page.goto('about:blank');
      await user.call('DELETE', `/api/desktops/${id}`);
      const sample = {
        launchToRunningMs: runningAt - launchAt,
        reactionMs: openAt - runningAt,
        openToFrameMs: paintAt - openAt,
        openToSocketMs: (socket.created ?? NaN) - openAt,
        socketOpenMs: (socket.open ?? NaN) - (socket.created ?? NaN),
        socketToFrameMs: paintAt - (socket.open ?? NaN),
        clickToFrameMs: runningAt - launchAt + (paintAt - openAt),
        networkChanges,
      };
      for (const [k, v] of Object.entries(sample)) if (!Number.isFinite(v) || v < 0) throw new Error(`first frame (${type}): ${k} is ${v}`);
      return sample;
    };

    // One of each first, not counted: the first launch pays for code compiled once, and the page's assets.
    await poolFull(topo.admin, POOLED, 1);
    await launchOnce(POOLED);
    await poolFull(topo.admin, POOLED, 1);
    await launchOnce(COLD);
    const cold: FirstFrameSample[] = [];
    const pooled: FirstFrameSample[] = [];
    for (let i = 0; i < settings.launches; i++) {
      await poolFull(topo.admin, POOLED, 1);
      pooled.push(await launchOnce(POOLED));
      await poolFull(topo.admin, POOLED, 1);
      cold.push(await launchOnce(COLD));
      log(`first frame: ${i + 1}/${settings.launches}: from the pool ${pooled.at(-1)!.clickToFrameMs.toFixed(0)} ms, cold ${cold.at(-1)!.clickToFrameMs.toFixed(0)} ms`);
    }
    return { ...result, cold: summary(cold), pooled: summary(pooled) };
  } finally {
    await isolated.close();
    await topo.close();
  }
}

export function firstFrameMarkdown(f: FirstFrameResult): string {
  if (f.notMeasured || !f.cold || !f.pooled) return `Click to first frame: not measured (${f.notMeasured ?? 'no samples'}).\n`;
  const ms = (v: number) => (v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v).toLocaleString('en-US')} ms`);
  const changes = (s: FirstFrameSeries) => s.samples.reduce((n, x) => n + x.networkChanges, 0);
  const row = (label: string, pick: (s: FirstFrameSeries) => number) => `| ${label} | ${ms(pick(f.pooled!))} | ${ms(pick(f.cold!))} |`;
  return [
    `Click to first frame (issue 31), headless Chromium, ${f.desktop}, ${f.settings.launches} launches each, through ${f.settings.replicas} proxy replicas: ` +
      'Launch pressed on the dashboard → the card says Running → "Open here" → noVNC in the page paints its first framebuffer update ' +
      '(read in the page: noVNC\'s first copy of a decoded update onto the visible canvas). The harness\'s own reaction between Running and its click is left out.',
    '',
    '| figure | from the pool | cold |',
    '|---|---:|---:|',
    row('click to first frame, median', (s) => s.clickToFrameMedianMs),
    row(`click to first frame, p99 (slowest of ${f.settings.launches})`, (s) => s.clickToFrameP99Ms),
    row('Launch → Running, median', (s) => s.launchToRunningMedianMs),
    row('Open → first frame, median', (s) => s.openToFrameMedianMs),
    row('… Open → noVNC makes its WebSocket (page and scripts loaded)', (s) => s.openToSocketMedianMs),
    row('… WebSocket made → open (upgrade through the proxy)', (s) => s.socketOpenMedianMs),
    row('… open → first frame painted (RFB handshake, first update)', (s) => s.socketToFrameMedianMs),
    '',
    `Network changes Chromium saw (Docker's interfaces of the pool's refill, a test-machine artefact): ${changes(f.pooled)} while launching from the pool, ${changes(f.cold)} cold.`,
    '',
  ].join('\n');
}
