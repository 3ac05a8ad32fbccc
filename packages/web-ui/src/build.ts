/**
 * Builds the browser bundle (client/ -> dist/) with Vite, and knows whether dist/ is current.
 * The install and start commands call it, and the serving plugin calls it when dist/ is missing
 * or older than the sources, so nobody has to remember a build step by hand.
 *
 * A build writes into a fresh temporary folder and swaps it in with renames, so a server reading
 * dist/ while another process builds never serves half a build.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, extname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants as zlibConstants, gzipSync } from 'node:zlib';

export const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const defaultDistDir = join(packageDir, 'dist');
export const STAMP_FILE = '.deskhub-build.json';
/** What the error messages tell people to run. */
export const BUILD_COMMAND = 'pnpm --filter @deskhub/web-ui build';

/** Everything whose change changes the bundle. */
const SOURCE_ROOTS = ['client', 'public', 'package.json', 'src/build.ts'];

export interface FileSize {
  file: string;
  bytes: number;
  gzip: number;
  brotli: number;
}

export interface BuildStamp {
  /** Hash of the sources the bundle was built from. */
  sources: string;
  builtAt: string;
  /** What the browser loads on the first visit (index.html and what it references), compressed. */
  firstLoad: { bytes: number; gzip: number; brotli: number };
  files: FileSize[];
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const full = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(full)));
    else if (e.isFile()) out.push(full);
  }
  return out;
}

/** Hash of every source file (path and content), or null when the sources are not shipped (dist only). */
export async function sourceHash(): Promise<string | null> {
  if (!existsSync(join(packageDir, 'client', 'index.html'))) return null;
  const files: string[] = [];
  for (const root of SOURCE_ROOTS) {
    const full = join(packageDir, root);
    const s = await stat(full).catch(() => null);
    if (!s) continue;
    if (s.isDirectory()) files.push(...(await walk(full)));
    else files.push(full);
  }
  files.sort();
  const hash = createHash('sha256');
  for (const f of files) {
    hash.update(relative(packageDir, f).split(sep).join('/'));
    hash.update('\0');
    hash.update(await readFile(f));
    hash.update('\0');
  }
  return hash.digest('hex');
}

export async function readStamp(distDir = defaultDistDir): Promise<BuildStamp | null> {
  try {
    return JSON.parse(await readFile(join(distDir, STAMP_FILE), 'utf8')) as BuildStamp;
  } catch {
    return null;
  }
}

/** Files worth compressing; the server sends their `.br` / `.gz` siblings written at build time. */
export const COMPRESSIBLE = new Set(['.html', '.js', '.css', '.svg', '.json', '.txt', '.webmanifest']);
export const COMPRESSED_SUFFIXES = ['.br', '.gz'] as const;

/** Best compression, done once at build time: brotli at quality 11 costs about half a second for the script. */
export function compress(body: Buffer): { gzip: Buffer; brotli: Buffer } {
  return {
    gzip: gzipSync(body, { level: 9 }),
    brotli: brotliCompressSync(body, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 11 } }),
  };
}

function isCompressedCopy(file: string): boolean {
  return COMPRESSED_SUFFIXES.some((suffix) => file.endsWith(suffix));
}

/** Writes `<file>.br` and `<file>.gz` beside every compressible file larger than a packet's worth of headers. */
async function precompress(distDir: string): Promise<void> {
  for (const full of await walk(distDir)) {
    if (isCompressedCopy(full) || !COMPRESSIBLE.has(extname(full))) continue;
    const body = await readFile(full);
    if (body.length <= 256) continue;
    const { gzip, brotli } = compress(body);
    await writeFile(`${full}.gz`, gzip);
    await writeFile(`${full}.br`, brotli);
  }
}

