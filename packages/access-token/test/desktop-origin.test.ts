import t from 'tap';
import {
  checkAccess, createSigner, createVerifier, desktopAccessCookie, desktopHost, desktopOrigin, DESKTOP_ACCESS_COOKIE_NAME,
  generateKeyPair, labelOfHost, originLabel, parseDesktopOrigin, readAccessTokens,
} from '../src/index.ts';

t.test('parseDesktopOrigin reads a wildcard origin and refuses what browsers could not use', async (t) => {
  t.same(parseDesktopOrigin('https://*.desktops.example.net'), { pattern: 'https://*.desktops.example.net', scheme: 'https', suffix: 'desktops.example.net', port: '' });
  t.same(parseDesktopOrigin('https://*.Desktops.Example.net:443/'), { pattern: 'https://*.Desktops.Example.net:443/', scheme: 'https', suffix: 'desktops.example.net', port: '' }, 'default port left out, as Origin leaves it out');
  t.equal(parseDesktopOrigin('http://*.localhost:8080').port, ':8080');
  t.equal(parseDesktopOrigin('http://*.desktops.localhost:8080').suffix, 'desktops.localhost');
  for (const [value, why] of [
    ['https://desktops.example.net', /wildcard origin/],
    ['https://*.example.net/path', /wildcard origin/],
    ['ftp://*.example.net', /wildcard origin/],
    ['https://*.*.example.net', /wildcard origin|not a host name/],
    ['https://*.exa_mple.net', /wildcard origin|not a host name/],
    ['http://*.example.net', /plain http is only possible under localhost/],
    ['https://*.example.net:70000', /out of range/],
  ] as const) {
    t.throws(() => parseDesktopOrigin(value), { name: 'DesktopOriginError', message: why }, value);
  }
});

t.test('a desktop origin per proxy path, and the path a host names', async (t) => {
  const origins = parseDesktopOrigin('http://*.localhost:8080');
  t.equal(desktopOrigin(origins, 'alice-dev'), 'http://alice-dev.localhost:8080');
  t.equal(desktopHost(origins, 'alice-dev'), 'alice-dev.localhost:8080');
  t.equal(labelOfHost(origins, 'alice-dev.localhost:8080'), 'alice-dev');
  t.equal(labelOfHost(origins, 'ALICE-DEV.localhost:8080'), 'alice-dev', 'host names are case-insensitive');
  t.equal(labelOfHost(origins, 'localhost:8080'), null, "the UI's host is not a desktop's");
  t.equal(labelOfHost(origins, 'a.b.localhost:8080'), null, 'exactly one label');
  t.equal(labelOfHost(origins, 'alice-dev.localhost:8081'), null, 'another port');
  t.equal(labelOfHost(origins, 'alice-dev.localhost'), null);
  t.equal(labelOfHost(origins, undefined), null);
  const long = `${'a'.repeat(40)}-${'b'.repeat(30)}`;
  const label = originLabel(long);
  t.ok(label.length <= 63 && /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/.test(label), `a long path gets a DNS label: ${label}`);
  t.not(originLabel(`${long}x`), label, 'different paths, different labels');
  t.equal(originLabel('alice-dev'), 'alice-dev');
});

t.test('the desktop-origin cookie and desktop-scoped tokens', async (t) => {
  const pair = generateKeyPair();
  const signer = createSigner({ privateKey: pair.privateKeyPem });
  const verifier = createVerifier({ publicKeys: [pair.publicKeyPem] });
  const now = Date.now();
  const route = {
    path: 'alice-dev',
    owner: 'u-alice',
    shares: [
      { id: 'sh-bob', user: 'u-bob', mode: 'view' as const },
      { id: 'ln-1', mode: 'view' as const, expiresAt: now + 60_000 },
      { id: 'ln-old', mode: 'control' as const, expiresAt: now - 1 },
    ],
  };
  const scope = { cookieName: DESKTOP_ACCESS_COOKIE_NAME, desktopScoped: true };
  const cookie = (subject: Parameters<typeof signer.sign>[0]) => `${DESKTOP_ACCESS_COOKIE_NAME}=${signer.sign(subject, now).token}`;
  const decide = (c: string) => checkAccess(verifier, c, route, now + 1000, scope);

  const owner = signer.sign({ userId: 'u-alice', username: 'alice', sessionId: 's', desktop: 'alice-dev' }, now);
  t.match(desktopAccessCookie(owner), /^__Host-deskhub_access=dh1\.[^;]+; Path=\/; Max-Age=300; HttpOnly; Secure; SameSite=None; Partitioned$/);
  t.same(readAccessTokens(`deskhub_access=x; ${DESKTOP_ACCESS_COOKIE_NAME}=y`, DESKTOP_ACCESS_COOKIE_NAME), ['y']);

  const asOwner = decide(`${DESKTOP_ACCESS_COOKIE_NAME}=${owner.token}`);
  t.match(asOwner, { ok: true, claims: { userId: 'u-alice' } });
  t.equal((asOwner as { role?: string }).role, undefined, 'the owner: no share role');
  t.match(decide(cookie({ userId: 'u-alice', username: 'alice', sessionId: 's' })), { ok: false, status: 403 }, "a UI-origin token (no desktop named) is refused on a desktop's origin");
  t.match(decide(cookie({ userId: 'u-alice', username: 'alice', sessionId: 's', desktop: 'alice-other' })), { ok: false, status: 403 }, "another desktop's token");
  t.match(decide(cookie({ userId: 'u-bob', username: 'bob', sessionId: 's', desktop: 'alice-dev', grant: 'sh-bob' })), { ok: true, role: 'view', share: { id: 'sh-bob' } });
  t.match(decide(cookie({ userId: 'u-carol', username: 'carol', sessionId: 's', desktop: 'alice-dev', grant: 'sh-bob' })), { ok: false, status: 403 }, "bob's share does not let carol in");
  t.match(decide(cookie({ userId: 'u-bob', username: 'bob', sessionId: 's', desktop: 'alice-dev' })), { ok: false, status: 403 }, 'no grant: only the owner');
  t.match(decide(cookie({ userId: 'u-carol', username: 'carol', sessionId: 's', desktop: 'alice-dev', grant: 'ln-1' })), { ok: true, role: 'view' }, 'a link lets any signed-in holder of a token for it in');
  t.match(decide(cookie({ userId: 'u-carol', username: 'carol', sessionId: 's', desktop: 'alice-dev', grant: 'ln-old' })), { ok: false, status: 403 }, 'an expired link');
  t.match(decide(cookie({ userId: 'u-carol', username: 'carol', sessionId: 's', desktop: 'alice-dev', grant: 'ln-gone' })), { ok: false, status: 403 }, 'a revoked link');
  // On the UI's origin a desktop-scoped token is not a UI token.
  t.match(checkAccess(verifier, `deskhub_access=${owner.token}`, route, now + 1000), { ok: false, status: 403 });
});
