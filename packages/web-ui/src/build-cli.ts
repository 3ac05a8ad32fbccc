/**
 * `pnpm --filter @deskhub/web-ui build`: builds the browser bundle and prints what the browser
 * downloads (raw, gzip, brotli), so the weight of the UI is a number anyone can check.
 * `--if-stale` skips the build when dist/ already matches the sources (what install/start use).
 */
import { buildWebUi, defaultDistDir, ensureBuilt, readStamp, type BuildStamp } from './build.ts';

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
  if (process.argv.includes('--if-stale')) {
    const before = (await readStamp(defaultDistDir))?.builtAt;
    const stamp = await ensureBuilt(defaultDistDir, 'if-stale');
    if (stamp && stamp.builtAt === before) console.log(`web UI in ${defaultDistDir} is up to date (built ${stamp.builtAt})`);
    else if (stamp) report(stamp);
  } else {
    report(await buildWebUi({ logLevel: 'info' }));
  }
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
}
