import t from 'tap';
import { createSigner, createVerifier, generateKeyPair } from '../src/index.ts';

const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);
const subject = (n: number) => ({ userId: `u-${n}`, username: `user${n}`, sessionId: `s-${n}` });

function setup(cacheSize?: number) {
  const pair = generateKeyPair();
  const signer = createSigner({ privateKey: pair.privateKeyPem });
  const verifier = createVerifier({ publicKeys: [pair.publicKeyPem], ...(cacheSize === undefined ? {} : { cacheSize }) });
  return { signer, verifier };
}

t.test('a repeated token is answered from the cache, without a signature check', async (t) => {
  const { signer, verifier } = setup();
  const { token } = signer.sign(subject(1), T0);
  const first = verifier.verify(token, T0);
  t.ok(first.ok);
  t.same(verifier.stats(), { signatureChecks: 1, cacheHits: 0, cachedTokens: 1, revokedSessions: 0 });
  for (let i = 0; i < 100; i++) t.equal(verifier.verify(token, T0 + i), first, 'the same frozen result object');
  t.same(verifier.stats(), { signatureChecks: 1, cacheHits: 100, cachedTokens: 1, revokedSessions: 0 });

  // A copy of the token built from other pieces (a new string, as from a request header) hits too.
  const copy = token.split('.').join('.');
  t.ok(verifier.verify(copy, T0).ok);
  t.equal(verifier.stats().signatureChecks, 1);

  const start = process.hrtime.bigint();
  for (let i = 0; i < 10_000; i++) verifier.verify(token, T0);
  t.comment(`cached verify: ${Number(process.hrtime.bigint() - start) / 10_000} ns/op (not asserted)`);
});

t.test('a forged token reusing a cached signature is not served from the cache', async (t) => {
  const { signer, verifier } = setup();
  const { token } = signer.sign(subject(1), T0);
  t.ok(verifier.verify(token, T0).ok);
  const [prefix, kid, payload, sig] = token.split('.') as [string, string, string, string];
  const body = JSON.parse(Buffer.from(payload, 'base64url').toString());
  const forged = [prefix, kid, Buffer.from(JSON.stringify({ ...body, userId: 'u-mallory' })).toString('base64url'), sig].join('.');
  t.same(verifier.verify(forged, T0), { ok: false, reason: 'bad-signature' });
  t.same(verifier.stats().signatureChecks, 2, 'the forgery went through a signature check');
  t.ok(verifier.verify(token, T0).ok, 'the genuine token is still cached');
  t.same(verifier.stats().signatureChecks, 2);
});

t.test('failures are not cached: a bad token costs a check every time', async (t) => {
  const { signer, verifier } = setup();
  const { token } = signer.sign(subject(1), T0);
  const bad = token.slice(0, -2) + (token.at(-2) === 'A' ? 'BA' : 'AA');
  t.same(verifier.verify(bad, T0), { ok: false, reason: 'bad-signature' });
  t.same(verifier.verify(bad, T0), { ok: false, reason: 'bad-signature' });
  t.equal(verifier.stats().signatureChecks, 2);
  t.equal(verifier.stats().cachedTokens, 0);
});

t.test('the cache is bounded and evicts a token not used lately (second chance)', async (t) => {
  const { signer, verifier } = setup(3);
  const tokens = [1, 2, 3, 4].map((n) => signer.sign(subject(n), T0).token);
  for (const tok of tokens.slice(0, 3)) t.ok(verifier.verify(tok, T0).ok);
  t.equal(verifier.stats().cachedTokens, 3);
  t.ok(verifier.verify(tokens[0]!, T0).ok, 'touch token 1: now token 2 is the oldest');
  t.ok(verifier.verify(tokens[3]!, T0).ok, 'a fourth token evicts one');
  t.equal(verifier.stats().cachedTokens, 3, 'never above its size');
  const checks = verifier.stats().signatureChecks;
  t.ok(verifier.verify(tokens[0]!, T0).ok);
  t.ok(verifier.verify(tokens[2]!, T0).ok);
  t.ok(verifier.verify(tokens[3]!, T0).ok);
  t.equal(verifier.stats().signatureChecks, checks, 'tokens 1, 3, 4 are still cached');
  t.ok(verifier.verify(tokens[1]!, T0).ok, 'token 2 still verifies...');
  t.equal(verifier.stats().signatureChecks, checks + 1, '...but with a signature check: it was evicted');

  // Many more tokens than the cache holds, all of them in use: it stays at its size.
  const hot = Array.from({ length: 50 }, (_, n) => signer.sign(subject(10 + n), T0).token);
  for (let round = 0; round < 3; round++) for (const tok of hot) t.ok(verifier.verify(tok, T0).ok);
  t.equal(verifier.stats().cachedTokens, 3);
});

