/**
 * One sign-in provider at run time: the OAuth2 code flow with state and PKCE (S256) through
 * @fastify/oauth2, plus what OpenID Connect adds (a nonce, the id_token checked against the
 * provider's JWKS: signature, iss, aud, exp, nonce) or, for the GitHub preset, the user API.
 *
 * Nothing is fetched at start-up. The provider's metadata is discovered at the first sign-in,
 * kept once it worked, and tried again at the next sign-in after a failure; the @fastify/oauth2
 * client is built then, on a small holder instance of its own (the plugin would otherwise
 * discover while deskhub starts and refuse to start while the provider is down). The state and
 * PKCE verifier cookies it sets, and deskhub's own flow cookie (nonce, where to go afterwards),
 * are signed, live ten minutes, are `__Host-` cookies under https, and are cleared after use.
 */
import { randomBytes } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import fastifyOauth2, { type OAuth2Namespace, type FastifyOAuth2Options } from '@fastify/oauth2';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { AdminClaim, OidcProviderConfig } from './config.ts';

/** A sign-in that cannot go on: the status and a message for the person signing in. */
export class SignInError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
    this.name = 'SignInError';
  }
}

/** Who signed in, as the provider says. */
export interface ProviderIdentity {
  subject: string;
  /** preferred_username, login or the email's local part: the first that makes a path-safe name. */
  names: string[];
  displayName: string | null;
  /** Every claim seen (id_token, userinfo; the GitHub user object), for ADMIN_CLAIM. */
  claims: Record<string, unknown>;
}

interface OidcMetadata {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  jwks_uri: string;
  userinfo_endpoint?: string;
  token_endpoint_auth_methods_supported?: string[];
  id_token_signing_alg_values_supported?: string[];
  authorization_response_iss_parameter_supported?: boolean;
}

interface Ready {
  oauth: OAuth2Namespace;
  holder: FastifyInstance;
  oidc: { metadata: OidcMetadata; jwks: JWTVerifyGetKey; algorithms: string[] } | null;
}

interface Flow {
  state: string;
  nonce: string | null;
  next: string;
}

const FLOW_MAX_AGE_S = 600;
const FETCH_TIMEOUT_MS = 10_000;
const USER_AGENT = 'deskhub';
/** Signature algorithms a JWKS can verify (never "none", never an HMAC with the client secret). */
const ASYMMETRIC = /^(RS|PS|ES)(256|384|512)$|^EdDSA$|^ES256K$/;

export class SignInProvider {
  readonly config: OidcProviderConfig;
  readonly callbackUrl: string;
  readonly #secure: boolean;
  readonly #adminClaim: AdminClaim | undefined;
  readonly #cookieNames: { state: string; verifier: string; flow: string };
  #ready: Promise<Ready> | null = null;
  #holder: FastifyInstance | null = null;

  /** `adminClaim`: ADMIN_CLAIM, looked for at the userinfo endpoint when the id_token lacks it. */
  constructor(config: OidcProviderConfig, publicUrl: string, adminClaim?: AdminClaim) {
    this.config = config;
    this.#adminClaim = adminClaim;
    this.callbackUrl = `${publicUrl}/auth/callback/${config.id}`;
    this.#secure = new URL(publicUrl).protocol === 'https:';
    // Under https, `__Host-` cookies: no sibling host or plain-http answer can plant a state and
    // verifier of its own choosing (login CSRF). Per provider, so two tabs do not clash.
    const prefix = this.#secure ? `__Host-deskhub-${config.id}` : `deskhub-${config.id}`;
    this.#cookieNames = { state: `${prefix}-state`, verifier: `${prefix}-verifier`, flow: `${prefix}-flow` };
  }

  get loginUrl(): string {
    return `/auth/login/${this.config.id}`;
  }

  get #cookieOptions() {
    return { path: '/', httpOnly: true, sameSite: 'lax' as const, secure: this.#secure, signed: true, maxAge: FLOW_MAX_AGE_S };
  }

