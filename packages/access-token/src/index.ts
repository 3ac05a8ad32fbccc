/**
 * Short-lived access tokens for desktops: the control plane mints them (Ed25519, private key),
 * every proxy verifies them with public keys only and remembers the ones it has verified.
 * See README.md for the format and the threat model.
 */
export { createSigner } from './signer.ts';
export type { Signer, SignerOptions, IssuedToken } from './signer.ts';
export { createVerifier } from './verifier.ts';
export type { Verifier, VerifierOptions, VerifierStats, VerifyResult, VerifyFailure } from './verifier.ts';
export { generateKeyPair, keyIdOf, toPrivateKey, toPublicKey, parsePrivateKeySetting, parsePublicKeysSetting, readOrCreatePrivateKeyFile } from './keys.ts';
export type { GeneratedKeyPair, KeyInput } from './keys.ts';
export { ACCESS_COOKIE_NAME, ACCESS_COOKIE_PATH, MAX_ACCESS_COOKIES, readAccessTokens, accessCookie, clearAccessCookie } from './cookie.ts';
export { originAllowed } from './origin.ts';
export { checkAccess, mayReach } from './access.ts';
export type { AccessDecision, RouteAccess } from './access.ts';
export { DEFAULT_LIFETIME_MS, MAX_TOKEN_LENGTH, TOKEN_PREFIX } from './token.ts';
export type { AccessClaims, AccessSubject } from './token.ts';
