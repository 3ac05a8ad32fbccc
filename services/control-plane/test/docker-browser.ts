/**
 * Looking at a desktop in a real browser: Debian's Chromium driven by playwright-core with the
 * flags from test-images.md, a wait in real time for noVNC's "Connected" status, and a check
 * that the screenshot shows a desktop (thousands of distinct colours) rather than a blank page.
 * The PNG is decoded here (zlib and the five PNG filters) so no image library is needed.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { chromium, type Browser, type Page } from 'playwright-core';
import { repoRoot } from './docker-helpers.ts';

export const artifactsDir = join(repoRoot, 'test-artifacts');

export const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** `executablePath`: a wrapper that runs Chromium (bench/lib/isolated-browser.ts). */
export async function launchChromium(executablePath = chromiumPath): Promise<Browser> {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium's screenshots are). */
export function decodePng(png: Buffer): { width: number; height: number; channels: number; pixels: Buffer } {
  if (png.readUInt32BE(0) !== 0x89504e47) throw new Error('not a PNG');
  let offset = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  while (offset < png.length) {
    const length = png.readUInt32BE(offset);
    const type = png.toString('latin1', offset + 4, offset + 8);
    const data = png.subarray(offset + 8, offset + 8 + length);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const depth = data[8];
      const colour = data[9];
      const interlace = data[12];
      if (depth !== 8 || (colour !== 2 && colour !== 6) || interlace !== 0) {
        throw new Error(`unsupported PNG: depth ${depth}, colour type ${colour}, interlace ${interlace}`);
      }
      channels = colour === 6 ? 4 : 3;
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'IEND') {
      break;
    }
    offset += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const pixels = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const out = pixels.subarray(y * stride, (y + 1) * stride);
    const prev = y > 0 ? pixels.subarray((y - 1) * stride, y * stride) : null;
    for (let x = 0; x < stride; x++) {
      const left = x >= channels ? out[x - channels]! : 0;
      const up = prev ? prev[x]! : 0;
      const upLeft = prev && x >= channels ? prev[x - channels]! : 0;
      let value = line[x]!;
      switch (filter) {
        case 0:
          break;
        case 1:
          value += left;
          break;
        case 2:
          value += up;
          break;
        case 3:
          value += (left + up) >> 1;
          break;
        case 4: {
          const p = left + up - upLeft;
          const pa = Math.abs(p - left);
          const pb = Math.abs(p - up);
          const pc = Math.abs(p - upLeft);
          value += pa <= pb && pa <= pc ? left : pb <= pc ? up : upLeft;
          break;
        }
        default:
          throw new Error(`bad PNG filter ${filter} on line ${y}`);
      }
      out[x] = value & 0xff;
    }
  }
  return { width, height, channels, pixels };
}

export function distinctColours(png: Buffer): number {
  const { pixels, channels } = decodePng(png);
  const seen = new Set<number>();
  for (let i = 0; i + 2 < pixels.length; i += channels) seen.add((pixels[i]! << 16) | (pixels[i + 1]! << 8) | pixels[i + 2]!);
  return seen.size;
}

/**
 * Opens noVNC at `url` and waits until it says "Connected"; returns the status and the network
 * changes it had to ride out. Chromium aborts navigations and connections with
 * ERR_NETWORK_CHANGED when the host's interfaces change, and Docker adds and removes veth
 * interfaces (and their IPv6 addresses settle a moment later) whenever a container starts or
 * stops, ours or another test's: seen here as a failed navigation, or as a noVNC page whose
 * status never appeared. Only that is retried (up to `attempts` times, each seen by the page as
 * a Chromium error or console message naming it); any other failure fails at once.
 */
export async function openNoVnc(page: Page, url: string, options: { attempts?: number; timeoutMs?: number } = {}): Promise<{ status: string; networkChanges: number }> {
  const attempts = options.attempts ?? 3;
  let networkChanged = false;
  const onFailed = (r: { failure(): { errorText: string } | null }) => {
    if (r.failure()?.errorText.includes('ERR_NETWORK_CHANGED')) networkChanged = true;
  };
  const onConsole = (m: { text(): string }) => {
    if (m.text().includes('ERR_NETWORK_CHANGED')) networkChanged = true;
  };
  page.on('requestfailed', onFailed);
  page.on('console', onConsole);
  try {
    for (let attempt = 1; ; attempt++) {
      networkChanged = false;
      try {
        await page.goto(url);
        const connected = waitForNoVncConnected(page, options.timeoutMs);
        let poll: ReturnType<typeof setInterval> | undefined;
        const changed = new Promise<null>((resolve) => {
          poll = setInterval(() => networkChanged && resolve(null), 250);
        });
        const status = await Promise.race([connected, changed]).finally(() => clearInterval(poll));
        if (status !== null) return { status, networkChanges: attempt - 1 };
        connected.catch(() => {}); // abandoned: the page is loaded again
        if (attempt >= attempts) throw new Error(`noVNC did not connect: Chromium saw the network change (ERR_NETWORK_CHANGED) on each of ${attempts} attempts`);
      } catch (err) {
        const changed = networkChanged || /ERR_NETWORK_CHANGED/.test((err as Error).message);
        if (!changed || attempt >= attempts) throw err;
      }
    }
  } finally {
    page.off('requestfailed', onFailed);
    page.off('console', onConsole);
  }
}

/** Waits in real time until noVNC says "Connected" (it shows "Connecting..." first). */
export async function waitForNoVncConnected(page: Page, timeoutMs = 60_000): Promise<string> {
  const status = await page.waitForFunction(
    () => {
      // Runs in the page; this package's tsconfig has no DOM types.
      const doc = (globalThis as unknown as { document: { getElementById(id: string): { textContent: string | null } | null } }).document;
      const text = doc.getElementById('noVNC_status')?.textContent ?? '';
      return /^Connected/.test(text) ? text : /Failed|Disconnected|Something went wrong/i.test(text) ? `FAILED: ${text}` : false;
    },
    undefined,
    { timeout: timeoutMs, polling: 200 },
  );
  const text = String(await status.jsonValue());
  if (text.startsWith('FAILED')) throw new Error(`noVNC did not connect: ${text}`);
  return text;
}

/**
 * Screenshots until the picture has at least `minColours` colours (the first frames may still
 * be arriving), bounded in tries; saves the last one under test-artifacts/ and returns it.
 */
export async function screenshotDesktop(page: Page, name: string, minColours = 1000): Promise<{ file: string; colours: number }> {
  mkdirSync(artifactsDir, { recursive: true });
  const file = join(artifactsDir, name);
  let colours = 0;
  let png: Buffer = Buffer.alloc(0);
  // Generous: on a loaded 2-core machine the first windows can take many seconds to appear.
  const deadline = Date.now() + 60_000;
  for (let i = 0; i < 120 && Date.now() < deadline; i++) {
    png = await page.screenshot({ type: 'png' });
    colours = distinctColours(png);
    if (colours >= minColours) break;
    await page.waitForTimeout(500);
  }
  writeFileSync(file, png);
  return { file, colours };
}
