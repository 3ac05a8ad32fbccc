import t, { type Test } from 'tap';
import { createHash, createPublicKey, randomBytes, verify, type JsonWebKey } from 'node:crypto';
import { startOidcProvider, type OidcProvider } from '../src/oidc.ts';

const CALLBACK = 'http://127.0.0.1:9/auth/callback/test';
const client = { client_id: 'deskhub', client_secret: 'deskhub-secret', redirect_uris: [CALLBACK] };
const basicAuth = 'Basic ' + Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64');

interface Discovery {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  userinfo_endpoint: string;
  jwks_uri: string;
  code_challenge_methods_supported: string[];
  response_types_supported: string[];
}

let oidc: OidcProvider;
let discovery: Discovery;

t.before(async () => {
  oidc = await startOidcProvider({
    clients: [client],
    accounts: {
      'sub-alice': { email: 'alice@example.test', email_verified: true, preferred_username: 'alice', name: 'Alice Liddell' },
      'sub-bob': { email: 'bob@example.test', preferred_username: 'bob', name: 'Bob' },
    },
  });
  discovery = (await (await fetch(`${oidc.issuer}/.well-known/openid-configuration`)).json()) as Discovery;
});
t.teardown(() => oidc.close());

function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

function authorizationUrl(params: Record<string, string>): string {
  const url = new URL(discovery.authorization_endpoint);
  for (const [k, v] of Object.entries({ client_id: client.client_id, redirect_uri: CALLBACK, response_type: 'code', scope: 'openid email profile', ...params })) {
    url.searchParams.set(k, v);
  }
  return url.href;
}

async function redeem(code: string, codeVerifier: string) {
  const res = await fetch(discovery.token_endpoint, {
    method: 'POST',
    headers: { authorization: basicAuth, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: CALLBACK, code_verifier: codeVerifier }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Checks the id_token's RS256 signature against the provider's JWKS and returns its claims. */
async function verifiedClaims(t: Test, idToken: string): Promise<Record<string, unknown>> {
  const [header, payload, signature] = idToken.split('.') as [string, string, string];
  const { kid, alg } = JSON.parse(Buffer.from(header, 'base64url').toString()) as { kid: string; alg: string };
  t.equal(alg, 'RS256');
  const { keys } = (await (await fetch(discovery.jwks_uri)).json()) as { keys: Array<JsonWebKey & { kid: string }> };
  const jwk = keys.find((k) => k.kid === kid);
  if (jwk === undefined) throw new Error(`no key ${kid} in the JWKS`);
  t.equal(jwk.d, undefined, 'the JWKS publishes no private parts');
  const ok = verify('sha256', Buffer.from(`${header}.${payload}`), createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(signature, 'base64url'));
  t.ok(ok, 'id_token signature verifies with the published key');
  return JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
}

t.test('discovery document describes this provider, with PKCE S256', async (t) => {
  t.equal(discovery.issuer, oidc.issuer);
  t.match(oidc.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
  for (const endpoint of [discovery.authorization_endpoint, discovery.token_endpoint, discovery.userinfo_endpoint, discovery.jwks_uri]) {
    t.ok(endpoint.startsWith(`${oidc.issuer}/`), endpoint);
  }
  t.ok(discovery.code_challenge_methods_supported.includes('S256'));
  t.ok(discovery.response_types_supported.includes('code'));
});

t.test('authorization code + PKCE over plain HTTP: the id_token carries the account', async (t) => {
  const { verifier, challenge } = pkce();
  const state = randomBytes(16).toString('base64url');
  const nonce = randomBytes(16).toString('base64url');
  const callback = await oidc.completeLogin(authorizationUrl({ state, nonce, code_challenge: challenge, code_challenge_method: 'S256' }), 'sub-alice');
  t.equal(`${callback.origin}${callback.pathname}`, CALLBACK, 'ends at the client callback');
  t.equal(callback.searchParams.get('state'), state, 'state comes back unchanged');
  t.equal(callback.searchParams.get('iss'), oidc.issuer);
  const code = callback.searchParams.get('code');
  t.ok(code, 'a code');

  const tokens = await redeem(code!, verifier);
  t.equal(tokens.status, 200, JSON.stringify(tokens.body));
  t.equal(tokens.body.token_type, 'Bearer');
  const claims = await verifiedClaims(t, String(tokens.body.id_token));
  t.match(claims, {
    iss: oidc.issuer,
    aud: client.client_id,
    sub: 'sub-alice',
    nonce,
    email: 'alice@example.test',
    email_verified: true,
    preferred_username: 'alice',
    name: 'Alice Liddell',
  });

  const userinfo = await fetch(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${String(tokens.body.access_token)}` } });
  t.equal(userinfo.status, 200);
  t.match(await userinfo.json(), { sub: 'sub-alice', preferred_username: 'alice', email: 'alice@example.test' });

  const again = await redeem(code!, verifier);
  t.equal(again.status, 400, 'a code is good once');
  t.equal(again.body.error, 'invalid_grant');
});

t.test('each login gets its own account', async (t) => {
  const { verifier, challenge } = pkce();
  const callback = await oidc.completeLogin(authorizationUrl({ state: 's', code_challenge: challenge, code_challenge_method: 'S256' }), 'sub-bob');
  const tokens = await redeem(callback.searchParams.get('code')!, verifier);
  const claims = await verifiedClaims(t, String(tokens.body.id_token));
  t.match(claims, { sub: 'sub-bob', preferred_username: 'bob', email: 'bob@example.test' });
});

t.test('PKCE is enforced: no challenge, or the wrong verifier, gets no tokens', async (t) => {
  const noPkce = await oidc.completeLogin(authorizationUrl({ state: 'st' }), 'sub-alice');
  t.equal(noPkce.searchParams.get('error'), 'invalid_request', 'the client is told at its callback');
  t.equal(noPkce.searchParams.get('state'), 'st');
  t.equal(noPkce.searchParams.get('code'), null);

  const { challenge } = pkce();
  const callback = await oidc.completeLogin(authorizationUrl({ state: 's', code_challenge: challenge, code_challenge_method: 'S256' }), 'sub-alice');
  const wrong = await redeem(callback.searchParams.get('code')!, pkce().verifier);
  t.equal(wrong.status, 400);
  t.equal(wrong.body.error, 'invalid_grant');
});

t.test('refusals and mistakes', async (t) => {
  const { challenge } = pkce();
  const url = authorizationUrl({ state: 'st', code_challenge: challenge, code_challenge_method: 'S256' });
  const denied = await oidc.denyLogin(url);
  t.equal(`${denied.origin}${denied.pathname}`, CALLBACK);
  t.equal(denied.searchParams.get('error'), 'access_denied');
  t.equal(denied.searchParams.get('state'), 'st');

  await t.rejects(oidc.completeLogin(url, 'sub-nobody'), /answered 400 .*unknown_account/);
  const badRedirect = new URL(url);
  badRedirect.searchParams.set('redirect_uri', 'http://127.0.0.1:9/elsewhere');
  await t.rejects(oidc.completeLogin(badRedirect.href, 'sub-alice'), /answered 400 .*redirect_uri/, 'an unregistered callback is an error page, never a redirect');
  await t.rejects(oidc.completeLogin('http://127.0.0.1:9/authorize', 'sub-alice'), /is not this provider/);
});
