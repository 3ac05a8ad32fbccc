/**
 * The control plane's configuration: every environment variable it reads, with defaults for the
 * embedded start, and the cross-variable rules (dev sign-in only on loopback, a stable SECRET_KEY
 * with an external database, a sign-in provider with AUTH_MODE=oidc). Sign-in providers come from
 * OIDC_PROVIDERS and their own variables (src/oidc/config.ts). Errors name the variable.
 */
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { ConfigError, env, loadConfig, type ConfigOf } from '@deskhub/config';
import { labelOfHost, parseDesktopOriginSetting, parsePrivateKeySetting, type DesktopOrigins } from '@deskhub/access-token';
import { loadOidcProviders, parseAdminClaim, type AdminClaim, type OidcProviderConfig } from './oidc/config.ts';
import { runtimeNames } from './runtime/index.ts';
import { parseDuration } from './durations.ts';
import { CLOCK_DEFAULTS, type ClockDefaults } from './catalog.ts';

/** A duration variable ("30m", "2h"); unset: the fallback. */
const duration = <T extends number | null>(fallback: T) =>
  env.custom<number | T>((raw, name) => {
    try {
      return parseDuration(raw, name);
    } catch (err) {
      throw new ConfigError(name, (err as Error).message.replace(`${name}: `, ''));
    }
  }, fallback);

/** The catalog shipped with deskhub: Kasm images, the local test images and the `demo` type. */
export const defaultCatalogPath = fileURLToPath(new URL('../catalog.yaml', import.meta.url));

const spec = {
  PORT: env.port(8081),
  HOST: env.string('127.0.0.1'),
  PUBLIC_URL: env.url(['http', 'https']),
  DATA_DIR: env.string('./.data'),
  DATABASE_URL: env.url(['postgres', 'postgresql']),
  REDIS_URL: env.url(['redis', 'rediss']),
  ROUTE_STREAM_PREFIX: env.string('deskhub:'),
  RUNTIME: env.oneOf(['all', ...runtimeNames], 'all'),
  DOCKER_HOST: env.string(),
  AUTH_MODE: env.oneOf(['dev', 'oidc'] as const, 'dev'),
  CATALOG: env.string(defaultCatalogPath),
  SECRET_KEY: env.string(),
  SESSION_TTL_HOURS: env.int(24 * 7, 1, 24 * 365),
  /** Ed25519 private key (PEM text or file) that signs desktop access tokens; unset: DATA_DIR/access.key, made on first start. */
  ACCESS_TOKEN_KEY: env.custom<KeyObject | undefined>(parsePrivateKeySetting, undefined),
  ACCESS_TOKEN_LIFETIME_S: env.int(300, 10, 3600),
  ADMIN_USERS: env.list([]),
  /** `<claim>=<value>`: sign-ins whose claim equals or contains the value get the admin role. */
  ADMIN_CLAIM: env.custom<AdminClaim | undefined>(parseAdminClaim, undefined),
  MAX_DESKTOPS_PER_USER: env.int(5, 0, 100_000),
  MAX_DESKTOPS_TOTAL: env.int(100, 0, 1_000_000),
  MAX_HOMES_PER_USER: env.int(10, 0, 100_000),
  /**
   * When a desktop cannot start because the node holding its home is lost (Swarm): `wait` (the
   * owner starts it again once the node is back), or `offer-new-home` (the owner may also start it
   * with a new, empty home after confirming; the old home is kept under another name).
   */
  HOME_NODE_LOST: env.oneOf(['wait', 'offer-new-home'] as const, 'wait'),
  READY_TIMEOUT_S: env.int(120, 1, 3600),
  REPLICA_WAIT_MS: env.int(5000, 0, 600_000),
  RECONCILE_INTERVAL_MS: env.int(5000, 100, 3_600_000),
  ACTIVITY_INTERVAL_MS: env.int(15_000, 100, 3_600_000),
  // The idle clocks' defaults for every catalog type (a type's own idle/expire/maxLifetime wins); unset: off.
  IDLE_DISCONNECT_AFTER: duration(CLOCK_DEFAULTS.idleDisconnectAfterMs),
  IDLE_WARN: duration(CLOCK_DEFAULTS.idleWarnMs),
  EXPIRE_AFTER: duration(CLOCK_DEFAULTS.expireAfterMs),
  EXPIRE_WARN: duration(CLOCK_DEFAULTS.expireWarnMs),
  EXPIRE_ACTION: env.oneOf(['stop', 'delete'] as const, CLOCK_DEFAULTS.expireAction),
  MAX_LIFETIME: duration(CLOCK_DEFAULTS.maxLifetimeMs),
  MAX_LIFETIME_WARN: duration(CLOCK_DEFAULTS.maxLifetimeWarnMs),
  /** How often the idle clocks are checked. */
  CLOCKS_INTERVAL_MS: env.int(10_000, 100, 3_600_000),
  /** How often the warm pool is refilled and recycled (a claim also wakes it). */
  POOL_INTERVAL_MS: env.int(5000, 100, 3_600_000),
  /**
   * Each desktop on an origin of its own, e.g. https://*.desktops.example.net (a wildcard DNS
   * record and certificate): needed for sharing, and the proxies' setting too. Unset: every
   * desktop under PUBLIC_URL, reachable by its owner only.
   */
  DESKTOP_ORIGIN: env.custom<DesktopOrigins | undefined>(parseDesktopOriginSetting, undefined),
  /** How long a share link lasts unless its creator says; at most SHARE_LINK_MAX_TTL. */
  SHARE_LINK_TTL: duration(24 * 3_600_000),
  SHARE_LINK_MAX_TTL: duration(7 * 24 * 3_600_000),
  /** Whether a link may give control (input); off: links give view only, as in Kasm. */
  SHARE_LINK_CONTROL: env.bool(false),
  /** How often expired shares are taken out of their routes (each proxy stops honouring them on time by itself). */
  SHARES_INTERVAL_MS: env.int(30_000, 100, 3_600_000),
  METRICS_PORT: env.port(9090),
  LOG_LEVEL: env.oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info'),
};

