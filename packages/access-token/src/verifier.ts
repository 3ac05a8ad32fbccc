/**
 * Verifies access tokens at a proxy with public keys only, remembering tokens it has verified.
 *
 * Why the cache is safe: a cached token is one whose signature was checked, and the cache key is
 * the whole token text, so a hit is exactly "this same token verified before". What could have
 * changed since is time and revocation, and both are checked on every hit: an entry is never
 * served at or after its expiry, nor for a revoked session. Everything else in the token is
 * immutable. The cache is bounded (least recently used entries go first), so a flood of valid
 * tokens costs memory up to `cacheSize` and no more.
 */
import { verify as verifySignature, type KeyObject } from 'node:crypto';
import { keyIdOf, toPublicKey, type KeyInput } from './keys.ts';
import { decodePayload, splitToken, type AccessClaims } from './token.ts';

export type VerifyFailure = 'missing' | 'malformed' | 'bad-signature' | 'expired' | 'unknown-key' | 'revoked';
export type VerifyResult =
  | { readonly ok: true; readonly claims: AccessClaims }
  | { readonly ok: false; readonly reason: VerifyFailure };

export interface VerifierOptions {
  /** Every public key whose tokens are accepted: the current one and, while rotating, the previous. */
  publicKeys: readonly KeyInput[];
  /** Verified tokens remembered; default 10 000 (about 1 KB each). 0 turns the cache off. */
  cacheSize?: number;
  /**
   * The longest lifetime a token may claim; default one hour. Revocations are forgotten once
   * every token they could concern has expired, which is only knowable with this bound.
   */
  maxLifetimeMs?: number;
  /** How far ahead of this machine's clock a token's issue time may be; default 30 s. */
  clockSkewMs?: number;
}

export interface VerifierStats {
  /** Ed25519 checks done (cache misses that got as far as the signature). */
  signatureChecks: number;
  cacheHits: number;
  cachedTokens: number;
  revokedSessions: number;
}

export interface Verifier {
  readonly keyIds: readonly string[];
  verify(token: string | undefined | null, now?: number): VerifyResult;
  /**
   * Rejects every token of `sessionId` from now on, cached ones included, until `until` (epoch
   * ms). By then every token of the session must have expired: the default is now plus the
   * longest token lifetime and the clock skew, which is always enough.
   */
  revokeSession(sessionId: string, until?: number): void;
  isRevoked(sessionId: string, now?: number): boolean;
  stats(): VerifierStats;
}

const failure = (reason: VerifyFailure): VerifyResult => Object.freeze({ ok: false as const, reason });
const MISSING = failure('missing');
const MALFORMED = failure('malformed');
const BAD_SIGNATURE = failure('bad-signature');
const EXPIRED = failure('expired');
const UNKNOWN_KEY = failure('unknown-key');
const REVOKED = failure('revoked');

/** A verified token; `result` is handed out as is, so a hit allocates nothing. */
interface CacheEntry {
  readonly result: VerifyResult & { ok: true };
  readonly expiresAt: number;
  readonly sessionId: string;
}

export function createVerifier(options: VerifierOptions): Verifier {
  const keys = new Map<string, KeyObject>();
  for (const input of options.publicKeys) {
    const key = toPublicKey(input);
    keys.set(keyIdOf(key), key);
  }
  if (keys.size === 0) throw new TypeError('createVerifier needs at least one public key');
  const cacheSize = options.cacheSize ?? 10_000;
  const maxLifetimeMs = options.maxLifetimeMs ?? 60 * 60_000;
  const clockSkewMs = options.clockSkewMs ?? 30_000;
  for (const [name, v] of [['cacheSize', cacheSize], ['maxLifetimeMs', maxLifetimeMs], ['clockSkewMs', clockSkewMs]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${name} must be a whole number >= 0, got ${v}`);
  }

  // Map keeps insertion order: re-inserting on a hit makes the first key the least recently used.
  const cache = new Map<string, CacheEntry>();
  // sessionId -> epoch ms until which its tokens are refused.
  const revoked = new Map<string, number>();
  let sweepRevokedAt = 1024;
  let signatureChecks = 0;
  let cacheHits = 0;

  function isRevoked(sessionId: string, now: number = Date.now()): boolean {
    const until = revoked.get(sessionId);
    if (until === undefined) return false;
    if (until > now) return true;
    revoked.delete(sessionId);
    return false;
  }

  function remember(token: string, claims: AccessClaims): VerifyResult {
    const result = Object.freeze({ ok: true as const, claims });
    if (cacheSize === 0) return result;
    if (cache.size >= cacheSize) {
      const oldest = cache.keys().next().value;
      if (oldest !== undefined) cache.delete(oldest);
    }
    cache.set(token, { result, expiresAt: claims.expiresAt, sessionId: claims.sessionId });
    return result;
  }

  return {
    keyIds: [...keys.keys()],

    verify(token, now = Date.now()) {
      if (token === undefined || token === null || token === '') return MISSING;

      const hit = cache.get(token);
      if (hit !== undefined) {
        if (hit.expiresAt <= now) {
          cache.delete(token);
          return EXPIRED;
        }
        if (revoked.size !== 0 && isRevoked(hit.sessionId, now)) {
          cache.delete(token);
          return REVOKED;
        }
        cache.delete(token);
        cache.set(token, hit);
        cacheHits++;
        return hit.result;
      }

      const parts = splitToken(token);
      if (parts === null) return MALFORMED;
      const key = keys.get(parts.keyId);
      if (key === undefined) return UNKNOWN_KEY;
      signatureChecks++;
      if (!verifySignature(null, Buffer.from(parts.signingInput), key, parts.signature)) return BAD_SIGNATURE;
      const claims = decodePayload(parts.payload, parts.keyId);
      if (claims === null) return MALFORMED;
      // A signed token outside these bounds came from a misconfigured signer; refusing it keeps
      // the promise that revocations can be forgotten after maxLifetimeMs.
      if (claims.expiresAt - claims.issuedAt > maxLifetimeMs || claims.issuedAt > now + clockSkewMs) return MALFORMED;
      if (claims.expiresAt <= now) return EXPIRED;
      if (revoked.size !== 0 && isRevoked(claims.sessionId, now)) return REVOKED;
      return remember(token, claims);
    },

    revokeSession(sessionId, until = Date.now() + maxLifetimeMs + clockSkewMs) {
      const known = revoked.get(sessionId);
      if (known === undefined || known < until) revoked.set(sessionId, until);
      if (revoked.size >= sweepRevokedAt) {
        // Amortised: a sweep only after the set has doubled, so revoking stays O(1) on average.
        const now = Date.now();
        for (const [id, u] of revoked) if (u <= now) revoked.delete(id);
        sweepRevokedAt = Math.max(1024, revoked.size * 2);
      }
    },

    isRevoked,

    stats: () => ({ signatureChecks, cacheHits, cachedTokens: cache.size, revokedSessions: revoked.size }),
  };
}
