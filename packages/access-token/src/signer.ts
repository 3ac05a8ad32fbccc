/**
 * Mints access tokens. Only the control plane holds a signer; it is the only thing that can
 * say who a request at a proxy belongs to.
 */
import { createPublicKey, sign, type KeyObject } from 'node:crypto';
import { keyIdOf, toPrivateKey, type KeyInput } from './keys.ts';
import { DEFAULT_LIFETIME_MS, MAX_TOKEN_LENGTH, SIGNATURE_LENGTH, TOKEN_PREFIX, decodePayload, encodePayload, type AccessClaims, type AccessSubject } from './token.ts';

export interface SignerOptions {
  /** Ed25519 private key, PEM (PKCS#8) or a loaded KeyObject. */
  privateKey: KeyInput;
  /** How long a token is good for; default 5 minutes. The cookie's Max-Age follows it. */
  lifetimeMs?: number;
}

export interface IssuedToken {
  token: string;
  claims: AccessClaims;
}

export interface Signer {
  /** Derived from the public key; verifiers find the key by it. */
  readonly keyId: string;
  /** Hand this (and only this) to proxies, e.g. to the embedded proxy in the same process. */
  readonly publicKey: KeyObject;
  readonly lifetimeMs: number;
  sign(subject: AccessSubject, now?: number): IssuedToken;
}

export function createSigner(options: SignerOptions): Signer {
  const privateKey = toPrivateKey(options.privateKey);
  const publicKey = createPublicKey(privateKey);
  const keyId = keyIdOf(publicKey);
  const lifetimeMs = options.lifetimeMs ?? DEFAULT_LIFETIME_MS;
  if (!Number.isSafeInteger(lifetimeMs) || lifetimeMs < 1000) throw new RangeError(`lifetimeMs must be a whole number of at least 1000, got ${lifetimeMs}`);
  const head = `${TOKEN_PREFIX}.${keyId}.`;

  return {
    keyId,
    publicKey,
    lifetimeMs,
    sign(subject, now = Date.now()) {
      const issuedAt = Math.floor(now);
      const payload = encodePayload(subject, issuedAt, issuedAt + lifetimeMs);
      // Checking our own output catches a subject the verifier would refuse (empty or
      // oversized ids) here, at the one place that can fix it, not at every proxy.
      const claims = decodePayload(payload, keyId);
      if (claims === null) throw new TypeError('access token subject needs non-empty userId, username and sessionId (at most 200 characters) and at most 32 roles');
      const signingInput = head + payload;
      if (signingInput.length + 1 + SIGNATURE_LENGTH > MAX_TOKEN_LENGTH) throw new TypeError(`access token would exceed ${MAX_TOKEN_LENGTH} characters; use fewer or shorter roles`);
      const signature = sign(null, Buffer.from(signingInput), privateKey).toString('base64url');
      return { token: `${signingInput}.${signature}`, claims };
    },
  };
}
