import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { ConfigError } from '@deskhub/config';
import {
  createSigner, createVerifier, generateKeyPair, keyIdOf, parsePrivateKeySetting, parsePublicKeysSetting, readOrCreatePrivateKeyFile,
} from '../src/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'deskhub-keys-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function configError(t: Test, fn: () => unknown, variable: string, message: RegExp) {
  try {
    fn();
    t.fail('expected a ConfigError');
  } catch (err) {
    t.ok(err instanceof ConfigError, 'a ConfigError');
    t.equal((err as ConfigError).variable, variable);
    t.match((err as Error).message, message);
  }
}

t.test('private key from inline PEM, escaped PEM, or a file', async (t) => {
  const pair = generateKeyPair();
  const file = join(dir, 'access.key');
  writeFileSync(file, pair.privateKeyPem);
  for (const raw of [pair.privateKeyPem, pair.privateKeyPem.replace(/\n/g, '\\n'), file, `  ${file}  `]) {
    const key = parsePrivateKeySetting(raw, 'ACCESS_TOKEN_PRIVATE_KEY');
    t.equal(createSigner({ privateKey: key }).keyId, pair.keyId);
  }
});

t.test('private key setting errors name the setting', async (t) => {
  const pair = generateKeyPair();
  const name = 'ACCESS_TOKEN_PRIVATE_KEY';
  configError(t, () => parsePrivateKeySetting(join(dir, 'missing.key'), name), name, /^ACCESS_TOKEN_PRIVATE_KEY: .*could not read .*missing\.key.*ENOENT/);
  configError(t, () => parsePrivateKeySetting(pair.publicKeyPem, name), name, /expected an Ed25519 private key, got a public key/);
  configError(t, () => parsePrivateKeySetting(pair.privateKeyPem + pair.privateKeyPem, name), name, /found 2 PEM blocks/);
  const garbage = join(dir, 'garbage.key');
  writeFileSync(garbage, 'not a key');
  configError(t, () => parsePrivateKeySetting(garbage, name), name, /found 0 PEM blocks/);
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  configError(t, () => parsePrivateKeySetting(rsa, name), name, /got a rsa private key/);
  configError(t, () => parsePrivateKeySetting('-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----', name), name, /^ACCESS_TOKEN_PRIVATE_KEY: its value: expected a PEM private key, could not read it/);
});

t.test('public keys: several in one PEM text, or a list of files; private keys refused', async (t) => {
  const a = generateKeyPair();
  const b = generateKeyPair();
  const name = 'ACCESS_TOKEN_PUBLIC_KEYS';
  const inline = parsePublicKeysSetting(a.publicKeyPem + b.publicKeyPem, name);
  t.same(inline.map(keyIdOf), [a.keyId, b.keyId]);
  const fa = join(dir, 'a.pub');
  const fb = join(dir, 'b.pub');
  writeFileSync(fa, a.publicKeyPem);
  writeFileSync(fb, b.publicKeyPem);
  t.same(parsePublicKeysSetting(`${fa}, ${fb}`, name).map(keyIdOf), [a.keyId, b.keyId]);
  const verifier = createVerifier({ publicKeys: parsePublicKeysSetting(fa, name) });
  t.ok(verifier.verify(createSigner({ privateKey: a.privateKeyPem }).sign({ userId: 'u', username: 'n', sessionId: 's' }).token).ok);

  configError(t, () => parsePublicKeysSetting(a.privateKeyPem, name), name, /got a private key \(proxies need only the public key\)/);
  configError(t, () => parsePublicKeysSetting(`${fa},${join(dir, 'nope.pub')}`, name), name, /could not read .*nope\.pub/);
  const empty = join(dir, 'empty.pub');
  writeFileSync(empty, '');
  configError(t, () => parsePublicKeysSetting(empty, name), name, /found none/);
});

t.test('readOrCreatePrivateKeyFile creates a 0600 key once, then reads the same key', async (t) => {
  const file = join(dir, 'data', 'keys', 'access.key');
  const first = readOrCreatePrivateKeyFile(file);
  t.equal(statSync(file).mode & 0o777, 0o600);
  t.match(readFileSync(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
  const again = readOrCreatePrivateKeyFile(file);
  t.equal(createSigner({ privateKey: again }).keyId, createSigner({ privateKey: first }).keyId);
  writeFileSync(join(dir, 'bad.key'), 'garbage');
  t.throws(() => readOrCreatePrivateKeyFile(join(dir, 'bad.key')), 'a corrupt key file is an error, never silently replaced');
});
