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
export { ACCESS_COOKIE_NAME, ACCESS_COOKIE_PATH, DESKTOP_ACCESS_COOKIE_NAME, MAX_ACCESS_COOKIES, readAccessTokens, accessCookie, clearAccessCookie, desktopAccessCookie } from './cookie.ts';
export { originAllowed } from './origin.ts';
export { checkAccess, roleOn, shareFor, UI_ORIGIN_SCOPE } from './access.ts';
export type { AccessDecision, AccessRole, AccessScope, RouteAccess, ShareAccess, ShareMode } from './access.ts';
export { DesktopOriginError, desktopHost, desktopOrigin, desktopOriginsSource, labelOfHost, originLabel, parseDesktopOrigin, parseDesktopOriginSetting } from './desktop-origin.ts';
export type { DesktopOrigins } from './desktop-origin.ts';
export { DEFAULT_LIFETIME_MS, MAX_TOKEN_LENGTH, TOKEN_PREFIX } from './token.ts';
export type { AccessClaims, AccessSubject } from './token.ts';
