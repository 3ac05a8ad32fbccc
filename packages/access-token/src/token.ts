/**
 * The access token's wire format, shared by the signer and the verifier.
 *
 *   dh1.<keyId>.<payload>.<signature>
 *
 * `payload` is base64url(JSON of the claims); `signature` is base64url of the Ed25519 signature
 * over the ASCII text `dh1.<keyId>.<payload>`. Signing the encoded text (not the parsed JSON)
 * means any change to any character before the last dot breaks the signature. Every part is
 * cookie-safe, so the token is the cookie value as is.
 */

export const TOKEN_PREFIX = 'dh1';

/**
 * Anything longer is refused unread. Browsers keep cookies up to 4096 bytes, name included, so
 * a longer token could not travel in the cookie anyway; ours are about 300 characters.
 */
export const MAX_TOKEN_LENGTH = 4000;

/** Default token lifetime: short, because a token cannot be recalled from a proxy's cache except by revoking its session. */
export const DEFAULT_LIFETIME_MS = 5 * 60_000;

/** What a token says. Times are epoch milliseconds, like everything else in deskhub. */
export interface AccessClaims {
  /** The control plane's user id (what `Route.owner` holds). */
  readonly userId: string;
  readonly username: string;
  /** The server-side session the token was minted for; revoking it rejects the token. */
  readonly sessionId: string;
  readonly roles?: readonly string[];
  /**
   * A token for one desktop's own origin (DESKTOP_ORIGIN) names that desktop's proxy path, and is
   * good for nothing else: a desktop's page cannot use its viewer's access to any other desktop.
   * Absent: a token for the UI's origin (the owner's desktops under /desktop/ there).
   */
  readonly desktop?: string;
  /** The share or link the token was minted under (a viewer's token); absent for the owner. */
  readonly grant?: string;
  readonly issuedAt: number;
  readonly expiresAt: number;
  /** Id of the key that signed the token (set by the verifier from the token's header). */
  readonly keyId: string;
}

/** Who a token is minted for. */
export interface AccessSubject {
  userId: string;
  username: string;
  sessionId: string;
  roles?: readonly string[];
  desktop?: string;
  grant?: string;
}

export const KEY_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

/** An Ed25519 signature is 64 bytes: 86 base64url characters with no padding. */
export const SIGNATURE_LENGTH = 86;

/** The text a token signs and the payload, split out of a token without trusting any of it. */
export interface TokenParts {
  keyId: string;
  signingInput: string;
  payload: string;
  signature: Buffer;
}

/** Splits a token; null when it is not shaped like one. Bounded work: the length is checked first. */
export function splitToken(token: string): TokenParts | null {
  if (token.length > MAX_TOKEN_LENGTH) return null;
  const a = token.indexOf('.');
  const b = token.indexOf('.', a + 1);
  const c = token.indexOf('.', b + 1);
  if (a < 0 || b < 0 || c < 0 || token.indexOf('.', c + 1) !== -1) return null;
  if (token.slice(0, a) !== TOKEN_PREFIX) return null;
  const keyId = token.slice(a + 1, b);
  const payload = token.slice(b + 1, c);
  const signature = token.slice(c + 1);
  if (!KEY_ID_PATTERN.test(keyId) || payload.length === 0 || !BASE64URL.test(payload)) return null;
  // 86 characters carry 516 bits for 512: the last 4 must be zero (last char A, Q, g or w), so
  // one signature has one spelling and one token has one cache entry.
  if (signature.length !== SIGNATURE_LENGTH || !BASE64URL.test(signature) || !'AQgw'.includes(signature[SIGNATURE_LENGTH - 1]!)) return null;
  return { keyId, signingInput: token.slice(0, c), payload, signature: Buffer.from(signature, 'base64url') };
}

export function encodePayload(subject: AccessSubject, issuedAt: number, expiresAt: number): string {
  const body: Record<string, unknown> = {
    userId: subject.userId,
    username: subject.username,
    sessionId: subject.sessionId,
    issuedAt,
    expiresAt,
  };
  if (subject.roles !== undefined && subject.roles.length > 0) body.roles = [...subject.roles];
  if (subject.desktop !== undefined) body.desktop = subject.desktop;
  if (subject.grant !== undefined) body.grant = subject.grant;
  return Buffer.from(JSON.stringify(body)).toString('base64url');
}

const isText = (v: unknown, max: number): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;
const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;

/**
 * Reads a payload whose signature has already been checked. It can still be nonsense if a signer
 * were buggy, so every field is checked; the result is frozen because the verifier's cache hands
 * the same object to every request carrying the token.
 */
export function decodePayload(payload: string, keyId: string): AccessClaims | null {
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return null;
  }
  if (typeof body !== 'object' || body === null) return null;
  const { userId, username, sessionId, roles, desktop, grant, issuedAt, expiresAt } = body as Record<string, unknown>;
  if (!isText(userId, 200) || !isText(username, 200) || !isText(sessionId, 200)) return null;
  if (!isTime(issuedAt) || !isTime(expiresAt) || expiresAt <= issuedAt) return null;
  if (roles !== undefined && !(Array.isArray(roles) && roles.length <= 32 && roles.every((r) => isText(r, 100)))) return null;
  if ((desktop !== undefined && !isText(desktop, 200)) || (grant !== undefined && !isText(grant, 200))) return null;
  const claims: { -readonly [K in keyof AccessClaims]: AccessClaims[K] } = { userId, username, sessionId, issuedAt, expiresAt, keyId };
  if (roles !== undefined) claims.roles = Object.freeze([...(roles as string[])]);
  if (desktop !== undefined) claims.desktop = desktop;
  if (grant !== undefined) claims.grant = grant;
  return Object.freeze(claims);
}
