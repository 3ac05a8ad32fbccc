/**
 * API tokens for automation, on embedded PGlite and a real Postgres, over real HTTP (fetch, as
 * curl would): created once by a signed-in session and shown once, used as `Authorization:
 * Bearer`, each scope allowed and refused, listed without the secret, revoked, expired, unknown,
 * another user's id, no token minting tokens, the admin scope only for admins and only while they
 * are admins, CSRF not in a token's way, the token text never in the logs, only its hash stored.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import t from 'tap';
import pino from 'pino';
import { eq } from 'drizzle-orm';
import type { FastifyInstance } from 'fastify';
import { loggerOptions } from '@deskhub/config';
import { createRouteStream, type RouteStream } from '@deskhub/route-stream';
import { buildApp } from '../src/app.ts';
import { loadControlPlaneConfig } from '../src/config.ts';
import { apiTokens } from '../src/db/schema.ts';
import type { ApiTokenView } from '../src/api-tokens.ts';
import { databases, signIn, tempDir, testEnv, testProcesses, waitFor, type DesktopJson } from './helpers.ts';

type TokenJson = ApiTokenView & { token?: string };

interface Answer {
  status: number;
  body: any;
  headers: Headers;
}

/** Every log line the apps of one database wrote (pino JSON, at debug level so requests are in it). */
class LogCapture extends Writable {
  lines: string[] = [];
  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    done();
  }
}

interface Listening {
  app: FastifyInstance;
  base: string;
  close(): Promise<void>;
}

async function listen(env: NodeJS.ProcessEnv, logs: LogCapture): Promise<Listening> {
  const logger = pino(loggerOptions('control-plane', 'debug'), logs);
  const stream: RouteStream = createRouteStream({ logger: logger.child({ component: 'route-stream' }) });
  const app = await buildApp({ config: loadControlPlaneConfig(env), routeStream: stream, env, logger });
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    app,
    base: address,
    async close() {
      await app.close();
      await stream.close();
    },
  };
}

