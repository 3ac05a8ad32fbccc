/**
 * Hostile credentials and origins against the access hook deskhub runs (src/access.ts), kept as
 * data (test/hostile-access/*.json) and run on real sockets: a real proxy in front of the demo
 * desktop, tokens from a real signer. Every case is answered (401, 403, or through for the owner),
 * never a 5xx or a hang, and nothing but the owner's requests reaches the desktop.
 *
 * A case: name; kind (http | upgrade); token, one of owner, other-user, tampered, expired,
 * other-key, truncated, garbage, empty, none, wrong-cookie-name, owner-after-bad (a bad cookie
 * first, the owner's second), bad-after-owner; origin (upgrades: public, lookalike, scheme, port,
 * null, none, case); then status (200 for HTTP through, 101 for an upgrade through).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import WebSocket from 'ws';
import { createSigner, generateKeyPair, toPublicKey } from '@deskhub/access-token';
import { startDemoDesktop } from '@deskhub/demo-desktop';
import { createAccessControl } from '../src/access.ts';
import { KASM_AUTH, KASM_PASSWORD, makeRoute, send, startStack } from './helpers.ts';

interface Case {
  name: string;
  kind: 'http' | 'upgrade';
  token: string;
  origin?: string;
  status: number;
}

const PUBLIC_URL = 'https://desk.example.test';
const keys = generateKeyPair();
const signer = createSigner({ privateKey: keys.privateKeyPem, lifetimeMs: 60_000 });
const otherSigner = createSigner({ privateKey: generateKeyPair().privateKeyPem, lifetimeMs: 60_000 });
const sign = (userId: string, now?: number, by = signer) => by.sign({ userId, username: userId, sessionId: `session-${userId}` }, now).token;

const owner = sign('user-ann');
const [p0, p1, p2, p3] = owner.split('.');
const claims = JSON.parse(Buffer.from(p2!, 'base64url').toString()) as Record<string, unknown>;
const tokens: Record<string, string | undefined> = {
  owner: `deskhub_access=${owner}`,
  'other-user': `deskhub_access=${sign('user-bob')}`,
  tampered: `deskhub_access=${[p0, p1, Buffer.from(JSON.stringify({ ...claims, userId: 'user-ann', sessionId: 'forged' })).toString('base64url'), p3].join('.')}`,
  expired: `deskhub_access=${sign('user-ann', Date.now() - 120_000)}`,
  'other-key': `deskhub_access=${sign('user-ann', undefined, otherSigner)}`,
  truncated: `deskhub_access=${owner.slice(0, owner.length - 20)}`,
  garbage: 'deskhub_access=%%%not-a-token%%%',
  empty: 'deskhub_access=',
  none: undefined,
  'wrong-cookie-name': `deskhub_acces=${owner}`,
  'owner-after-bad': `deskhub_access=garbage; deskhub_access=${owner}`,
  'bad-after-owner': `deskhub_access=${owner}; deskhub_access=garbage`,
};
const origins: Record<string, string | undefined> = {
  public: PUBLIC_URL,
  lookalike: 'https://desk.example.test.evil.example',
  scheme: 'http://desk.example.test',
  port: 'https://desk.example.test:8443',
  null: 'null',
  none: undefined,
  case: 'https://DESK.example.test',
};

const dir = path.join(import.meta.dirname, 'hostile-access');
const cases: Case[] = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .flatMap((f) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as Case[]);

t.test('hostile credentials and origins: each answered, only the owner through', async (t) => {
  const desktop = await startDemoDesktop({ name: 'ann-kasm', tls: true, password: KASM_PASSWORD });
  t.teardown(() => desktop.close());
  const access = createAccessControl({ publicKeys: [toPublicKey(keys.publicKeyPem)], publicUrl: PUBLIC_URL });
  const { proxy } = await startStack(t, [makeRoute('ann', desktop.url, { owner: 'user-ann', authorization: KASM_AUTH })], { authorize: access.authorize, authMode: 'oidc', publicUrl: PUBLIC_URL });

  for (const c of cases) {
    if (!(c.token in tokens)) throw new Error(`${c.name}: unknown token kind ${c.token}`);
    const cookie = tokens[c.token];
    if (c.kind === 'http') {
      const res = await send(`${proxy.url}/desktop/ann/`, { headers: { accept: 'application/json', ...(cookie ? { cookie } : {}) } });
      t.equal(res.status, c.status, c.name, { body: res.text.slice(0, 200) });
      if (res.status >= 400) t.match(JSON.parse(res.text), { statusCode: c.status, message: /\w/ }, `${c.name}: a message`);
      continue;
    }
    const origin = origins[c.origin ?? 'public'];
    if (c.origin !== undefined && !(c.origin in origins)) throw new Error(`${c.name}: unknown origin kind ${c.origin}`);
    const headers: Record<string, string> = { ...(cookie ? { cookie } : {}) };
    const ws = new WebSocket(`${proxy.url.replace(/^http/, 'ws')}/desktop/ann/websockify`, ['binary'], { headers, handshakeTimeout: 10_000, ...(origin !== undefined ? { origin } : {}) });
    const status = await new Promise<number>((resolve, reject) => {
      ws.once('open', () => resolve(101));
      ws.once('unexpected-response', (_req, res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      ws.once('error', reject);
    });
    ws.terminate();
    t.equal(status, c.status, c.name);
  }
});
