/**
 * A real OpenID Provider for tests: panva's oidc-provider (OpenID Certified) on a free
 * 127.0.0.1 port, with sign-in done over plain HTTP instead of a browser.
 *
 * The provider's own login and consent pages are replaced by one interaction route,
 * `/interaction/<uid>?account=<sub>`, that signs the named account in and grants whatever the
 * client asked for. `completeLogin(authorizationUrl, sub)` walks the redirects from the client's
 * authorization URL to its callback with a cookie jar, as a browser would, and returns the
 * callback URL (code, state, iss) for the test to hand to the client under test.
 * PKCE (S256) is required of every client, so a client that skips it fails here as it would at
 * a strict provider.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider, { type Adapter, type AdapterPayload, type ClientMetadata, type Configuration, type InteractionResults } from 'oidc-provider';

export interface OidcAccount {
  email?: string;
  email_verified?: boolean;
  preferred_username?: string;
  name?: string;
  /** Released with the `groups` scope (for admin-by-claim tests). */
  groups?: string[];
}

export interface StartOidcProviderOptions {
  /** Registered clients; besides the three below, any oidc-provider client metadata. */
  clients: Array<ClientMetadata & { client_id: string; client_secret?: string; redirect_uris: string[] }>;
  /** Accounts by subject (`sub`). */
  accounts: Record<string, OidcAccount>;
  /** Listen on this 127.0.0.1 port (default: a free one), e.g. to start after its client was configured. */
  port?: number;
}

export interface OidcProvider {
  /** The issuer, `http://127.0.0.1:<port>`; discovery is at `${issuer}/.well-known/openid-configuration`. */
  readonly issuer: string;
  /** Same as issuer: where to send requests. */
  readonly url: string;
  /** The oidc-provider instance, for events or anything this helper does not cover. */
  readonly provider: Provider;
  /**
   * Follows `authorizationUrl` through sign-in (as `sub`) and consent to the client's redirect
   * and returns that redirect, e.g. `http://127.0.0.1:8080/auth/callback/test?code=…&state=…&iss=…`.
   * A provider error the client must see (bad PKCE, unknown redirect) also comes back as a
   * redirect to the client, with `error`; an error the provider shows to the user throws.
   */
  completeLogin(authorizationUrl: string, sub: string): Promise<URL>;
  /** Like completeLogin, but the user refuses: the client gets `error=access_denied`. */
  denyLogin(authorizationUrl: string): Promise<URL>;
  close(): Promise<void>;
}

/** A redirect chain longer than this is a loop, not a sign-in. */
const MAX_HOPS = 10;
const HOP_TIMEOUT_MS = 15_000;
const DENY = '\u0000deny';

export async function startOidcProvider(options: StartOidcProviderOptions): Promise<OidcProvider> {
  const accounts = new Map(Object.entries(options.accounts));

  // The issuer must contain the port, so listen first and route to the provider once it exists.
  let handle: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.writeHead(503).end();
  const server = createServer((req, res) => handle(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const stored = new Map<string, { payload: AdapterPayload; expiresAt: number }>();
  const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const configuration: Configuration = {
    clients: options.clients,
    jwks: { keys: [{ ...signingKey, kid: 'testkit-rs256', alg: 'RS256', use: 'sig' } as never] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    pkce: { methods: ['S256'], required: () => true },
    adapter: memoryStore(stored),
    // Set explicitly (seconds) so the provider does not print a notice for each default.
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
    features: { devInteractions: { enabled: false } },
    // Put profile and email claims in the id_token itself, as Google and most providers do,
    // rather than only at the userinfo endpoint.
    conformIdTokenClaims: false,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    async findAccount(_ctx, sub) {
      const account = accounts.get(sub);
      if (account === undefined) return undefined;
      return { accountId: sub, claims: async () => ({ sub, ...account }) };
    },
    async renderError(ctx, out) {
      ctx.type = 'application/json';
      ctx.body = out;
    },
  };
  const provider = new Provider(issuer, configuration);
  const callback = provider.callback();

  async function interact(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const account = new URL(req.url ?? '/', issuer).searchParams.get('account');
    const details = await provider.interactionDetails(req, res);
    let result: InteractionResults;
    if (account === DENY) {
      result = { error: 'access_denied', error_description: 'the user refused' };
    } else if (details.prompt.name === 'login') {
      if (account === null || !accounts.has(account)) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'unknown_account', error_description: `no account "${account ?? ''}" at this test provider` }));
        return;
      }
      result = { login: { accountId: account } };
    } else if (details.prompt.name === 'consent') {
      // Grant exactly what the client asked for and has not been granted yet.
      const grant = details.grantId !== undefined
        ? (await provider.Grant.find(details.grantId))!
        : new provider.Grant({ accountId: details.session!.accountId, clientId: String(details.params.client_id) });
      const missing = details.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
      result = { consent: { grantId: await grant.save() } };
    } else {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'unsupported_prompt', error_description: `prompt "${details.prompt.name}" is not handled by the test provider` }));
      return;
    }
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  }

  handle = (req, res) => {
    if (req.url?.startsWith('/interaction/')) {
      interact(req, res).catch((err: Error) => {
        if (res.headersSent) return res.destroy();
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'interaction_failed', error_description: err.message }));
      });
      return;
    }
    callback(req, res);
  };

  async function drive(authorizationUrl: string, account: string): Promise<URL> {
    const jar = new CookieJar();
    let url = new URL(authorizationUrl);
    if (url.origin !== issuer) throw new Error(`completeLogin: ${url.origin} is not this provider (${issuer})`);
    for (let hop = 0; hop < MAX_HOPS; hop++) {
      if (url.origin !== issuer) return url; // left the provider: the client's callback
      if (url.pathname.startsWith('/interaction/')) url.searchParams.set('account', account);
      const cookie = jar.header(url);
      const res = await fetch(url, { redirect: 'manual', headers: cookie === '' ? {} : { cookie }, signal: AbortSignal.timeout(HOP_TIMEOUT_MS) });
      jar.store(url, res.headers.getSetCookie());
      const location = res.headers.get('location');
      if (res.status < 300 || res.status >= 400 || location === null) {
        const body = (await res.text()).slice(0, 500);
        throw new Error(`completeLogin: ${url.pathname} answered ${res.status} instead of a redirect: ${body}`);
      }
      await res.body?.cancel();
      url = new URL(location, url);
    }
    throw new Error(`completeLogin: more than ${MAX_HOPS} redirects`);
  }

  return {
    issuer,
    url: issuer,
    provider,
    completeLogin: (authorizationUrl, sub) => drive(authorizationUrl, sub),
    denyLogin: (authorizationUrl) => drive(authorizationUrl, DENY),
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      stored.clear();
    },
  };
}