  /** Starts a sign-in: sets the flow cookies and returns the provider's authorization URL. */
  async start(request: FastifyRequest, reply: FastifyReply, next: string): Promise<string> {
    const { oauth, oidc } = await this.#discovered();
    const url = new URL(await oauth.generateAuthorizationUri(request, reply));
    const flow: Flow = { state: url.searchParams.get('state') ?? '', nonce: null, next };
    if (oidc) {
      flow.nonce = randomBytes(16).toString('base64url');
      url.searchParams.set('nonce', flow.nonce);
    }
    reply.setCookie(this.#cookieNames.flow, Buffer.from(JSON.stringify(flow)).toString('base64url'), this.#cookieOptions);
    return url.toString();
  }

  /** Where the user wanted to go, from the flow cookie (for error pages); `/` without one. */
  nextOf(request: FastifyRequest): string {
    return this.#readFlow(request)?.next ?? '/';
  }

  /**
   * Finishes a sign-in at the callback: checks the flow, exchanges the code (the plugin checks
   * the state and sends the PKCE verifier) and returns who signed in and where to go.
   */
  async finish(request: FastifyRequest, reply: FastifyReply, query: CallbackQuery): Promise<{ identity: ProviderIdentity; next: string }> {
    const flow = this.#readFlow(request);
    if (query.error !== undefined) {
      this.clearCookies(reply);
      const code = /^[a-z_]{1,64}$/.test(query.error) ? query.error : 'error';
      if (code === 'access_denied') throw new SignInError(403, `Sign-in with ${this.config.name} was refused (access_denied): you declined, or ${this.config.name} did not let you in.`);
      throw new SignInError(400, `${this.config.name} answered the sign-in with an error (${code}). Please try again.`);
    }
    if (!flow || !query.state || flow.state !== query.state) {
      this.clearCookies(reply);
      throw new SignInError(400, `This sign-in with ${this.config.name} was not started in this browser, was already used, or has expired (the state does not match). Please start again.`);
    }
    if (!query.code) {
      this.clearCookies(reply);
      throw new SignInError(400, `${this.config.name} sent no authorization code. Please start again.`);
    }
    const { oauth, oidc } = await this.#discovered();
    if (oidc) {
      // RFC 9207: the response names its issuer, so a response from another provider is refused.
      if ((query.iss !== undefined || oidc.metadata.authorization_response_iss_parameter_supported) && query.iss !== oidc.metadata.issuer) {
        this.clearCookies(reply);
        throw new SignInError(400, `This sign-in response does not come from ${this.config.name} (issuer mismatch). Please start again.`);
      }
    }
    reply.clearCookie(this.#cookieNames.flow, this.#cookieOptions);
    // Also clears the state and verifier cookies: each sign-in response can be used once.
    const token = (await oauth.getAccessTokenFromAuthorizationCodeFlow(request, reply).catch((err: unknown) => {
      throw this.#tokenError(err);
    })) as unknown as { token: Record<string, unknown> };
    const accessToken = token.token.access_token;
    if (typeof accessToken !== 'string' || accessToken === '') {
      // GitHub answers a bad or used code with 200 and {"error": ...}.
      const error = typeof token.token.error === 'string' && /^[a-z_]{1,64}$/.test(token.token.error) ? token.token.error : 'no access token';
      throw new SignInError(400, `${this.config.name} refused the sign-in code (${error}): it was already used or has expired. Please start again.`);
    }
    const identity = oidc ? await this.#oidcIdentity(oidc, token.token, flow) : await this.#githubIdentity(accessToken);
    return { identity, next: flow.next };
  }

  clearCookies(reply: FastifyReply): void {
    for (const name of Object.values(this.#cookieNames)) reply.clearCookie(name, this.#cookieOptions);
  }

  async close(): Promise<void> {
    await this.#holder?.close();
  }

  #readFlow(request: FastifyRequest): Flow | null {
    const raw = request.cookies[this.#cookieNames.flow];
    if (!raw) return null;
    const unsigned = request.unsignCookie(raw);
    if (!unsigned.valid || !unsigned.value) return null;
    try {
      const flow = JSON.parse(Buffer.from(unsigned.value, 'base64url').toString()) as Partial<Flow>;
      if (typeof flow.state !== 'string' || typeof flow.next !== 'string') return null;
      return { state: flow.state, nonce: typeof flow.nonce === 'string' ? flow.nonce : null, next: flow.next };
    } catch {
      return null;
    }
  }

  /** The provider's client, discovering it on first use; a failure is not kept (the next sign-in tries again). */
  #discovered(): Promise<Ready> {
    if (!this.#ready) {
      this.#ready = this.#discover();
      this.#ready.catch(() => {
        this.#ready = null;
      });
    }
    return this.#ready;
  }

  async #discover(): Promise<Ready> {
    const { config } = this;
    let oidc: Ready['oidc'] = null;
    let auth: ReturnType<typeof endpoints>;
    let authorizationMethod: 'header' | 'body' = 'header';
    if (config.github) {
      auth = endpoints(`${config.github.url}/login/oauth/authorize`, `${config.github.url}/login/oauth/access_token`);
      authorizationMethod = 'body';
    } else {
      const metadata = await this.#fetchMetadata();
      auth = endpoints(metadata.authorization_endpoint, metadata.token_endpoint);
      const methods = metadata.token_endpoint_auth_methods_supported ?? ['client_secret_basic'];
      if (!methods.includes('client_secret_basic') && methods.includes('client_secret_post')) authorizationMethod = 'body';
      const algorithms = (metadata.id_token_signing_alg_values_supported ?? ['RS256']).filter((a) => ASYMMETRIC.test(a));
      if (algorithms.length === 0) throw this.#unavailable(`it signs id_tokens only with ${(metadata.id_token_signing_alg_values_supported ?? []).join(', ')}, which deskhub cannot verify with its published keys`);
      const jwks = createRemoteJWKSet(new URL(metadata.jwks_uri), { timeoutDuration: FETCH_TIMEOUT_MS, headers: { 'user-agent': USER_AGENT } });
      oidc = { metadata, jwks, algorithms };
    }
    const options: FastifyOAuth2Options = {
      name: 'signIn',
      credentials: {
        client: { id: config.clientId, secret: config.clientSecret },
        auth,
        options: { authorizationMethod },
        http: { timeout: FETCH_TIMEOUT_MS },
      },
      callbackUri: this.callbackUrl,
      scope: config.scopes,
      pkce: 'S256',
      cookie: this.#cookieOptions,
      redirectStateCookieName: this.#cookieNames.state,
      verifierCookieName: this.#cookieNames.verifier,
      userAgent: USER_AGENT,
    };
    const holder = Fastify({ logger: false });
    try {
      await holder.register(fastifyOauth2, options);
      await holder.ready();
    } catch (err) {
      await holder.close().catch(() => {});
      throw this.#unavailable(`its client could not be set up (${(err as Error).message})`);
    }
    this.#holder = holder;
    const oauth = (holder as unknown as { signIn: OAuth2Namespace }).signIn;
    return { oauth, holder, oidc };
  }

