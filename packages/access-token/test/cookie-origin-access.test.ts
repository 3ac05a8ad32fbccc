import t from 'tap';
import {
  accessCookie, checkAccess, clearAccessCookie, createSigner, createVerifier, generateKeyPair,
  MAX_ACCESS_COOKIES, originAllowed, readAccessTokens,
} from '../src/index.ts';

const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);

t.test('readAccessTokens finds deskhub_access and nothing else', async (t) => {
  t.same(readAccessTokens(undefined), []);
  t.same(readAccessTokens(''), []);
  t.same(readAccessTokens('deskhub_access=abc'), ['abc']);
  t.same(readAccessTokens('a=1; deskhub_access=abc; b=2'), ['abc']);
  t.same(readAccessTokens('a=1;deskhub_access=abc;b=2'), ['abc'], 'no space after the semicolon');
  t.same(readAccessTokens('a=1;   deskhub_access=abc'), ['abc']);
  t.same(readAccessTokens('deskhub_access="abc"'), ['abc'], 'a quoted value');
  t.same(readAccessTokens('xdeskhub_access=abc; my_deskhub_access=def'), [], 'longer names that end in the name');
  t.same(readAccessTokens('a=deskhub_access=abc'), [], 'the name inside another cookie value');
  t.same(readAccessTokens('deskhub_access=; b=2'), [], 'an empty value');
  t.same(readAccessTokens('deskhub_session=s; deskhub_access=t1; other=x; deskhub_access=t2'), ['t1', 't2'], 'every copy, in order');
  const many = Array.from({ length: 50 }, (_, i) => `deskhub_access=t${i}`).join('; ');
  t.same(readAccessTokens(many).length, MAX_ACCESS_COOKIES, 'bounded');
});

t.test('accessCookie: /desktop/ only, HttpOnly, Lax, Secure on https, Max-Age = lifetime', async (t) => {
  const signer = createSigner({ privateKey: generateKeyPair().privateKeyPem, lifetimeMs: 5 * 60_000 });
  const issued = signer.sign({ userId: 'u', username: 'alice', sessionId: 's' }, T0);
  t.equal(
    accessCookie(issued, 'https://desk.example.org'),
    `deskhub_access=${issued.token}; Path=/desktop/; Max-Age=300; HttpOnly; SameSite=Lax; Secure`,
  );
  t.equal(
    accessCookie(issued, 'http://127.0.0.1:8080'),
    `deskhub_access=${issued.token}; Path=/desktop/; Max-Age=300; HttpOnly; SameSite=Lax`,
    'no Secure over plain http (a loopback dev setup)',
  );
  t.equal(clearAccessCookie('https://desk.example.org'), 'deskhub_access=; Path=/desktop/; Max-Age=0; HttpOnly; SameSite=Lax; Secure');
  t.same(readAccessTokens(accessCookie(issued, 'https://x.test').split(';')[0]), [issued.token], 'what we set is what we read');
});

t.test('originAllowed: exact scheme, host and port of PUBLIC_URL', async (t) => {
  const pub = 'https://desk.example.org';
  t.ok(originAllowed('https://desk.example.org', pub));
  t.ok(originAllowed('https://desk.example.org', 'https://desk.example.org:443/some/path'), 'default port and path in PUBLIC_URL');
  t.ok(originAllowed('http://127.0.0.1:8080', 'http://127.0.0.1:8080/'));
  t.ok(originAllowed('https://desk.example.org', 'https://DESK.example.org'), 'host case in the setting does not matter');
  for (const [what, origin] of [
    ['missing', undefined],
    ['empty', ''],
    ['opaque null', 'null'],
    ['plain http', 'http://desk.example.org'],
    ['other port', 'https://desk.example.org:8443'],
    ['subdomain', 'https://evil.desk.example.org'],
    ['suffix trick', 'https://desk.example.org.evil.test'],
    ['other site', 'https://evil.test'],
    ['trailing slash', 'https://desk.example.org/'],
  ] as const) {
    t.notOk(originAllowed(origin, pub), what);
  }
  t.notOk(originAllowed('http://127.0.0.1:8080', 'http://127.0.0.1:8081'), 'the memo follows a changed PUBLIC_URL');
});

t.test('checkAccess: owner and shared users pass, others 403, no or bad token 401', async (t) => {
  const pair = generateKeyPair();
  const signer = createSigner({ privateKey: pair.privateKeyPem });
  const verifier = createVerifier({ publicKeys: [pair.publicKeyPem] });
  const route = { path: 'alice-dev', owner: 'u-alice', shares: [{ id: 'sh-carol', user: 'u-carol', mode: 'control' as const }] };
  const alice = signer.sign({ userId: 'u-alice', username: 'alice', sessionId: 's-a' }, T0).token;
  const bob = signer.sign({ userId: 'u-bob', username: 'bob', sessionId: 's-b' }, T0).token;
  const carol = signer.sign({ userId: 'u-carol', username: 'carol', sessionId: 's-c', grant: 'sh-carol' }, T0).token;
  const stranger = createSigner({ privateKey: generateKeyPair().privateKeyPem }).sign({ userId: 'u-alice', username: 'alice', sessionId: 's-x' }, T0).token;

  const decide = (cookie: string | undefined) => checkAccess(verifier, cookie, route, T0 + 1000);
  t.match(decide(`deskhub_access=${alice}`), { ok: true, claims: { userId: 'u-alice' } }, 'owner');
  t.match(decide(`deskhub_access=${carol}`), { ok: true, claims: { userId: 'u-carol' }, role: 'control', share: { id: 'sh-carol' } }, 'shared with');
  t.equal((decide(`deskhub_access=${alice}`) as { role?: string }).role, undefined, "the owner's decision has no share role");
  t.match(decide(`deskhub_access=${bob}`), { ok: false, status: 403, reason: 'not-allowed', claims: { userId: 'u-bob' } }, 'someone else');
  t.same(decide(undefined), { ok: false, status: 401, reason: 'missing' });
  t.same(decide('other=1'), { ok: false, status: 401, reason: 'missing' });
  t.same(decide('deskhub_access=junk'), { ok: false, status: 401, reason: 'malformed' });
  t.same(decide(`deskhub_access=${stranger}`), { ok: false, status: 401, reason: 'unknown-key' });
  t.same(checkAccess(verifier, `deskhub_access=${alice}`, route, T0 + 10 * 60_000), { ok: false, status: 401, reason: 'expired' });

  // Cookie tossing: a planted cookie (bob's, or junk) in front of the owner's neither locks the
  // owner out nor lets bob in.
  t.match(decide(`deskhub_access=${bob}; deskhub_access=${alice}`), { ok: true, claims: { userId: 'u-alice' } });
  t.match(decide(`deskhub_access=junk; deskhub_access=${alice}`), { ok: true, claims: { userId: 'u-alice' } });
  t.match(decide(`deskhub_access=junk; deskhub_access=${bob}`), { ok: false, status: 403 });

  verifier.revokeSession('s-a', T0 + 60 * 60_000);
  t.same(decide(`deskhub_access=${alice}`), { ok: false, status: 401, reason: 'revoked' }, 'after logout');
});
