/**
 * The control plane's secrets: the SECRET_KEY (from configuration, or generated once under
 * DATA_DIR for the embedded start), the keys derived from it, AES-256-GCM encryption of desktop
 * credentials at rest, and generated desktop passwords.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, chmodSync, statSync } from 'node:fs';
import path from 'node:path';
import { ConfigError } from '@deskhub/config';

export interface Secrets {
  /** Encrypts a small JSON-able value; the result is a printable string. */
  seal(value: unknown): string;
  /** Inverse of seal; throws when the key is wrong or the data was altered. */
  open<T>(sealed: string): T;
  /** Key for @fastify/cookie's signatures. */
  cookieKey: string;
  /** Identifies the key without revealing it, so a database can tell it was given another key. */
  fingerprint: string;
}

const KEY_FILE = 'secret.key';

/** Accepts 32 bytes as base64 (44 chars) or hex (64 chars). */
export function parseSecretKey(raw: string, variable = 'SECRET_KEY'): Buffer {
  const text = raw.trim();
  let key: Buffer | null = null;
  if (/^[0-9a-fA-F]{64}$/.test(text)) key = Buffer.from(text, 'hex');
  else if (/^[A-Za-z0-9+/_-]{42,44}={0,2}$/.test(text)) key = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (!key || key.length !== 32) {
    throw new ConfigError(variable, 'expected 32 bytes as base64 (44 characters) or hex (64 characters), e.g. `openssl rand -base64 32`');
  }
  return key;
}

/**
 * The key from SECRET_KEY, or (embedded start) the one stored in DATA_DIR/secret.key, created
 * with mode 0600 on first use.
 */
export function loadSecretKey(secretKey: string | undefined, dataDir: string): Buffer {
  if (secretKey) return parseSecretKey(secretKey);
  const file = path.join(dataDir, KEY_FILE);
  try {
    const text = readFileSync(file, 'utf8');
    const mode = statSync(file).mode & 0o777;
    if (mode & 0o077) chmodSync(file, 0o600);
    return parseSecretKey(text, `SECRET_KEY (from ${file})`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const key = randomBytes(32);
  try {
    writeFileSync(file, key.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  } catch (err) {
    // Another process created it first: use theirs.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadSecretKey(undefined, dataDir);
    throw err;
  }
  return key;
}

function derive(key: Buffer, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), `deskhub ${purpose}`, 32));
}

export function createSecrets(key: Buffer): Secrets {
  const encryptionKey = derive(key, 'credentials encryption v1');
  return {
    seal(value) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', encryptionKey, iv);
      const body = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final()]);
      return ['v1', iv.toString('base64'), cipher.getAuthTag().toString('base64'), body.toString('base64')].join(':');
    },
    open<T>(sealed: string): T {
      const [version, iv, tag, body] = sealed.split(':');
      if (version !== 'v1' || !iv || !tag || body === undefined) throw new Error('sealed value has an unknown format');
      const decipher = createDecipheriv('aes-256-gcm', encryptionKey, Buffer.from(iv, 'base64'));
      decipher.setAuthTag(Buffer.from(tag, 'base64'));
      const text = Buffer.concat([decipher.update(Buffer.from(body, 'base64')), decipher.final()]).toString('utf8');
      return JSON.parse(text) as T;
    },
    cookieKey: derive(key, 'cookie signing').toString('base64'),
    fingerprint: createHmac('sha256', derive(key, 'fingerprint')).update('deskhub').digest('hex').slice(0, 32),
  };
}

const PASSWORD_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';

/**
 * A desktop password: letters and digits only, because Kasm's startup script passes VNC_PW
 * through `echo -e` (kasm-contract.md).
 */
export function generatePassword(length = 28): string {
  let out = '';
  for (let i = 0; i < length; i++) out += PASSWORD_ALPHABET[randomInt(PASSWORD_ALPHABET.length)];
  return out;
}

/** Random token for a session cookie, and the hash that the database keeps instead of it. */
export function newSessionToken(): { token: string; hash: string } {
  const token = randomBytes(32).toString('base64url');
  return { token, hash: hashToken(token) };
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