for (const choice of databases) {
  t.test(`API tokens on ${choice.name}`, async (t) => {
    const { dir, cleanup } = tempDir(`tokens-${choice.name}`);
    const db = await choice.setup();
    const logs = new LogCapture();
    const env = testEnv(dir, { ...db.env, ADMIN_USERS: 'root' });
    let running = await listen(env, logs);
    t.teardown(async () => {
      await running.close();
      await db.cleanup();
      for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
      cleanup();
    });
    /** Every token text handed out, to look for in the logs and the database at the end. */
    const issued: string[] = [];

    async function call(method: string, path: string, options: { bearer?: string; cookie?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer> {
      const headers: Record<string, string> = { ...options.headers };
      if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
      if (options.cookie) headers.cookie = options.cookie;
      if (options.body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(`${running.base}${path}`, { method, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
    }

    async function mint(cookie: string, body: { name: string; scopes: string[]; expiresInDays?: number }): Promise<TokenJson & { token: string }> {
      const res = await call('POST', '/api/tokens', { cookie, body });
      if (res.status !== 201) throw new Error(`POST /api/tokens: ${res.status} ${JSON.stringify(res.body)}`);
      issued.push(res.body.token);
      return res.body;
    }

    const alice = await signIn(running.app, 'alice');
    const bob = await signIn(running.app, 'bob');
    let root = await signIn(running.app, 'root');

    t.test('a session creates a token: shown once, recognisable, with what was asked', async (t) => {
      const res = await call('POST', '/api/tokens', { cookie: alice, body: { name: '  nightly backup ', scopes: ['desktops:read'] } });
      t.equal(res.status, 201);
      issued.push(res.body.token);
      t.match(res.body.token, /^dhk_[A-Za-z0-9_-]{43}$/, 'dhk_ and 32 random bytes, base64url');
      t.equal(res.body.name, 'nightly backup');
      t.same(res.body.scopes, ['desktops:read']);
      t.equal(res.body.expiresAt, null, 'no expiry unless asked');
      t.equal(res.body.lastUsedAt, null);
      t.equal(res.headers.get('cache-control'), 'no-store', 'the answer with the secret is not cached');
      const me = await call('GET', '/api/me', { bearer: res.body.token });
      t.equal(me.status, 200);
      t.equal(me.body.username, 'alice', 'the token acts as its user');

      const expiring = await mint(alice, { name: 'a week', scopes: ['desktops:read', 'desktops:write'], expiresInDays: 7 });
      const days = (Date.parse(expiring.expiresAt!) - Date.now()) / 86_400_000;
      t.ok(days > 6.9 && days <= 7, `expires in 7 days (${days.toFixed(3)})`);
      t.same(expiring.scopes, ['desktops:read', 'desktops:write']);
    });

    t.test('bad requests to create a token are refused with a message', async (t) => {
      const bad = async (body: unknown, status: number, message: RegExp, cookie = alice) => {
        const res = await call('POST', '/api/tokens', { cookie, body });
        t.equal(res.status, status, JSON.stringify(body));
        t.match(res.body.message, message);
        t.same(Object.keys(res.body).sort(), ['error', 'message', 'statusCode']);
      };
      await bad({ name: 'x', scopes: ['desktops:read', 'desktops:everything'] }, 400, /unknown scope "desktops:everything"/);
      await bad({ name: 'x', scopes: [] }, 400, /scopes/);
      await bad({ name: '   ', scopes: ['desktops:read'] }, 400, /name must not be empty/);
      await bad({ scopes: ['desktops:read'] }, 400, /name/);
      await bad({ name: 'x', scopes: ['desktops:read'], expiresInDays: 0 }, 400, /expiresInDays/);
      await bad({ name: 'x', scopes: ['admin'] }, 403, /only admins can grant the admin scope/);
      const signedOut = await call('POST', '/api/tokens', { body: { name: 'x', scopes: ['desktops:read'] } });
      t.equal(signedOut.status, 401, 'no session, no token');
    });

    t.test('each scope allows its routes and nothing else; 403 names the missing scope', async (t) => {
      const read = await mint(alice, { name: 'read', scopes: ['desktops:read'] });
      const write = await mint(alice, { name: 'write', scopes: ['desktops:write'] });
      const both = await mint(alice, { name: 'both', scopes: ['desktops:write', 'desktops:read'] });

      for (const path of ['/api/me', '/api/catalog', '/api/desktops']) {
        t.equal((await call('GET', path, { bearer: read.token })).status, 200, `desktops:read: GET ${path}`);
        const refused = await call('GET', path, { bearer: write.token });
        t.equal(refused.status, 403, `desktops:write alone: GET ${path}`);
        t.match(refused.body.message, /lacks the desktops:read scope/);
      }
      const createRead = await call('POST', '/api/desktops', { bearer: read.token, body: { type: 'web' } });
      t.equal(createRead.status, 403, 'desktops:read cannot create');
      t.match(createRead.body.message, /lacks the desktops:write scope/);

      // A script's whole lifecycle: create, follow, stop, start, delete.
      const created = await call('POST', '/api/desktops', { bearer: write.token, body: { type: 'web', name: 'scripted' } });
      t.equal(created.status, 201, 'desktops:write creates');
      const id = (created.body as DesktopJson).id;
      t.equal(created.body.owner, 'alice');
      const running = await waitFor('the scripted desktop to run', async () => {
        const res = await call('GET', `/api/desktops/${id}`, { bearer: both.token });
        return res.body.state === 'running' || res.body.state === 'failed' ? (res.body as DesktopJson) : undefined;
      });
      t.equal(running.state, 'running', running.reason ?? '');
      const events = await call('GET', `/api/desktops/${id}/events`, { bearer: read.token });
      t.equal(events.status, 200, 'desktops:read reads events');
      t.ok(events.body.length > 0);
      t.equal((await call('POST', `/api/desktops/${id}/stop`, { bearer: read.token, body: {} })).status, 403, 'desktops:read cannot stop');
      t.equal((await call('POST', `/api/desktops/${id}/stop`, { bearer: write.token, body: {} })).status, 200, 'desktops:write stops');
      await waitFor('the desktop to stop', async () => ((await call('GET', `/api/desktops/${id}`, { bearer: read.token })).body.state === 'stopped' ? true : undefined));
      t.equal((await call('POST', `/api/desktops/${id}/start`, { bearer: write.token, body: {} })).status, 200, 'desktops:write starts');
      t.equal((await call('DELETE', `/api/desktops/${id}`, { bearer: read.token })).status, 403, 'desktops:read cannot delete');
      t.equal((await call('DELETE', `/api/desktops/${id}`, { bearer: write.token })).status, 204, 'desktops:write deletes');
      t.equal((await call('GET', `/api/desktops/${id}`, { bearer: read.token })).status, 404);

      const admin = await call('GET', '/api/admin/desktops', { bearer: both.token });
      t.equal(admin.status, 403, 'no desktops scope reaches the admin API');
      t.match(admin.body.message, /lacks the admin scope/);

      // Another user's desktops stay invisible to a token as to a session.
      const bobs = await call('POST', '/api/desktops', { cookie: bob, body: { type: 'web', name: 'private' } });
      t.equal(bobs.status, 201);
      t.equal((await call('GET', `/api/desktops/${bobs.body.id}`, { bearer: read.token })).status, 404, "bob's desktop is 404 to alice's token");
      t.equal((await call('DELETE', `/api/desktops/${bobs.body.id}`, { bearer: write.token })).status, 404);
      t.equal((await call('DELETE', `/api/desktops/${bobs.body.id}`, { cookie: bob })).status, 204);
    });

    t.test('a token carries no ambient credential: CSRF does not stand in its way, and a cookie beside it is ignored', async (t) => {
      const write = await mint(alice, { name: 'from a page', scopes: ['desktops:write', 'desktops:read'] });
      const crossSite = { origin: 'https://elsewhere.example', 'sec-fetch-site': 'cross-site' };
      const byToken = await call('POST', '/api/desktops', { bearer: write.token, body: { type: 'web', name: 'csrf' }, headers: crossSite });
      t.equal(byToken.status, 201, 'a bearer request passes the cross-site check');
      const byCookie = await call('POST', '/api/desktops', { cookie: alice, body: { type: 'web', name: 'csrf2' }, headers: crossSite });
      t.equal(byCookie.status, 403, 'the same request with the session cookie is still refused');
      t.match(byCookie.body.message, /cross-site request refused/);
      t.equal((await call('DELETE', `/api/desktops/${byToken.body.id}`, { bearer: write.token, headers: crossSite })).status, 204);

      const withBoth = await call('GET', '/api/me', { bearer: 'dhk_' + randomBytes(32).toString('base64url'), cookie: alice });
      t.equal(withBoth.status, 401, 'a bad token is not rescued by a valid session cookie');
      const basic = await call('GET', '/api/me', { cookie: alice, headers: { authorization: 'Basic YWxpY2U6eA==' } });
      t.equal(basic.status, 401);
      t.match(basic.body.message, /Authorization header must be "Bearer <API token>"/);
    });

    t.test('a token cannot manage tokens (a signed-in session can)', async (t) => {
      const read = await mint(alice, { name: 'reader', scopes: ['desktops:read', 'desktops:write'] });
      const tries: Array<[string, string, unknown?]> = [
        ['POST', '/api/tokens', { name: 'child', scopes: ['desktops:read'] }],
        ['GET', '/api/tokens'],
        ['DELETE', `/api/tokens/${read.id}`],
        ['GET', '/api/me/session'],
      ];
      for (const [method, path, body] of tries) {
        const res = await call(method, path, { bearer: read.token, ...(body ? { body } : {}) });
        t.equal(res.status, 403, `${method} ${path} with a token`);
        t.match(res.body.message, /needs a signed-in session; API tokens cannot use it/);
      }
      t.equal((await call('GET', '/api/me', { bearer: read.token })).status, 200, 'the token was not revoked by its own attempt');
      const session = await call('GET', '/api/me/session', { cookie: alice });
      t.equal(session.status, 200);
      t.equal(session.body.accessLifetimeSeconds, 300, 'the UI learns the access cookie lifetime');
      t.ok(Date.parse(session.body.expiresAt) > Date.now());
    });

    t.test('the list shows tokens without their secret; last use is recorded, at most once a minute', async (t) => {
      const used = await mint(alice, { name: 'listed', scopes: ['desktops:read'] });
      t.equal((await call('GET', '/api/desktops', { bearer: used.token })).status, 200);
      const first = await call('GET', '/api/tokens', { cookie: alice });
      t.equal(first.status, 200);
      const text = JSON.stringify(first.body);
      for (const token of issued) t.notOk(text.includes(token), 'no token text in the list');
      t.notOk(text.includes(createHash('sha256').update(used.token).digest('hex')), 'nor its hash');
      const listed = (first.body as TokenJson[]).find((x) => x.id === used.id);
      t.ok(listed, 'the new token is listed');
      t.same(Object.keys(listed!).sort(), ['createdAt', 'expiresAt', 'id', 'lastUsedAt', 'name', 'scopes']);
      t.ok(listed!.lastUsedAt, 'its last use is recorded');
      t.equal((first.body as TokenJson[])[0]!.id, used.id, 'newest first');
      t.equal((await call('GET', '/api/desktops', { bearer: used.token })).status, 200);
      const again = (await call('GET', '/api/tokens', { cookie: alice })).body as TokenJson[];
      t.equal(again.find((x) => x.id === used.id)!.lastUsedAt, listed!.lastUsedAt, 'a second use within the minute writes nothing');
      const bobs = (await call('GET', '/api/tokens', { cookie: bob })).body as TokenJson[];
      t.notOk(bobs.some((x) => x.id === used.id), "alice's tokens are not in bob's list");
    });

    t.test("revoke: 401 afterwards; another user's token is 404 to you", async (t) => {
      const mine = await mint(alice, { name: 'to revoke', scopes: ['desktops:read'] });
      const bobs = await mint(bob, { name: 'bob', scopes: ['desktops:read'] });
      const foreign = await call('DELETE', `/api/tokens/${bobs.id}`, { cookie: alice });
      t.equal(foreign.status, 404, "alice cannot revoke bob's token");
      t.equal((await call('GET', '/api/me', { bearer: bobs.token })).status, 200, "bob's token still works");
      t.equal((await call('DELETE', '/api/tokens/not-a-uuid', { cookie: alice })).status, 404);

      t.equal((await call('GET', '/api/me', { bearer: mine.token })).status, 200);
      const revoked = await call('DELETE', `/api/tokens/${mine.id}`, { cookie: alice });
      t.equal(revoked.status, 204);
      const after = await call('GET', '/api/me', { bearer: mine.token });
      t.equal(after.status, 401, 'a revoked token is refused at once');
      t.match(after.body.message, /revoked/);
      t.equal((await call('DELETE', `/api/tokens/${mine.id}`, { cookie: alice })).status, 404, 'revoking twice: it is gone');
      const list = (await call('GET', '/api/tokens', { cookie: alice })).body as TokenJson[];
      t.notOk(list.some((x) => x.id === mine.id), 'no longer listed');
    });

    t.test('expired and unknown tokens get 401 with a clear message', async (t) => {
      const soon = await mint(alice, { name: 'short', scopes: ['desktops:read'], expiresInDays: 1 });
      t.equal((await call('GET', '/api/me', { bearer: soon.token })).status, 200);
      // A day is long for a test: move its expiry into the past, as time would.
      await running.app.db.update(apiTokens).set({ expiresAt: new Date(Date.now() - 1000) }).where(eq(apiTokens.id, soon.id));
      const expired = await call('GET', '/api/me', { bearer: soon.token });
      t.equal(expired.status, 401);
      t.match(expired.body.message, /this API token expired at \d{4}-/);
      const listed = ((await call('GET', '/api/tokens', { cookie: alice })).body as TokenJson[]).find((x) => x.id === soon.id);
      t.ok(listed, 'an expired token stays listed until revoked, so it can be seen and cleaned up');

      const unknown = await call('GET', '/api/me', { bearer: 'dhk_' + randomBytes(32).toString('base64url') });
      t.equal(unknown.status, 401);
      t.match(unknown.body.message, /unknown API token/);
      const foreign = await call('GET', '/api/me', { bearer: 'ghp_notours' });
      t.equal(foreign.status, 401);
      t.match(foreign.body.message, /not a deskhub API token/);
      const empty = await call('GET', '/api/me', { headers: { authorization: 'Bearer' } });
      t.equal(empty.status, 401);
      // A token is checked whole: one character changed is unknown.
      const last = soon.token.at(-1) === 'A' ? 'B' : 'A';
      t.equal((await call('GET', '/api/me', { bearer: soon.token.slice(0, -1) + last })).status, 401);
    });

    t.test('the admin scope: only admins grant it, and it works only while the user is an admin', async (t) => {
      const adminToken = await mint(root, { name: 'ops', scopes: ['admin'] });
      const readOnly = await mint(root, { name: 'ops-read', scopes: ['desktops:read'] });
      const all = await call('GET', '/api/admin/desktops', { bearer: adminToken.token });
      t.equal(all.status, 200, 'an admin token reaches the admin API');
      t.ok(Array.isArray(all.body));
      const refused = await call('GET', '/api/admin/desktops', { bearer: readOnly.token });
      t.equal(refused.status, 403, "an admin's token without the admin scope does not");
      t.match(refused.body.message, /lacks the admin scope/);
      t.equal((await call('GET', '/api/desktops', { bearer: adminToken.token })).status, 403, 'admin does not include desktops:read');

      // The same database, restarted with root no longer in ADMIN_USERS: the role goes at the
      // restart (not at root's next sign-in, which may never come), and the admin token with it.
      await running.close();
      running = await listen({ ...env, ADMIN_USERS: 'someone-else' }, logs);
      const demoted = await call('GET', '/api/admin/desktops', { bearer: adminToken.token });
      t.equal(demoted.status, 403, "the admin token stops working with its user's role, before any sign-in");
      t.match(demoted.body.message, /does not have the admin role/);
      root = await signIn(running.app, 'root');
      const me = await call('GET', '/api/me', { cookie: root });
      t.same(me.body.roles, [], 'root is no longer an admin');
      const regrant = await call('POST', '/api/tokens', { cookie: root, body: { name: 'again', scopes: ['admin'] } });
      t.equal(regrant.status, 403, 'nor can root grant the admin scope any more');
    });

    t.test('the OpenAPI document describes the token routes, the bearer scheme and each route\'s scope', async (t) => {
      const doc = await call('GET', '/api/openapi.json');
      const paths = Object.keys(doc.body.paths);
      for (const p of ['/api/tokens', '/api/tokens/{id}', '/api/me/session']) t.ok(paths.includes(p), `documents ${p}`);
      t.same(doc.body.components.securitySchemes.bearer, { type: 'http', scheme: 'bearer', bearerFormat: 'dhk_… API token' }, 'the bearer scheme');
      const op = (path: string, method: string) => doc.body.paths[path][method];
      t.same(op('/api/desktops', 'post').security, [{ session: [] }, { bearer: ['desktops:write'] }], 'a route names the scope a token needs');
      t.match(op('/api/desktops', 'get').description, /API tokens need the desktops:read scope/);
      t.same(op('/api/admin/desktops', 'get').security, [{ session: [] }, { bearer: ['admin'] }]);
      t.same(op('/api/tokens', 'post').security, [{ session: [] }], 'token management: sessions only');
      t.match(op('/api/tokens', 'post').description, /Signed-in sessions only/);
    });

    t.test('the token text is never logged, and the database holds only its hash', async (t) => {
      t.ok(issued.length >= 10, `${issued.length} tokens were issued and used`);
      t.ok(logs.lines.some((l) => l.includes('API token created')), 'the logs were captured (creations are logged)');
      t.ok(logs.lines.some((l) => l.includes('/api/me')), 'requests are in the logs');
      const leaks = logs.lines.filter((line) => issued.some((token) => line.includes(token) || line.includes(token.slice(4))));
      t.same(leaks, [], `no token text in ${logs.lines.length} log lines`);

      const rows = await running.app.db.select().from(apiTokens);
      const stored = JSON.stringify(rows);
      for (const token of issued) {
        t.notOk(stored.includes(token.slice(4)), 'the token text is not in the database');
        const hash = createHash('sha256').update(token).digest('hex');
        t.ok(rows.some((r) => r.hash === hash), 'its SHA-256 is');
      }
    });
  });
}
