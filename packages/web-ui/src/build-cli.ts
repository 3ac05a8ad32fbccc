/**
 * `pnpm --filter @deskhub/web-ui build`: builds the browser bundle and prints what the browser
 * downloads (raw, gzip, brotli), so the weight of the UI is a number anyone can check.
 * `--if-stale` skips the build when dist/ already matches the sources (what install/start use).
 */
import { buildWebUi, defaultDistDir, ensureBuilt, type BuildStamp } from './build.ts';

function kb(n: number): string {
  return `${(n / 1024).toFixed(1)} kB`;
}

function report(stamp: BuildStamp): void {
  const rows = stamp.files.map((f) => `  ${f.file.padEnd(40)} ${kb(f.bytes).padStart(9)}  gzip ${kb(f.gzip).padStart(8)}  br ${kb(f.brotli).padStart(8)}`);
  console.log(`web UI built into ${defaultDistDir} at ${stamp.builtAt}`);
  console.log(rows.join('\n'));
  const first = stamp.firstLoad;
  console.log(`  first page load: ${kb(first.bytes)} raw, ${kb(first.gzip)} gzip, ${kb(first.brotli)} brotli`);
}

try {
  const ifStale = process.argv.includes('--if-stale');
  const stamp = ifStale ? await ensureBuilt(defaultDistDir, 'if-stale') : await buildWebUi({ logLevel: 'info' });
  if (stamp) report(stamp);
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
}
