import t from 'tap';
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { createSigner, createVerifier, generateKeyPair, keyIdOf, MAX_TOKEN_LENGTH, toPublicKey } from '../src/index.ts';

const alice = { userId: 'u-alice', username: 'alice', sessionId: 's-1', roles: ['admin'] };
const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);

function setup(lifetimeMs?: number) {
  const pair = generateKeyPair();
  const signer = createSigner({ privateKey: pair.privateKeyPem, ...(lifetimeMs ? { lifetimeMs } : {}) });
  const verifier = createVerifier({ publicKeys: [pair.publicKeyPem] });
  return { pair, signer, verifier };
}

/** Replaces one character of `s` at `i` with a different base64url character. */
function flip(s: string, i: number): string {
  const c = s[i] === 'A' ? 'B' : 'A';
  return s.slice(0, i) + c + s.slice(i + 1);
}

t.test('sign then verify gives back the claims', async (t) => {
  const { pair, signer, verifier } = setup();
  const { token, claims } = signer.sign(alice, T0);
  t.match(token, /^dh1\.[A-Za-z0-9_-]{12}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{86}$/);
  t.equal(signer.keyId, pair.keyId);
  t.same(claims, { ...alice, issuedAt: T0, expiresAt: T0 + 5 * 60_000, keyId: pair.keyId });
  const r = verifier.verify(token, T0 + 1000);
  t.ok(r.ok);
  if (r.ok) t.same(r.claims, claims);
  t.ok(Object.isFrozen(r.ok && r.claims), 'claims handed to every request are immutable');
});

t.test('roles are optional and the lifetime is configurable', async (t) => {
  const { signer, verifier } = setup(60_000);
  const { token } = signer.sign({ userId: 'u-bob', username: 'bob', sessionId: 's-2' }, T0);
  const r = verifier.verify(token, T0);
  t.ok(r.ok);
  if (r.ok) {
    t.equal(r.claims.roles, undefined);
    t.equal(r.claims.expiresAt - r.claims.issuedAt, 60_000);
  }
});

t.test('a tampered payload fails the signature check', async (t) => {
  const { signer, verifier } = setup();
  const { token } = signer.sign(alice, T0);
  const [prefix, kid, payload, sig] = token.split('.') as [string, string, string, string];
  // Re-encode a payload claiming to be someone else, keeping the original signature.
  const forged = JSON.parse(Buffer.from(payload, 'base64url').toString());
  forged.userId = 'u-mallory';
  const forgedToken = [prefix, kid, Buffer.from(JSON.stringify(forged)).toString('base64url'), sig].join('.');
  t.same(verifier.verify(forgedToken, T0), { ok: false, reason: 'bad-signature' });
  t.same(verifier.verify([prefix, kid, flip(payload, 5), sig].join('.'), T0), { ok: false, reason: 'bad-signature' });
});

t.test('a tampered signature fails', async (t) => {
  const { signer, verifier } = setup();
  const { token } = signer.sign(alice, T0);
  t.same(verifier.verify(flip(token, token.length - 10), T0), { ok: false, reason: 'bad-signature' });
});

t.test('a token signed by another key under a known key id fails', async (t) => {
  const { signer, verifier } = setup();
  const { token } = signer.sign(alice, T0);
  const other = generateKeyPairSync('ed25519').privateKey;
  const signingInput = token.slice(0, token.lastIndexOf('.'));
  const wrongSig = sign(null, Buffer.from(signingInput), other).toString('base64url');
  t.same(verifier.verify(`${signingInput}.${wrongSig}`, T0), { ok: false, reason: 'bad-signature' });
});

t.test('a token from a key the verifier does not know has an unknown key id', async (t) => {
  const { verifier } = setup();
  const stranger = createSigner({ privateKey: generateKeyPair().privateKeyPem });
  t.same(verifier.verify(stranger.sign(alice, T0).token, T0), { ok: false, reason: 'unknown-key' });
});

t.test('key rotation: tokens of every configured public key are accepted', async (t) => {
  const oldPair = generateKeyPair();
  const newPair = generateKeyPair();
  const verifier = createVerifier({ publicKeys: [oldPair.publicKeyPem, toPublicKey(newPair.publicKeyPem)] });
  t.same([...verifier.keyIds].sort(), [oldPair.keyId, newPair.keyId].sort());
  for (const pair of [oldPair, newPair]) {
    const r = verifier.verify(createSigner({ privateKey: createPrivateKey(pair.privateKeyPem) }).sign(alice, T0).token, T0);
    t.ok(r.ok);
    if (r.ok) t.equal(r.claims.keyId, pair.keyId);
  }
});

t.test('expiry: valid until the last millisecond, refused at expiresAt', async (t) => {
  const { signer, verifier } = setup();
  const { token, claims } = signer.sign(alice, T0);
  t.same(verifier.verify(token, claims.expiresAt).ok, false);
  t.same(verifier.verify(token, claims.expiresAt + 1), { ok: false, reason: 'expired' });
  const fresh = createVerifier({ publicKeys: [signer.publicKey] });
  t.ok(fresh.verify(token, claims.expiresAt - 1).ok);
});

