/**
 * What the sharing UI says and offers, checked in Node (client/sharing.ts): the banner over an
 * open desktop, the expiry choices of links and shares, and how a share's row names it.
 */
import t from 'tap';
import { connectedSummary, describeSeconds, durationParam, linkExpiryChoices, listNames, shareExpiryChoices, shareWho, type Connected, type Share } from '../client/sharing.ts';

const at = '2025-06-01T12:00:00.000Z';
const c = (username: string, role: Connected['role']): Connected => ({ username, role, lastSeenAt: at });

t.test('the banner names who else has the desktop open, and as what', async (t) => {
  t.equal(connectedSummary([]), '', 'nobody: no banner');
  t.equal(connectedSummary([c('alice', 'owner')]), '', 'the owner alone: no banner');
  t.equal(connectedSummary([c('alice', 'owner'), c('bob', 'view')]), 'bob is watching');
  t.equal(connectedSummary([c('bob', 'view'), c('carol', 'control')]), 'bob is watching · carol has control');
  t.equal(connectedSummary([c('bob', 'view'), c('dave', 'view'), c('erin', 'view')]), 'bob, dave and erin are watching');
  t.equal(connectedSummary([c('carol', 'control'), c('dave', 'control')]), 'carol and dave have control');
  t.equal(connectedSummary([c('bob', 'view'), c('bob', 'view')]), 'bob is watching', 'a name once (two replicas, two tabs)');
  t.equal(connectedSummary([c('bob', 'control'), c('bob', 'view')]), 'bob has control', 'with the strongest role');
  t.equal(connectedSummary([c('bob', 'view'), c('bob', 'control')]), 'bob has control', 'whatever the order');
});

t.test('listNames joins like a sentence', async (t) => {
  t.equal(listNames([]), '');
  t.equal(listNames(['a']), 'a');
  t.equal(listNames(['a', 'b']), 'a and b');
  t.equal(listNames(['a', 'b', 'c']), 'a, b and c');
});

t.test('durations as the API takes them and as people read them', async (t) => {
  t.equal(durationParam(7 * 86400), '7d');
  t.equal(durationParam(8 * 3600), '8h');
  t.equal(durationParam(90 * 60), '90m');
  t.equal(durationParam(45), '45s');
  t.equal(describeSeconds(86400), '1 day');
  t.equal(describeSeconds(7 * 86400), '7 days');
  t.equal(describeSeconds(3600), '1 hour');
  t.equal(describeSeconds(90 * 60), '90 minutes');
  t.equal(describeSeconds(45), '45 seconds');
  t.equal(describeSeconds(61), '1 minute', 'rounded to minutes past a minute');
});

t.test('a link offers the usual steps up to the maximum, the default among them', async (t) => {
  const week = linkExpiryChoices(86400, 7 * 86400);
  t.same(
    week.map((c) => c.value),
    ['15m', '1h', '8h', '1d', '3d', '7d'],
  );
  t.equal(week.find((c) => c.value === '1d')?.label, '1 day');
  t.same(
    linkExpiryChoices(2 * 3600, 10 * 3600).map((c) => c.value),
    ['15m', '1h', '2h', '8h', '10h'],
    'an odd default and maximum are offered too, in order',
  );
  t.same(
    linkExpiryChoices(600, 600).map((c) => c.value),
    ['10m'],
    'a maximum below every step leaves only itself',
  );
  t.ok(
    linkExpiryChoices(86400, 7 * 86400).every((c) => c.value !== ''),
    'a link always ends',
  );
});

t.test('a named share may last until revoked', async (t) => {
  const choices = shareExpiryChoices();
  t.same(choices[0], { value: '', label: 'Until revoked' });
  t.ok(choices.some((c) => c.value === '1h'));
});

t.test('a share row names the user, a link its visitors', async (t) => {
  const base: Share = { id: 'x', kind: 'user', username: 'bob', mode: 'view', createdAt: at, expiresAt: null, visitors: 0 };
  t.equal(shareWho(base), 'bob');
  t.equal(shareWho({ ...base, kind: 'link', username: null }), 'Link (not opened yet)');
  t.equal(shareWho({ ...base, kind: 'link', username: null, visitors: 1 }), 'Link (opened by 1 person)');
  t.equal(shareWho({ ...base, kind: 'link', username: null, visitors: 3 }), 'Link (opened by 3 people)');
});
