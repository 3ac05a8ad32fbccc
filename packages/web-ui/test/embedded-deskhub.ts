/**
 * What the browser tests share: the embedded start (`pnpm start`'s entry: control plane, proxy,
 * process runtime, dev sign-in) in a child process on a free loopback port with a fresh DATA_DIR,
 * either on http://127.0.0.1:<port> or with desktops on origins of their own
 * (DESKTOP_ORIGIN=http://*.localhost:<port>, which browsers resolve to loopback themselves; the UI
 * on http://localhost:<port>); and Debian's Chromium, headless with a fresh profile, allowed to
 * reach that deskhub and nothing else.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { freePort } from '@deskhub/testkit/net';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import type { Test } from 'tap';

export const repo = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
/** The embedded start; DESKHUB_E2E_ENTRY runs the tests against another entry script (a work-in-progress build). */
export const embeddedEntry = process.env.DESKHUB_E2E_ENTRY ? resolve(process.env.DESKHUB_E2E_ENTRY) : join(repo, 'services/control-plane/src/embedded.ts');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const artifacts = join(repo, 'test-artifacts/web-ui');

export interface EmbeddedDeskhub {
  port: number;
  /** PUBLIC_URL: http://localhost:<port> with desktop origins, else http://127.0.0.1:<port>. */
  base: string;
  /** A desktop's own origin. */
  originOf(path: string): string;
  /** The last of what it printed (for failure messages). */
  output(): string;
  /** Resolves once /readyz answers. */
  ready(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

/** Why the embedded start cannot run here, or null. */
export function embeddedMissing(): string | null {
  return existsSync(embeddedEntry) ? null : `the control plane's embedded start (${embeddedEntry}) does not exist yet`;
}

/** Why Chromium cannot run here, or null. */
export function chromiumMissing(): string | null {
  return existsSync(CHROMIUM) ? null : `${CHROMIUM} is not installed (apt-get install chromium)`;
}

/**
 * The default catalog with its process types given absolute paths (the copy lives in DATA_DIR,
 * the original's paths are relative to its folder); `extra` is appended to its types.
 */
export async function defaultCatalog(dir: string, extra = ''): Promise<string> {
  const controlPlane = join(repo, 'services/control-plane');
  const file = join(dir, 'catalog.yaml');
  const base = (await readFile(join(controlPlane, 'catalog.yaml'), 'utf8'))
    .replaceAll('{catalogDir}', controlPlane)
    .replaceAll('    runtime: process\n', `    runtime: process\n    workingDir: ${controlPlane}\n`);
  await writeFile(file, `${base.trimEnd()}\n${extra}`);
  return file;
}

export interface StartOptions {
  /** Desktops on origins of their own (DESKTOP_ORIGIN); the UI then on http://localhost:<port>. */
  desktopOrigins?: boolean;
  /** Writes the catalog into the run's DATA_DIR and returns its path; default: defaultCatalog. */
  catalog?: (dataDir: string) => Promise<string>;
  /** More environment (overrides the defaults). */
  env?: Record<string, string>;
}

export async function startDeskhub(options: StartOptions = {}): Promise<EmbeddedDeskhub> {
  const dataDir = await mkdtemp(join(tmpdir(), 'deskhub-web-ui-e2e-'));
  const catalog = await (options.catalog ?? defaultCatalog)(dataDir);
  const port = await freePort();
  const origins = options.desktopOrigins ?? false;
  const base = origins ? `http://localhost:${port}` : `http://127.0.0.1:${port}`;
  let output = '';
  const system: ChildProcess = spawn(process.execPath, ['--import', 'tsx', embeddedEntry], {
    cwd: repo,
    // Its own process group, so a hung stop can be ended with the desktops it started.
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      PORT: String(port),
      // The metrics listeners default to fixed ports another deskhub here may hold.
      METRICS_PORT: String(await freePort()),
      PROXY_METRICS_PORT: String(await freePort()),
      HOST: '127.0.0.1',
      PUBLIC_URL: base,
      ...(origins ? { DESKTOP_ORIGIN: `http://*.localhost:${port}` } : {}),
      DATA_DIR: dataDir,
      AUTH_MODE: 'dev',
      RUNTIME: 'process',
      CATALOG: catalog,
      LOG_LEVEL: 'warn',
      ...options.env,
    },
  });
  system.stdout!.on('data', (b: Buffer) => (output = (output + b.toString()).slice(-20_000)));
  system.stderr!.on('data', (b: Buffer) => (output = (output + b.toString()).slice(-20_000)));
  const exited = once(system, 'exit');
  return {
    port,
    base,
    originOf: (path) => `http://${path}.localhost:${port}`,
    output: () => output,
    async ready(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (system.exitCode !== null) throw new Error(`the embedded start exited with ${system.exitCode}:\n${output}`);
        try {
          if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return;
        } catch {
          // not listening yet
        }
        await sleep(250);
      }
      throw new Error(`the embedded start was not ready within ${timeoutMs} ms:\n${output}`);
    },
    async close() {
      if (system.exitCode === null && system.signalCode === null) {
        system.kill('SIGINT'); // Ctrl-C: it stops its desktops itself.
        const stopped = await Promise.race([exited.then(() => true), sleep(30_000).then(() => false)]);
        if (!stopped) process.kill(-system.pid!, 'SIGKILL');
      }
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A person's browser: Debian's Chromium, headless, a fresh profile (removed at teardown), and
 * every request to anything but `allowed` failed and recorded in `errors` (CDN, fonts, telemetry
 * would be defects: the machines are offline). `extraArgs` go on Chromium's command line (e.g.
 * which self-signed certificate to accept).
 */
export async function launchChromium(t: Test, name: string, allowed: RegExp, waitMs: number, extraArgs: string[] = []): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const profile = await mkdtemp(join(tmpdir(), `deskhub-chromium-${name}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extraArgs],
    viewport: { width: 1280, height: 900 },
  });
  t.teardown(async () => {
    await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true });
  });
  context.setDefaultTimeout(waitMs);
  // tsx keeps function names with a __name() helper that page.evaluate carries into the page.
  await context.addInitScript('globalThis.__name = (f) => f;');
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await context.route(/.*/, (route) => {
    const url = route.request().url();
    if (allowed.test(url) || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
    errors.push(`request to another origin: ${url}`);
    return route.abort();
  });
  return { context, page, errors };
}