/**
 * The provider's sessions, codes and grants, in memory, one store per provider: a test provider
 * lives as long as its test. (oidc-provider's built-in equivalent prints a production warning on
 * every start.)
 */
function memoryStore(all: Map<string, { payload: AdapterPayload; expiresAt: number }>): new (model: string) => Adapter {
  const get = (key: string): AdapterPayload | undefined => {
    const entry = all.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= Date.now()) {
      all.delete(key);
      return undefined;
    }
    return entry.payload;
  };
  return class MemoryStore implements Adapter {
    readonly #model: string;

    constructor(model: string) {
      this.#model = model;
    }

    #key(id: string): string {
      return `${this.#model}:${id}`;
    }

    async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
      const expiresAt = Date.now() + expiresIn * 1000;
      all.set(this.#key(id), { payload, expiresAt });
      // Indexes for the lookups oidc-provider makes by something other than the id.
      if (payload.grantId) all.set(`grant:${payload.grantId}:${this.#key(id)}`, { payload: {}, expiresAt });
      if (payload.userCode) all.set(`userCode:${payload.userCode}`, { payload: { jti: id }, expiresAt });
      if (payload.uid) all.set(`uid:${this.#model}:${payload.uid}`, { payload: { jti: id }, expiresAt });
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      return get(this.#key(id));
    }

    async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      const ref = get(`userCode:${userCode}`);
      return ref?.jti === undefined ? undefined : get(this.#key(ref.jti));
    }

    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      const ref = get(`uid:${this.#model}:${uid}`);
      return ref?.jti === undefined ? undefined : get(this.#key(ref.jti));
    }

    async consume(id: string): Promise<void> {
      const payload = get(this.#key(id));
      if (payload !== undefined) payload.consumed = Math.floor(Date.now() / 1000);
    }

    async destroy(id: string): Promise<void> {
      all.delete(this.#key(id));
    }

    async revokeByGrantId(grantId: string): Promise<void> {
      const prefix = `grant:${grantId}:`;
      for (const key of [...all.keys()]) {
        if (!key.startsWith(prefix)) continue;
        all.delete(key);
        all.delete(key.slice(prefix.length));
      }
    }
  };
}

/** Just enough of a browser's cookie store for one origin: names, paths, deletion. Tests of deskhub's own sign-in use it too. */
export class CookieJar {
  readonly #cookies = new Map<string, { name: string; value: string; path: string }>();

  store(url: URL, setCookies: string[]): void {
    for (const line of setCookies) {
      const [pair = '', ...attributes] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = url.pathname.replace(/\/[^/]*$/, '') || '/';
      let expired = value === '';
      for (const attribute of attributes) {
        const [key = '', val = ''] = attribute.split('=');
        if (key.toLowerCase() === 'path' && val.startsWith('/')) path = val;
        if (key.toLowerCase() === 'max-age' && Number(val) <= 0) expired = true;
        if (key.toLowerCase() === 'expires' && Date.parse(val) <= Date.now()) expired = true;
      }
      const id = `${name}\u0000${path}`;
      if (expired) this.#cookies.delete(id);
      else this.#cookies.set(id, { name, value, path });
    }
  }

  header(url: URL): string {
    const matching = [...this.#cookies.values()].filter((c) =>
      url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`));
    return matching.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}
