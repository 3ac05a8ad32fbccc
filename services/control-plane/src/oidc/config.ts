/**
 * Sign-in providers from the environment: `OIDC_PROVIDERS=corp,google,github` lists their ids,
 * and each id has its own variables, `OIDC_<ID>_...` (the id upper-cased, "-" as "_"). Three
 * kinds: any OpenID provider by issuer URL (discovered later, at the first sign-in, so start-up
 * never waits for it), the Google preset (an OpenID provider with a known issuer) and the GitHub
 * preset (plain OAuth2: identity from the GitHub user API). Also ADMIN_CLAIM, the claim that
 * makes a user an admin. Every error names the variable to fix.
 */
import { ConfigError } from '@deskhub/config';

export const providerKinds = ['oidc', 'google', 'github'] as const;
export type ProviderKind = (typeof providerKinds)[number];

export interface OidcProviderConfig {
  /** Path-safe id: `/auth/login/<id>`, and the `provider` column of its users. */
  id: string;
  kind: ProviderKind;
  /** Shown on the sign-in page ("Sign in with <name>"). */
  name: string;
  clientId: string;
  clientSecret: string;
  scopes: string[];
  /** oidc and google: the issuer; discovery is at `<issuer>/.well-known/openid-configuration`. */
  issuer?: string;
  /** github: the web origin (authorize and token endpoints) and the REST API base. */
  github?: { url: string; apiUrl: string };
}

/** ADMIN_CLAIM `groups=deskhub-admins`: admin when the claim (a dotted path) equals or contains the value. */
export interface AdminClaim {
  path: string[];
  value: string;
}

const ID = /^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$/;
/** Ids that would share users with another sign-in: `dev` is dev sign-in's provider column. */
const RESERVED_IDS = new Set(['dev']);
const SUFFIXES = ['TYPE', 'NAME', 'ISSUER', 'CLIENT_ID', 'CLIENT_SECRET', 'SCOPES', 'URL', 'API_URL'] as const;

const GOOGLE_ISSUER = 'https://accounts.google.com';
const GITHUB_URL = 'https://github.com';
const GITHUB_API_URL = 'https://api.github.com';

/** `OIDC_<ID>_` for an id: upper-cased, "-" as "_". */
export function variablePrefix(id: string): string {
  return `OIDC_${id.toUpperCase().replace(/-/g, '_')}_`;
}

function read(source: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = source[name]?.trim();
  return raw ? raw : undefined;
}

function required(source: NodeJS.ProcessEnv, name: string, what: string): string {
  const value = read(source, name);
  if (value === undefined) throw new ConfigError(name, `required: ${what}`);
  return value;
}

/** A client id or secret: printable ASCII, as OAuth2 allows (RFC 6749 appendix A). */
function credential(source: NodeJS.ProcessEnv, name: string, what: string): string {
  const value = required(source, name, what);
  if (!/^[\x20-\x7e]+$/.test(value)) throw new ConfigError(name, 'expected printable ASCII characters only');
  return value;
}

/**
 * An https URL (http only for a loopback host: a provider on this machine, tests) without query
 * or fragment, returned without trailing "/".
 */
function providerUrl(source: NodeJS.ProcessEnv, name: string, fallback?: string): string {
  const raw = read(source, name) ?? fallback;
  if (raw === undefined) throw new ConfigError(name, 'required: the provider\'s URL');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(name, `expected a URL, got "${raw}"`);
  }
  const loopback = url.hostname === 'localhost' || url.hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    throw new ConfigError(name, `expected an https URL (http only on a loopback address), got "${raw}"`);
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new ConfigError(name, `expected a URL without query, fragment or credentials, got "${raw}"`);
  }
  return raw.replace(/\/+$/, '');
}

function scopes(source: NodeJS.ProcessEnv, name: string, fallback: string[], needOpenid: boolean): string[] {
  const raw = read(source, name);
  const list = raw === undefined ? fallback : raw.split(/[\s,]+/).filter((s) => s.length > 0);
  if (needOpenid && !list.includes('openid')) throw new ConfigError(name, `an OpenID provider needs the "openid" scope, got "${list.join(' ')}"`);
  return list;
}

