/**
 * Verifies access tokens at a proxy with public keys only, remembering tokens it has verified.
 *
 * Why the cache is safe: a cached token is one whose signature was checked, and a hit requires
 * the whole token text to equal the cached one, so a hit means exactly "this token verified
 * before". (Entries are found by the signature, 86 characters, and confirmed by comparing the
 * whole token: hashing a 300-character string fresh from each request's header costs more than
 * comparing it.) What can change since is time and revocation, and both are checked on every
 * hit: an entry is never served at or after its expiry, nor for a revoked session.
 *
 * The cache is bounded, so a flood of valid tokens costs memory up to `cacheSize` and no more.
 * Eviction is "second chance" (CLOCK), an approximation of least-recently-used whose hit only
 * sets a flag: a true LRU moves the entry on every hit, and in a Map that delete-and-insert
 * costs more than the lookup itself.
 */
import { verify as verifySignature, type KeyObject } from 'node:crypto';
import { keyIdOf, toPublicKey, type KeyInput } from './keys.ts';
import { SIGNATURE_LENGTH, decodePayload, splitToken, type AccessClaims } from './token.ts';

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

/** The signature part of a well-formed token; the length check on the cold path refuses the rest. */
const cacheKey = (token: string): string =>
  token.length > SIGNATURE_LENGTH ? token.slice(token.length - SIGNATURE_LENGTH) : token;

const failure = (reason: VerifyFailure): VerifyResult => Object.freeze({ ok: false as const, reason });
const MISSING = failure('missing');
const MALFORMED = failure('malformed');
const BAD_SIGNATURE = failure('bad-signature');
const EXPIRED = failure('expired');
const UNKNOWN_KEY = failure('unknown-key');
const REVOKED = failure('revoked');

/** A verified token; `result` is handed out as is, so a hit allocates nothing. */
interface CacheEntry {
  readonly token: string;
  readonly result: VerifyResult & { ok: true };
  readonly expiresAt: number;
  readonly sessionId: string;
  /** Set by a hit, cleared when eviction passes over the entry and spares it. */
  used: boolean;
}

/** How many recently used entries one insert may spare before it evicts regardless. */
const EVICTION_BUDGET = 8;

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

  // Keyed by the token's signature. Map keeps insertion order: the first key is the one
  // inserted (or spared) longest ago.
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

  /** Frees one slot: the oldest entry not used since it was last looked at, or expired. */
  function evictOne(now: number): void {
    for (let spared = 0; spared < EVICTION_BUDGET; spared++) {
      const oldest = cache.keys().next().value;
      if (oldest === undefined) return;
      const entry = cache.get(oldest)!;
      cache.delete(oldest);
      if (!entry.used || entry.expiresAt <= now) return;
      entry.used = false;
      cache.set(oldest, entry);
    }
    const oldest = cache.keys().next().value;
    if (oldest !== undefined) cache.delete(oldest);
  }

  function remember(request: string, claims: AccessClaims, now: number): VerifyResult {
    const result = Object.freeze({ ok: true as const, claims });
    if (cacheSize === 0) return result;
    // A token cut from a Cookie header may be a V8 slice that keeps the whole header alive;
    // an own copy keeps an entry's memory at the token's size.
    const token = Buffer.from(request, 'latin1').toString('latin1');
    const key = cacheKey(token);
    cache.delete(key);
    if (cache.size >= cacheSize) evictOne(now);
    cache.set(key, { token, result, expiresAt: claims.expiresAt, sessionId: claims.sessionId, used: false });
    return result;
  }

  return {
    keyIds: [...keys.keys()],

    verify(token, now = Date.now()) {
      if (token === undefined || token === null || token === '') return MISSING;

      const key = cacheKey(token);
      const hit = cache.get(key);
      if (hit !== undefined && hit.token === token) {
        if (hit.expiresAt <= now) {
          cache.delete(key);
          return EXPIRED;
        }
        if (revoked.size !== 0 && isRevoked(hit.sessionId, now)) {
          cache.delete(key);
          return REVOKED;
        }
        hit.used = true;
        cacheHits++;
        return hit.result;
      }

      const parts = splitToken(token);
      if (parts === null) return MALFORMED;
      const publicKey = keys.get(parts.keyId);
      if (publicKey === undefined) return UNKNOWN_KEY;
      signatureChecks++;
      if (!verifySignature(null, Buffer.from(parts.signingInput), publicKey, parts.signature)) return BAD_SIGNATURE;
      const claims = decodePayload(parts.payload, parts.keyId);
      if (claims === null) return MALFORMED;
      // A signed token outside these bounds came from a misconfigured signer; refusing it keeps
      // the promise that revocations can be forgotten after maxLifetimeMs.
      if (claims.expiresAt - claims.issuedAt > maxLifetimeMs || claims.issuedAt > now + clockSkewMs) return MALFORMED;
      if (claims.expiresAt <= now) return EXPIRED;
      if (revoked.size !== 0 && isRevoked(claims.sessionId, now)) return REVOKED;
      return remember(token, claims, now);
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