t.test('tokens outside the verifier bounds are refused even with a good signature', async (t) => {
  const pair = generateKeyPair();
  const longLived = createSigner({ privateKey: pair.privateKeyPem, lifetimeMs: 2 * 60 * 60_000 });
  const verifier = createVerifier({ publicKeys: [pair.publicKeyPem], maxLifetimeMs: 60 * 60_000, clockSkewMs: 30_000 });
  t.same(verifier.verify(longLived.sign(alice, T0).token, T0), { ok: false, reason: 'malformed' }, 'lifetime above the maximum');
  const normal = createSigner({ privateKey: pair.privateKeyPem });
  t.same(verifier.verify(normal.sign(alice, T0 + 60_000).token, T0), { ok: false, reason: 'malformed' }, 'issued in the future beyond the skew');
  t.ok(verifier.verify(normal.sign(alice, T0 + 20_000).token, T0).ok, 'issued a little ahead, within the skew');
});

t.test('a signed payload that is not valid claims is malformed', async (t) => {
  const pair = generateKeyPair();
  const key = createPrivateKey(pair.privateKeyPem);
  const verifier = createVerifier({ publicKeys: [pair.publicKeyPem] });
  const mint = (body: unknown) => {
    const input = `dh1.${pair.keyId}.${Buffer.from(JSON.stringify(body)).toString('base64url')}`;
    return `${input}.${sign(null, Buffer.from(input), key).toString('base64url')}`;
  };
  const good = { userId: 'u', username: 'n', sessionId: 's', issuedAt: T0, expiresAt: T0 + 1000 };
  t.ok(verifier.verify(mint(good), T0).ok, 'the control case verifies');
  for (const [what, body] of [
    ['an array', [1, 2]],
    ['null', null],
    ['no userId', { ...good, userId: undefined }],
    ['empty sessionId', { ...good, sessionId: '' }],
    ['numeric username', { ...good, username: 7 }],
    ['expiry before issue', { ...good, expiresAt: T0 - 1 }],
    ['fractional time', { ...good, issuedAt: T0 + 0.5 }],
    ['roles not strings', { ...good, roles: [1] }],
  ] as const) {
    t.same(verifier.verify(mint(body), T0), { ok: false, reason: 'malformed' }, what);
  }
});

t.test('malformed inputs are refused without a signature check', async (t) => {
  const { signer, verifier } = setup();
  const { token } = signer.sign(alice, T0);
  const [, kid, payload, sig] = token.split('.') as [string, string, string, string];
  t.same(verifier.verify('', T0), { ok: false, reason: 'missing' });
  t.same(verifier.verify(undefined, T0), { ok: false, reason: 'missing' });
  t.same(verifier.verify(null, T0), { ok: false, reason: 'missing' });
  const cases: Array<[string, string]> = [
    ['garbage', 'hello'],
    ['dots only', '...'],
    ['wrong version', `dh2.${kid}.${payload}.${sig}`],
    ['five parts', `${token}.x`],
    ['three parts', `dh1.${payload}.${sig}`],
    ['padding in the signature', `dh1.${kid}.${payload}.${sig}==`],
    ['short signature', `dh1.${kid}.${payload}.${sig.slice(1)}`],
    ['non-canonical signature spelling', `dh1.${kid}.${payload}.${sig.slice(0, -1)}${sig.endsWith('B') ? 'C' : 'B'}`],
    ['bad characters in the payload', `dh1.${kid}.${payload.slice(0, -1)}*.${sig}`],
    ['empty payload', `dh1.${kid}..${sig}`],
    ['bad key id', `dh1.k!d.${payload}.${sig}`],
    ['whitespace around', ` ${token} `],
    ['one character over the limit', `dh1.${kid}.${'A'.repeat(MAX_TOKEN_LENGTH)}.${sig}`],
  ];
  for (const [what, bad] of cases) t.same(verifier.verify(bad, T0), { ok: false, reason: 'malformed' }, what);
  // Bounded work: a megabyte of token is refused by its length, before any scan or decode.
  const huge = 'dh1.' + 'A'.repeat(1 << 20);
  t.same(verifier.verify(huge, T0), { ok: false, reason: 'malformed' }, 'a megabyte');
  t.equal(verifier.stats().signatureChecks, 0, 'none of these reached the signature check');
});

t.test('the signer refuses subjects a verifier would refuse', async (t) => {
  const { signer } = setup();
  t.throws(() => signer.sign({ userId: '', username: 'a', sessionId: 's' }), /non-empty userId/);
  t.throws(() => signer.sign({ ...alice, roles: Array.from({ length: 33 }, (_, i) => `r${i}`) }), /at most 32 roles/);
  t.throws(() => signer.sign({ ...alice, roles: Array.from({ length: 32 }, () => 'r'.repeat(100)) }), /exceed 4000 characters/);
  t.throws(() => createSigner({ privateKey: generateKeyPair().privateKeyPem, lifetimeMs: 10 }), RangeError);
});

t.test('keys: signer refuses a public key, verifier refuses a private key', async (t) => {
  const pair = generateKeyPair();
  t.throws(() => createSigner({ privateKey: pair.publicKeyPem }));
  t.throws(() => createVerifier({ publicKeys: [pair.privateKeyPem] }), /proxies need only the public key/);
  t.throws(() => createVerifier({ publicKeys: [createPrivateKey(pair.privateKeyPem)] }), /public key/);
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  t.throws(() => createSigner({ privateKey: rsa.privateKey }), /Ed25519 private key, got a rsa private key/);
  t.throws(() => createVerifier({ publicKeys: [rsa.publicKey] }), /Ed25519 public key/);
  t.throws(() => createVerifier({ publicKeys: [] }), /at least one public key/);
  t.equal(keyIdOf(toPublicKey(pair.publicKeyPem)), pair.keyId, 'the key id is a function of the public key');
});