function providerConfig(source: NodeJS.ProcessEnv, id: string): OidcProviderConfig {
  const prefix = variablePrefix(id);
  const kindRaw = read(source, `${prefix}TYPE`) ?? ((providerKinds as readonly string[]).includes(id) ? id : 'oidc');
  if (!(providerKinds as readonly string[]).includes(kindRaw)) {
    throw new ConfigError(`${prefix}TYPE`, `expected one of ${providerKinds.join(', ')}, got "${kindRaw}"`);
  }
  const kind = kindRaw as ProviderKind;
  const common = {
    id,
    kind,
    clientId: credential(source, `${prefix}CLIENT_ID`, `the client id deskhub has at provider "${id}"`),
    clientSecret: credential(source, `${prefix}CLIENT_SECRET`, `the client secret deskhub has at provider "${id}"`),
  };
  const misplaced = (suffix: string, why: string) => {
    if (read(source, `${prefix}${suffix}`) !== undefined) throw new ConfigError(`${prefix}${suffix}`, why);
  };
  if (kind === 'github') {
    misplaced('ISSUER', `provider "${id}" is GitHub (plain OAuth2, no issuer): set ${prefix}URL for GitHub Enterprise instead`);
    const url = providerUrl(source, `${prefix}URL`, GITHUB_URL);
    // GitHub Enterprise Server serves its API under /api/v3 of the same host.
    const apiUrl = providerUrl(source, `${prefix}API_URL`, url === GITHUB_URL ? GITHUB_API_URL : `${url}/api/v3`);
    return { ...common, name: read(source, `${prefix}NAME`) ?? 'GitHub', scopes: scopes(source, `${prefix}SCOPES`, ['read:user'], false), github: { url, apiUrl } };
  }
  misplaced('URL', `only a GitHub provider has ${prefix}URL; provider "${id}" is ${kind} (set ${prefix}ISSUER)`);
  misplaced('API_URL', `only a GitHub provider has ${prefix}API_URL; provider "${id}" is ${kind}`);
  const issuer = providerUrl(source, `${prefix}ISSUER`, kind === 'google' ? GOOGLE_ISSUER : undefined);
  const name = read(source, `${prefix}NAME`) ?? (kind === 'google' ? 'Google' : id);
  return { ...common, name, issuer, scopes: scopes(source, `${prefix}SCOPES`, ['openid', 'profile', 'email'], true) };
}

/**
 * Reads OIDC_PROVIDERS and every provider's variables. An `OIDC_<X>_...` variable for an id that
 * is not listed is refused too: it is a typo, or a provider someone meant to enable.
 */
export function loadOidcProviders(source: NodeJS.ProcessEnv): OidcProviderConfig[] {
  const ids = (read(source, 'OIDC_PROVIDERS') ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  const seen = new Set<string>();
  for (const id of ids) {
    if (!ID.test(id)) throw new ConfigError('OIDC_PROVIDERS', `"${id}" is not a usable provider id: lowercase letters, digits and "-", at most 32`);
    if (RESERVED_IDS.has(id)) throw new ConfigError('OIDC_PROVIDERS', `"${id}" is reserved (dev sign-in's users); pick another id`);
    if (seen.has(id)) throw new ConfigError('OIDC_PROVIDERS', `"${id}" is listed twice`);
    seen.add(id);
  }
  const known = new Set(ids.flatMap((id) => SUFFIXES.map((suffix) => `${variablePrefix(id)}${suffix}`)));
  for (const name of Object.keys(source)) {
    if (!name.startsWith('OIDC_') || name === 'OIDC_PROVIDERS' || known.has(name) || !source[name]?.trim()) continue;
    const listed = ids.length > 0 ? `OIDC_PROVIDERS is "${ids.join(',')}"` : 'OIDC_PROVIDERS is empty';
    throw new ConfigError(name, `not a setting of any configured sign-in provider (${listed}; a provider reads OIDC_<ID>_${SUFFIXES.join('|')})`);
  }
  return ids.map((id) => providerConfig(source, id));
}

export function parseAdminClaim(raw: string, name: string): AdminClaim {
  const at = raw.indexOf('=');
  const claim = at > 0 ? raw.slice(0, at).trim() : '';
  const value = at > 0 ? raw.slice(at + 1).trim() : '';
  if (!claim || !value || claim.split('.').some((part) => part === '')) {
    throw new ConfigError(name, `expected <claim>=<value>, e.g. groups=deskhub-admins or realm_access.roles=admin, got "${raw}"`);
  }
  return { path: claim.split('.'), value };
}

/** True when the claim at `rule.path` equals the value or is a list that contains it. */
export function claimGrantsAdmin(claims: Record<string, unknown>, rule: AdminClaim | undefined): boolean {
  if (!rule) return false;
  let at: unknown = claims;
  for (const part of rule.path) {
    if (at === null || typeof at !== 'object' || Array.isArray(at)) return false;
    at = (at as Record<string, unknown>)[part];
  }
  const matches = (v: unknown) => (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') && String(v) === rule.value;
  return Array.isArray(at) ? at.some(matches) : matches(at);
}