/** Sizes of every file in a built dist, and of the first page load (index.html plus the scripts and styles it links). */
export async function measure(distDir: string): Promise<Pick<BuildStamp, 'files' | 'firstLoad'>> {
  const files: FileSize[] = [];
  for (const full of await walk(distDir)) {
    const file = relative(distDir, full).split(sep).join('/');
    if (file === STAMP_FILE || isCompressedCopy(file)) continue;
    const body = await readFile(full);
    const sizeOf = async (suffix: string, make: () => Buffer) => (await stat(full + suffix).catch(() => null))?.size ?? make().length;
    files.push({
      file,
      bytes: body.length,
      gzip: await sizeOf('.gz', () => compress(body).gzip),
      brotli: await sizeOf('.br', () => compress(body).brotli),
    });
  }
  files.sort((a, b) => a.file.localeCompare(b.file));
  const index = await readFile(join(distDir, 'index.html'), 'utf8');
  const linked = new Set(['index.html']);
  for (const m of index.matchAll(/(?:src|href)="\/?([^"]+\.(?:js|css))"/g)) if (m[1]) linked.add(m[1]);
  const firstLoad = { bytes: 0, gzip: 0, brotli: 0 };
  for (const f of files) {
    if (!linked.has(f.file)) continue;
    firstLoad.bytes += f.bytes;
    firstLoad.gzip += f.gzip;
    firstLoad.brotli += f.brotli;
  }
  return { files, firstLoad };
}

export interface BuildOptions {
  distDir?: string;
  /** Vite's log level; the CLI shows its output, the plugin keeps quiet. */
  logLevel?: 'info' | 'warn' | 'error' | 'silent';
}

/** Builds client/ into distDir (default packages/web-ui/dist) and returns the stamp written next to it. */
export async function buildWebUi(options: BuildOptions = {}): Promise<BuildStamp> {
  const distDir = resolve(options.distDir ?? defaultDistDir);
  const sources = await sourceHash();
  if (sources === null) throw new Error(`web UI sources not found under ${join(packageDir, 'client')}: cannot build`);
  // Imported here, not at the top: serving an existing build must not need the build tool.
  const vite = await import('vite');
  const tmp = `${distDir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await mkdir(dirname(distDir), { recursive: true });
  try {
    await vite.build({
      root: join(packageDir, 'client'),
      publicDir: join(packageDir, 'public'),
      base: '/',
      configFile: false,
      envDir: false,
      logLevel: options.logLevel ?? 'warn',
      clearScreen: false,
      oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
      build: {
        outDir: tmp,
        emptyOutDir: true,
        assetsDir: 'assets',
        target: 'es2022',
        sourcemap: false,
        reportCompressedSize: false,
        // Evergreen browsers support modulepreload; the polyfill would be bytes for nobody.
        modulePreload: { polyfill: false },
        // Everything as a file: no data: URLs, so the CSP can stay strict.
        assetsInlineLimit: 0,
      },
    });
    await precompress(tmp);
    const stamp: BuildStamp = { sources, builtAt: new Date().toISOString(), ...(await measure(tmp)) };
    await writeFile(join(tmp, STAMP_FILE), JSON.stringify(stamp, null, 2) + '\n');
    await swapIn(tmp, distDir);
    return stamp;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function swapIn(tmp: string, distDir: string): Promise<void> {
  const old = `${distDir}.old-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await rename(distDir, old);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  try {
    await rename(tmp, distDir);
  } catch (err) {
    // Another process swapped its build in between our two renames: builds of the same sources
    // are identical, so theirs is as good as ours.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
  } finally {
    await rm(old, { recursive: true, force: true });
  }
}

export type BuildPolicy = 'if-stale' | 'if-missing' | 'never';

/** Makes sure distDir holds a build of the current sources (per policy); returns its stamp. */
export async function ensureBuilt(distDir = defaultDistDir, policy: BuildPolicy = 'if-stale'): Promise<BuildStamp | null> {
  const present = existsSync(join(distDir, 'index.html'));
  const stamp = present ? await readStamp(distDir) : null;
  let needed = !present;
  if (present && policy === 'if-stale') {
    const sources = await sourceHash();
    needed = sources !== null && stamp?.sources !== sources;
  }
  if (!needed) return stamp;
  if (policy === 'never') {
    throw new Error(`web UI is not built: ${join(distDir, 'index.html')} is missing. Build it with \`${BUILD_COMMAND}\` (pnpm install and pnpm start run it).`);
  }
  try {
    return await buildWebUi({ distDir });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`web UI could not be built into ${distDir} (${why}). Build it with \`${BUILD_COMMAND}\` and read its output.`, { cause: err });
  }
}
