// Bundles the demo desktop (packages/demo-desktop/src/main.ts and its dependencies) into one ES
// module for the kasm-test image, so the image needs no node_modules and no TypeScript loader.
// esbuild is taken from tsx (a root devDependency), so nothing new is installed.
// Usage: node deploy/images/kasm-test/bundle.mjs <output file>
import { createRequire } from 'node:module';
import { realpathSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const out = process.argv[2];
if (!out) {
  process.stderr.write('usage: bundle.mjs <output file>\n');
  process.exit(2);
}
const tsxDir = realpathSync(join(repo, 'node_modules/tsx'));
const esbuild = createRequire(join(tsxDir, 'package.json'))('esbuild');

await esbuild.build({
  entryPoints: [join(repo, 'packages/demo-desktop/src/main.ts')],
  outfile: out,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // ws loads these native speed-ups only if present; the image does without them.
  external: ['bufferutil', 'utf-8-validate'],
  // CommonJS dependencies (ws, selfsigned) call require(): give the ES module one.
  banner: { js: "import { createRequire as __deskhubCreateRequire } from 'node:module'; const require = __deskhubCreateRequire(import.meta.url);" },
  legalComments: 'none',
  logLevel: 'warning',
});
