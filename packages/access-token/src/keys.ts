/**
 * Ed25519 keys for access tokens: generation, loading from settings, and key ids.
 *
 * A key id is derived from the public key itself (a SHA-256 fingerprint), so the control plane
 * and the proxies can never be configured with ids that disagree: rotating keys means giving the
 * proxies the new public key next to the old one, then switching the control plane's private key.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, KeyObject } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError } from '@deskhub/config';

/** A PEM text or a key node:crypto has already loaded. */
export type KeyInput = string | KeyObject;

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/** 12 base64url characters (72 bits) of the SHA-256 of the raw 32-byte public key. */
export function keyIdOf(publicKey: KeyObject): string {
  const jwk = publicKey.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new TypeError('not an Ed25519 public key');
  return createHash('sha256').update(Buffer.from(jwk.x, 'base64url')).digest('base64url').slice(0, 12);
}

export interface GeneratedKeyPair {
  privateKeyPem: string;
  publicKeyPem: string;
  keyId: string;
}

export function generateKeyPair(): GeneratedKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    keyId: keyIdOf(publicKey),
  };
}

/** OpenSSL's own errors ("DECODER routines::unsupported") say little to the person configuring deskhub. */
function readPem(pem: string, kind: string, load: (pem: string) => KeyObject): KeyObject {
  try {
    return load(pem);
  } catch (err) {
    throw new TypeError(`expected a PEM ${kind} key, could not read it (${(err as Error).message})`);
  }
}

/** Loads an Ed25519 private key; throws TypeError for anything else (a public key included). */
export function toPrivateKey(input: KeyInput): KeyObject {
  if (typeof input === 'string' && /-----BEGIN PUBLIC KEY-----/.test(input)) {
    throw new TypeError('expected an Ed25519 private key, got a public key');
  }
  const key = typeof input === 'string' ? readPem(input, 'private', createPrivateKey) : input;
  if (key.type !== 'private' || key.asymmetricKeyType !== 'ed25519') {
    throw new TypeError(`expected an Ed25519 private key, got a ${key.asymmetricKeyType ?? 'secret'} ${key.type} key`);
  }
  return key;
}

/**
 * Loads an Ed25519 public key. A private key is refused rather than reduced to its public half:
 * proxies must never hold what mints tokens, so handing them one is a configuration mistake.
 */
export function toPublicKey(input: KeyInput): KeyObject {
  if (typeof input === 'string' && /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(input)) {
    throw new TypeError('expected an Ed25519 public key, got a private key (proxies need only the public key)');
  }
  const key = typeof input === 'string' ? readPem(input, 'public', createPublicKey) : input;
  if (key.type !== 'public' || key.asymmetricKeyType !== 'ed25519') {
    throw new TypeError(`expected an Ed25519 public key, got a ${key.asymmetricKeyType ?? 'secret'} ${key.type} key`);
  }
  return key;
}

/** `KEY\nWITH\nESCAPES` in .env files and compose files means real newlines. */
function unescapeNewlines(text: string): string {
  return text.includes('\\n') ? text.replace(/\\n/g, '\n') : text;
}

/** A setting holds either PEM text itself or the path of a file holding it. */
function readSetting(raw: string, name: string): { text: string; source: string } {
  const value = raw.trim();
  if (value.startsWith('-----BEGIN')) return { text: unescapeNewlines(value), source: 'its value' };
  try {
    return { text: readFileSync(value, 'utf8'), source: `file ${value}` };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(name, `expected PEM text or the path of a PEM file, could not read "${value}" (${code})`);
  }
}

/**
 * Parses a setting such as ACCESS_TOKEN_PRIVATE_KEY (for `env.custom`): PEM text, or a file path.
 * Errors are ConfigErrors naming the setting.
 */
export function parsePrivateKeySetting(raw: string, name: string): KeyObject {
  const { text, source } = readSetting(raw, name);
  const blocks = text.match(PEM_BLOCK) ?? [];
  if (blocks.length !== 1) throw new ConfigError(name, `expected one PEM private key in ${source}, found ${blocks.length} PEM blocks`);
  try {
    return toPrivateKey(blocks[0]!);
  } catch (err) {
    throw new ConfigError(name, `${source}: ${(err as Error).message}`);
  }
}

/**
 * Parses a setting such as ACCESS_TOKEN_PUBLIC_KEYS: PEM text with one or more public keys, or a
 * comma-separated list of files holding them. Several keys are how rotation works.
 */
export function parsePublicKeysSetting(raw: string, name: string): KeyObject[] {
  const sources = raw.trim().startsWith('-----BEGIN') ? [raw] : raw.split(',').map((s) => s.trim()).filter(Boolean);
  const keys: KeyObject[] = [];
  for (const one of sources) {
    const { text, source } = readSetting(one, name);
    const blocks = text.match(PEM_BLOCK) ?? [];
    if (blocks.length === 0) throw new ConfigError(name, `expected PEM public keys in ${source}, found none`);
    for (const block of blocks) {
      try {
        keys.push(toPublicKey(block));
      } catch (err) {
        throw new ConfigError(name, `${source}: ${(err as Error).message}`);
      }
    }
  }
  if (keys.length === 0) throw new ConfigError(name, 'expected at least one PEM public key');
  return keys;
}

/**
 * The private key kept in `path`, created there (mode 0600) on first use. For one-machine setups
 * (embedded mode under DATA_DIR) where nobody should have to run openssl first.
 */
export function readOrCreatePrivateKeyFile(path: string): KeyObject {
  try {
    return toPrivateKey(readFileSync(path, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // Written aside, then linked into place: link() fails if another process won the race, and
  // nobody ever reads a half-written file.
  const aside = `${path}.${process.pid}.${Date.now()}.tmp`;
  writeFileSync(aside, generateKeyPair().privateKeyPem, { mode: 0o600, flag: 'wx' });
  try {
    linkSync(aside, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    unlinkSync(aside);
  }
  return toPrivateKey(readFileSync(path, 'utf8'));
}