  async #fetchMetadata(): Promise<OidcMetadata> {
    const issuer = this.config.issuer!;
    const url = `${issuer}/.well-known/openid-configuration`;
    const body = (await this.#getJson(url, {}, 'its discovery document')) as Partial<OidcMetadata>;
    if (typeof body.issuer !== 'string' || body.issuer.replace(/\/+$/, '') !== issuer) {
      throw this.#unavailable(`its discovery document names issuer "${String(body.issuer)}", not the configured ${issuer}`);
    }
    for (const field of ['authorization_endpoint', 'token_endpoint', 'jwks_uri'] as const) {
      const value = body[field];
      if (typeof value !== 'string' || !isEndpoint(value, issuer)) throw this.#unavailable(`its discovery document has no usable ${field}`);
    }
    if (body.userinfo_endpoint !== undefined && (typeof body.userinfo_endpoint !== 'string' || !isEndpoint(body.userinfo_endpoint, issuer))) delete body.userinfo_endpoint;
    return body as OidcMetadata;
  }

  async #oidcIdentity(oidc: NonNullable<Ready['oidc']>, token: Record<string, unknown>, flow: Flow): Promise<ProviderIdentity> {
    const idToken = token.id_token;
    if (typeof idToken !== 'string') throw new SignInError(502, `${this.config.name} sent no id_token (is the "openid" scope allowed for deskhub's client?).`);
    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(idToken, oidc.jwks, {
        issuer: oidc.metadata.issuer,
        audience: this.config.clientId,
        algorithms: oidc.algorithms,
        requiredClaims: ['sub', 'exp', 'iat'],
        clockTolerance: 60,
      }));
    } catch (err) {
      if (err instanceof joseErrors.JWKSTimeout || !(err instanceof joseErrors.JOSEError)) throw this.#unavailable(`its signing keys could not be fetched (${(err as Error).message})`);
      throw new SignInError(401, `The sign-in from ${this.config.name} could not be verified (${err.code}: ${err.message}). Please start again.`);
    }
    if (claims.nonce !== flow.nonce) throw new SignInError(401, `The sign-in from ${this.config.name} does not belong to this sign-in attempt (nonce mismatch). Please start again.`);
    // With several audiences, the authorized party must be deskhub (OpenID Connect Core 3.1.3.7).
    if (Array.isArray(claims.aud) && claims.aud.length > 1 && claims.azp !== this.config.clientId) {
      throw new SignInError(401, `The sign-in from ${this.config.name} was issued to another client (azp). Please start again.`);
    }
    let all: Record<string, unknown> = { ...claims };
    const endpoint = oidc.metadata.userinfo_endpoint;
    const missing = nameCandidates(all).length === 0 || (this.#adminClaim !== undefined && !(this.#adminClaim.path[0]! in all));
    if (endpoint && missing && typeof token.access_token === 'string') {
      // Some providers keep profile (or group) claims at the userinfo endpoint only.
      const info = (await this.#getJson(endpoint, { authorization: `Bearer ${token.access_token}` }, 'its userinfo endpoint')) as Record<string, unknown>;
      if (info.sub === claims.sub) all = { ...info, ...claims };
    }
    return { subject: claims.sub!, names: nameCandidates(all), displayName: typeof all.name === 'string' ? all.name : null, claims: all };
  }

  async #githubIdentity(accessToken: string): Promise<ProviderIdentity> {
    const user = (await this.#getJson(`${this.config.github!.apiUrl}/user`, { authorization: `Bearer ${accessToken}`, accept: 'application/vnd.github+json' }, 'its user API')) as Record<string, unknown>;
    if ((typeof user.id !== 'number' && typeof user.id !== 'string') || typeof user.login !== 'string') {
      throw this.#unavailable('its user API answered without an id and a login');
    }
    return { subject: String(user.id), names: nameCandidates(user), displayName: typeof user.name === 'string' ? user.name : null, claims: user };
  }

  async #getJson(url: string, headers: Record<string, string>, what: string): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(url, { headers: { accept: 'application/json', 'user-agent': USER_AGENT, ...headers }, signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    } catch (err) {
      const { cause } = err as { cause?: { code?: string; message?: string } };
      const reason = (err as Error).name === 'TimeoutError' ? `no answer in ${FETCH_TIMEOUT_MS / 1000} s` : (cause?.code ?? cause?.message ?? (err as Error).message);
      throw this.#unavailable(`${what} at ${new URL(url).origin} cannot be reached (${reason})`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw this.#unavailable(`${what} answered HTTP ${res.status}`);
    }
    try {
      const body: unknown = await res.json();
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('not a JSON object');
      return body;
    } catch {
      throw this.#unavailable(`${what} did not answer a JSON object`);
    }
  }

  #tokenError(err: unknown): SignInError {
    if (err instanceof Error && err.message === 'Invalid state') {
      return new SignInError(400, `This sign-in with ${this.config.name} was not started in this browser, was already used, or has expired (the state does not match). Please start again.`);
    }
    const boom = err as { isBoom?: boolean; data?: { isResponseError?: boolean; payload?: unknown }; output?: { statusCode?: number }; message?: string };
    if (boom.isBoom && boom.data?.isResponseError && (boom.output?.statusCode ?? 500) < 500) {
      const payload = boom.data.payload as { error?: unknown } | undefined;
      const error = typeof payload?.error === 'string' && /^[a-z_]{1,64}$/.test(payload.error) ? payload.error : `HTTP ${boom.output?.statusCode}`;
      if (error === 'invalid_client' || error === 'unauthorized_client') return this.#unavailable(`it does not accept deskhub's client id and secret (${error})`);
      return new SignInError(400, `${this.config.name} refused the sign-in code (${error}): it was already used or has expired. Please start again.`);
    }
    return this.#unavailable(`its token endpoint failed (${boom.message ?? 'unknown error'})`);
  }

  #unavailable(why: string): SignInError {
    return new SignInError(502, `Sign-in provider "${this.config.id}" (${this.config.name}) is not available: ${why}. Please try again later.`);
  }
}

export interface CallbackQuery {
  code?: string;
  state?: string;
  iss?: string;
  error?: string;
  error_description?: string;
}

/** preferred_username, login, then the email's local part, in that order. */
function nameCandidates(claims: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const key of ['preferred_username', 'login']) {
    const v = claims[key];
    if (typeof v === 'string' && v.trim()) out.push(v.trim());
  }
  const email = claims.email;
  if (typeof email === 'string' && email.includes('@')) out.push(email.slice(0, email.lastIndexOf('@')));
  return out;
}

/** An endpoint the metadata names: a URL, https unless the issuer itself is plain http (loopback). */
function isEndpoint(value: string, issuer: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'https:' || (url.protocol === 'http:' && issuer.startsWith('http:'));
  } catch {
    return false;
  }
}

/** @fastify/oauth2 wants each endpoint as host + path. */
function endpoints(authorize: string, token: string): { authorizeHost: string; authorizePath: string; tokenHost: string; tokenPath: string } {
  const a = new URL(authorize);
  const t = new URL(token);
  return { authorizeHost: a.origin, authorizePath: a.pathname, tokenHost: t.origin, tokenPath: t.pathname };
}
