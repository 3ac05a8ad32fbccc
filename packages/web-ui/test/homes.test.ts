/** What the Homes view says about a home, checked in Node: sizes people can read, and who shares it. */
import t from 'tap';
import { formatBytes, homeScope } from '../client/homes.ts';

t.test('formatBytes: decimal units, "unknown" when the runtime cannot tell', async (t) => {
  t.equal(formatBytes(null), 'unknown');
  t.equal(formatBytes(undefined), 'unknown');
  t.equal(formatBytes(-1), 'unknown');
  t.equal(formatBytes(0), '0 bytes');
  t.equal(formatBytes(1), '1 byte');
  t.equal(formatBytes(999), '999 bytes');
  t.equal(formatBytes(1000), '1.0 kB');
  t.equal(formatBytes(4096), '4.1 kB');
  t.equal(formatBytes(512_000_000), '512 MB');
  t.equal(formatBytes(999_999), '1.0 MB', 'rounds up into the next unit rather than "1000 kB"');
  t.equal(formatBytes(12_300_000_000), '12 GB');
});

t.test('homeScope says who shares the home', async (t) => {
  t.equal(homeScope({ scope: 'user', desktopName: null }), 'Every desktop of yours that keeps it');
  t.equal(homeScope({ scope: 'user', desktopName: null }, true), "Every desktop of its owner's that keeps it");
  t.equal(homeScope({ scope: 'desktop', desktopName: 'a' }), 'Only the desktop named “a”');
});
