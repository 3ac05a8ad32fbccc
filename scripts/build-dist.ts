/**
 * Compiles the services, and the packages they load at run time, to JavaScript: every
 * `src/**\/*.ts` of each to `<package>/dist/**\/*.js` (the web UI's server code to
 * `packages/web-ui/dist-server/`, its `dist/` being the browser bundle). Each file is transpiled
 * on its own (TypeScript's transpileModule: types removed, `.ts` imports rewritten to `.js`,
 * source maps inline), at the same depth as its source, so paths a module finds from its own URL
 * (the catalog, the migrations, the web UI's bundle) are the same from dist/ as from src/.
 * Type checking is `tsc --noEmit`, which `pnpm build` runs first.
 *
 * Production runs `node --conditions=deskhub-dist services/<service>/dist/main.js`: each
 * package's exports map sends that condition to its dist/ and everything else (tests, tsx) to
 * src/. Without a TypeScript loader a replica is about 33 MiB smaller (tsx's hooks run in a
 * second V8 isolate on Node 20).
 *
 *   node --import tsx scripts/build-dist.ts             build every package
 *   node --import tsx scripts/build-dist.ts --if-stale  only packages whose sources changed (start uses this)
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const repoRoot = path.resolve(import.meta.dirname, '..');

/** What production loads: the two services and the workspace packages they import at run time. */
export const compiledPackages: Array<{ dir: string; out: string }> = [
  { dir: 'packages/config', out: 'dist' },
  { dir: 'packages/route-stream', out: 'dist' },
  { dir: 'packages/access-token', out: 'dist' },
  { dir: 'packages/demo-desktop', out: 'dist' },
  { dir: 'packages/web-ui', out: 'dist-server' },
  { dir: 'services/proxy', out: 'dist' },
  { dir: 'services/control-plane', out: 'dist' },
];

const STAMP = '.deskhub-build.json';

const options: ts.CompilerOptions = {
  module: ts.ModuleKind.ESNext,
  target: ts.ScriptTarget.ES2022,
  rewriteRelativeImportExtensions: true,
  verbatimModuleSyntax: true,
  inlineSourceMap: true,
  inlineSources: true,
};

function sources(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(full);
    }
  };
  walk(dir);
  return out.sort();
}

function hashOf(files: string[]): string {
  const h = createHash('sha256');
  h.update(ts.version);
  for (const f of files) h.update(f).update('\0').update(readFileSync(f)).update('\0');
  return h.digest('hex');
}

/** Transpiles one package; returns how many files, or null when it was current (`ifStale`). */
export function buildPackage(pkg: { dir: string; out: string }, ifStale = false): number | null {
  const src = path.join(repoRoot, pkg.dir, 'src');
  const out = path.join(repoRoot, pkg.dir, pkg.out);
  const files = sources(src);
  const hash = hashOf(files);
  const stampFile = path.join(out, STAMP);
  if (ifStale && existsSync(stampFile)) {
    try {
      if ((JSON.parse(readFileSync(stampFile, 'utf8')) as { hash?: string }).hash === hash) return null;
    } catch {
      // an unreadable stamp: build
    }
  }
  rmSync(out, { recursive: true, force: true });
  for (const file of files) {
    const relative = path.relative(src, file);
    const result = ts.transpileModule(readFileSync(file, 'utf8'), { compilerOptions: options, fileName: file, reportDiagnostics: true });
    const problems = (result.diagnostics ?? []).filter((d) => d.category === ts.DiagnosticCategory.Error);
    if (problems.length) throw new Error(`${path.relative(repoRoot, file)}: ${problems.map((d) => ts.flattenDiagnosticMessageText(d.messageText, ' ')).join('; ')}`);
    const target = path.join(out, relative.replace(/\.ts$/, '.js'));
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, result.outputText);
  }
  writeFileSync(stampFile, JSON.stringify({ hash, files: files.length, typescript: ts.version }) + '\n');
  return files.length;
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.filename)) {
  const ifStale = process.argv.includes('--if-stale');
  const started = Date.now();
  let built = 0;
  for (const pkg of compiledPackages) {
    const n = buildPackage(pkg, ifStale);
    if (n !== null) {
      built++;
      process.stderr.write(`build-dist: ${pkg.dir}/src -> ${pkg.dir}/${pkg.out} (${n} files)\n`);
    }
  }
  if (built === 0) process.stderr.write('build-dist: every package is current\n');
  else process.stderr.write(`build-dist: ${built} package(s) in ${Date.now() - started} ms\n`);
}