t.test('eviction prefers tokens that have expired, even recently used ones', async (t) => {
  const pair = generateKeyPair();
  const verifier = createVerifier({ publicKeys: [pair.publicKeyPem], cacheSize: 2 });
  const short = createSigner({ privateKey: pair.privateKeyPem, lifetimeMs: 1000 }).sign(subject(1), T0).token;
  const long = createSigner({ privateKey: pair.privateKeyPem }).sign(subject(2), T0).token;
  t.ok(verifier.verify(short, T0).ok);
  t.ok(verifier.verify(short, T0).ok, 'used');
  t.ok(verifier.verify(long, T0).ok);
  t.ok(verifier.verify(long, T0).ok, 'used');
  const third = createSigner({ privateKey: pair.privateKeyPem }).sign(subject(3), T0 + 5000).token;
  t.ok(verifier.verify(third, T0 + 5000).ok);
  const checks = verifier.stats().signatureChecks;
  t.ok(verifier.verify(long, T0 + 5000).ok, 'the live token survived');
  t.equal(verifier.stats().signatureChecks, checks, 'from the cache');
  t.same(verifier.verify(short, T0 + 5000), { ok: false, reason: 'expired' });
});

t.test('cacheSize 0 turns the cache off', async (t) => {
  const { signer, verifier } = setup(0);
  const { token } = signer.sign(subject(1), T0);
  t.ok(verifier.verify(token, T0).ok);
  t.ok(verifier.verify(token, T0).ok);
  t.same(verifier.stats(), { signatureChecks: 2, cacheHits: 0, cachedTokens: 0, revokedSessions: 0 });
});

t.test('a cached token is not served at or after its expiry', async (t) => {
  const { signer, verifier } = setup();
  const { token, claims } = signer.sign(subject(1), T0);
  t.ok(verifier.verify(token, T0).ok);
  t.ok(verifier.verify(token, claims.expiresAt - 1).ok, 'cached, one millisecond before expiry');
  t.same(verifier.verify(token, claims.expiresAt), { ok: false, reason: 'expired' });
  t.equal(verifier.stats().cachedTokens, 0, 'the expired entry is dropped');
  t.same(verifier.verify(token, claims.expiresAt + 60_000), { ok: false, reason: 'expired' });
});

t.test('revoking a session rejects its tokens at once, cached or not, and only its tokens', async (t) => {
  const { signer, verifier } = setup();
  const a1 = signer.sign(subject(1), T0).token;
  const a2 = signer.sign(subject(1), T0 + 1000).token; // a renewal for the same session
  const b = signer.sign(subject(2), T0).token;
  t.ok(verifier.verify(a1, T0 + 1000).ok);
  t.ok(verifier.verify(b, T0 + 1000).ok);

  verifier.revokeSession('s-1', T0 + 10 * 60_000);
  t.ok(verifier.isRevoked('s-1', T0 + 2000));
  t.notOk(verifier.isRevoked('s-2', T0 + 2000));
  t.same(verifier.verify(a1, T0 + 2000), { ok: false, reason: 'revoked' }, 'cached token');
  t.same(verifier.verify(a2, T0 + 2000), { ok: false, reason: 'revoked' }, 'token never seen before');
  t.ok(verifier.verify(b, T0 + 2000).ok, 'another session is untouched');
  t.equal(verifier.stats().cachedTokens, 1, 'only the other session stays cached');
});

t.test('revocations are forgotten once their tokens have expired, and kept at the longest', async (t) => {
  const { verifier } = setup();
  verifier.revokeSession('s-1', T0 + 1000);
  verifier.revokeSession('s-1', T0 + 500); // an earlier "until" never shortens a revocation
  t.ok(verifier.isRevoked('s-1', T0 + 999));
  t.notOk(verifier.isRevoked('s-1', T0 + 1000));
  t.equal(verifier.stats().revokedSessions, 0, 'dropped when found expired');

  const now = Date.now();
  verifier.revokeSession('s-default');
  t.ok(verifier.isRevoked('s-default', now + 60 * 60_000), 'by default, kept for the longest token lifetime');
  t.notOk(verifier.isRevoked('s-default', now + 60 * 60_000 + 30_000 + 5_000), 'and no longer than that plus the skew');
});

t.test('the revocation set stays bounded by expiry', async (t) => {
  const { verifier } = setup();
  const past = Date.now() - 1;
  for (let i = 0; i < 5000; i++) verifier.revokeSession(`old-${i}`, past);
  const live = Date.now() + 60_000;
  for (let i = 0; i < 10; i++) verifier.revokeSession(`live-${i}`, live);
  t.ok(verifier.stats().revokedSessions < 2100, `expired revocations are swept (${verifier.stats().revokedSessions} left of 5010)`);
  for (let i = 0; i < 10; i++) t.ok(verifier.isRevoked(`live-${i}`), `live-${i} still revoked`);
});