export type ControlPlaneConfig = ConfigOf<typeof spec> & {
  PUBLIC_URL: string;
  /** Absolute. */
  DATA_DIR: string;
  CATALOG: string;
  /** From OIDC_PROVIDERS and each provider's OIDC_<ID>_* variables (src/oidc/config.ts). */
  OIDC_PROVIDERS: OidcProviderConfig[];
};

/** The environment's clock defaults, as the catalog takes them. */
export function clockDefaults(config: ControlPlaneConfig): ClockDefaults {
  return {
    idleDisconnectAfterMs: config.IDLE_DISCONNECT_AFTER,
    idleWarnMs: config.IDLE_WARN,
    expireAfterMs: config.EXPIRE_AFTER,
    expireWarnMs: config.EXPIRE_WARN,
    expireAction: config.EXPIRE_ACTION,
    maxLifetimeMs: config.MAX_LIFETIME,
    maxLifetimeWarnMs: config.MAX_LIFETIME_WARN,
  };
}

export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

/**
 * Reads the configuration. `publicPort` is where users reach deskhub when PUBLIC_URL is unset:
 * the proxy's port (8080 for the standalone control plane, PORT for the embedded start).
 */
export function loadControlPlaneConfig(source: NodeJS.ProcessEnv = process.env, defaults: { PORT?: number; publicPort?: number } = {}): ControlPlaneConfig {
  const withDefaults = { ...source };
  if (defaults.PORT !== undefined && !source.PORT?.trim()) withDefaults.PORT = String(defaults.PORT);
  const raw = loadConfig(spec, withDefaults);
  const publicPort = defaults.publicPort ?? 8080;
  const config: ControlPlaneConfig = {
    ...raw,
    PUBLIC_URL: raw.PUBLIC_URL ?? `http://127.0.0.1:${publicPort}`,
    DATA_DIR: path.resolve(raw.DATA_DIR),
    CATALOG: path.resolve(raw.CATALOG),
    OIDC_PROVIDERS: loadOidcProviders(source),
  };
  const publicUrl = new URL(config.PUBLIC_URL);
  if (publicUrl.pathname !== '/' || publicUrl.search || publicUrl.hash) {
    throw new ConfigError('PUBLIC_URL', `expected an origin without a path (deskhub serves at the root), got "${config.PUBLIC_URL}"`);
  }
  if (config.AUTH_MODE === 'dev' && !isLoopbackHost(publicUrl.hostname)) {
    throw new ConfigError(
      'AUTH_MODE',
      `dev sign-in lets anyone sign in as anyone, so it is allowed only when PUBLIC_URL is a loopback address (PUBLIC_URL is ${config.PUBLIC_URL}); set AUTH_MODE=oidc`,
    );
  }
  if (config.AUTH_MODE === 'dev' && !isLoopbackHost(config.HOST) && config.HOST !== '') {
    throw new ConfigError('HOST', `dev sign-in lets anyone sign in as anyone, so with AUTH_MODE=dev deskhub listens on loopback only (HOST is ${config.HOST}); set AUTH_MODE=oidc`);
  }
  if (config.AUTH_MODE === 'oidc' && config.OIDC_PROVIDERS.length === 0) {
    // Without a provider nobody could sign in, which is better said now than at the first login.
    throw new ConfigError(
      'OIDC_PROVIDERS',
      'AUTH_MODE=oidc needs at least one sign-in provider: list their ids (e.g. OIDC_PROVIDERS=corp) and set OIDC_CORP_ISSUER, OIDC_CORP_CLIENT_ID and OIDC_CORP_CLIENT_SECRET (or use the google or github preset)',
    );
  }
  // Unset, the default (24 h) gives way to a shorter maximum; set, it must fit under it.
  if (!source.SHARE_LINK_TTL?.trim()) config.SHARE_LINK_TTL = Math.min(config.SHARE_LINK_TTL, config.SHARE_LINK_MAX_TTL);
  if (config.SHARE_LINK_TTL > config.SHARE_LINK_MAX_TTL) {
    throw new ConfigError('SHARE_LINK_TTL', `must not be longer than SHARE_LINK_MAX_TTL (${config.SHARE_LINK_MAX_TTL / 3_600_000} h)`);
  }
  const origins = config.DESKTOP_ORIGIN;
  if (origins !== undefined) {
    if (publicUrl.protocol === 'https:' && origins.scheme !== 'https') {
      throw new ConfigError('DESKTOP_ORIGIN', `must be https when PUBLIC_URL is (${config.PUBLIC_URL})`);
    }
    // The UI must never be served on a desktop's origin.
    if (labelOfHost(origins, publicUrl.host) !== null) {
      throw new ConfigError('DESKTOP_ORIGIN', `${origins.pattern} covers PUBLIC_URL's host ${publicUrl.host}: the UI would be a desktop's origin; put desktops under another name (ideally another registrable domain)`);
    }
  }
  if (config.DATABASE_URL && !config.SECRET_KEY) {
    throw new ConfigError(
      'SECRET_KEY',
      'required when DATABASE_URL is set: 32 bytes, base64 or hex (e.g. `openssl rand -base64 32`); it encrypts desktop credentials and signs session cookies, and must stay the same across restarts',
    );
  }
  return config;
}
