/**
 * Names other people see: a desktop's label with a control, bidirectional or zero-width
 * character is refused (the API's 400 is in test/hostile-api), and a provider's display name
 * is stored without them (a real database: signInUser as the sign-in routes call it).
 */
import { eq } from 'drizzle-orm';
import t from 'tap';
import { createTestDatabase } from '@deskhub/testkit/postgres';
import { openDatabase } from '../src/db/client.ts';
import { users } from '../src/db/schema.ts';
import { hasHiddenCharacters, withoutHiddenCharacters } from '../src/names.ts';
import { signInUser } from '../src/users.ts';

t.test('hidden characters are found and dropped; ordinary names, accents and scripts are not', async (t) => {
  for (const hidden of ['abc\u202egpj.exe', 'ad\u200bmin', 'x\u2066y\u2069', 'zero\ufeffwidth', 'soft\u00adhyphen', 'tab\there', 'bell\u0007']) {
    t.ok(hasHiddenCharacters(hidden), JSON.stringify(hidden));
  }
  for (const plain of ['Alice Corp', 'Zoë Ørsted', '山田 太郎', 'محمد', 'dev-box 2']) t.notOk(hasHiddenCharacters(plain), plain);
  t.equal(withoutHiddenCharacters('Ad\u200bmin \u202eteam'), 'Admin team');
  t.notOk(hasHiddenCharacters('ok'), 'the shared pattern keeps no state between calls');
});

t.test("a provider's display name is stored without them", async (t) => {
  const test = await createTestDatabase('names');
  t.teardown(() => test.drop());
  const handle = await openDatabase({ databaseUrl: test.url, dataDir: '/nonexistent' });
  t.teardown(() => handle.close());
  await handle.migrate();
  const user = await signInUser(handle.db, { provider: 'corp', subject: 's-1', preferredName: 'mallory', displayName: 'Ad\u200bmin \u202eteam' });
  const [row] = await handle.db.select().from(users).where(eq(users.id, user.id));
  t.equal(row?.displayName, 'Admin team');
  const blank = await signInUser(handle.db, { provider: 'corp', subject: 's-2', preferredName: 'eve', displayName: '\u200b\u200b' });
  const [blankRow] = await handle.db.select().from(users).where(eq(users.id, blank.id));
  t.equal(blankRow?.displayName, null, 'nothing visible left: no display name');
});
