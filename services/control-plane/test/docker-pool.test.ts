// The warm pool on a real Docker Engine with the kasm-test image, through the whole of deskhub
// in this process (control plane + proxy + route stream, real Postgres): a member is a running
// container with no route; a create claims it and is reachable through the proxy without any
// container being created or started after the claim (asserted on its events); a killed member
// is replaced by a new container.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { catalogYaml, shippedType } from './catalog-fixtures.ts';
import { buildImage, startDockerDeskhub } from './docker-helpers.ts';
import { waitFor } from './helpers.ts';

await buildImage('kasm-test');
const catalogDir = mkdtempSync(join(tmpdir(), 'deskhub-docker-pool-catalog-'));
t.teardown(() => rmSync(catalogDir, { recursive: true, force: true }));
const catalog = join(catalogDir, 'catalog.yaml');
writeFileSync(catalog, catalogYaml([shippedType('kasm-test', { pool: { size: 1 } })]));
const { runtime, base, signIn, api } = await startDockerDeskhub(t, 'docker-pool', { CATALOG: catalog, POOL_INTERVAL_MS: '500', ADMIN_USERS: 'root' });
interface View { id: string; state: string; pool: boolean; proxyPath: string; url: string; reason: string | null }
const root = await signIn('root');
const readyMember = (not?: string) =>
  waitFor('a ready pool member', async () => {
    const members = (await api<View[]>(root, 'GET', '/api/admin/desktops')).body.filter((d) => d.pool);
    return members.length === 1 && members[0]!.state === 'running' && members[0]!.id !== not ? members[0]! : undefined;
  }, 120_000, 250);

t.test('a member is a running container without a route; a create claims it without starting anything', async (t) => {
  const member = await readyMember();
  const [container] = (await runtime.list()).filter((s) => s.desktopId === member.id);
  t.ok(container?.running, 'the member is a running container');
  const unrouted = await fetch(`${base}/desktop/${member.proxyPath}/`, { headers: { cookie: root, accept: 'application/json' } });
  t.equal(unrouted.status, 404, 'and has no route at the proxy');

  const alice = await signIn('alice');
  const created = await api<View>(alice, 'POST', '/api/desktops', { type: 'kasm-test' });
  t.equal(created.status, 201);
  t.equal(created.body.id, member.id, 'the create got the ready member');
  const running = await waitFor('the claimed desktop to run', async () => {
    const d = (await api<View>(alice, 'GET', `/api/desktops/${member.id}`)).body;
    return d.state === 'running' || d.state === 'failed' ? d : undefined;
  }, 30_000, 100);
  t.equal(running.state, 'running', running.reason ?? '');
  const events = (await api<Array<{ kind: string; message: string }>>(alice, 'GET', `/api/desktops/${member.id}/events`)).body;
  const claimAt = events.findIndex((e) => e.message.startsWith('Claimed a ready Kasm test desktop from the warm pool'));
  t.equal(claimAt, 0, "the owner's history starts at the claim: nothing of the pool's is shown");
  t.same(events.slice(claimAt + 1).filter((e) => ['pull', 'create', 'start', 'probe'].includes(e.kind)).map((e) => e.kind), [], 'no pull, create, start or probe after the claim');
  const page = await fetch(running.url, { headers: { cookie: alice } });
  t.equal(page.status, 200, 'the desktop answers its owner through the proxy');
  t.match(await page.text(), /Demo desktop/);
  const other = await fetch(running.url, { headers: { cookie: await signIn('bob'), accept: 'application/json' } });
  t.equal(other.status, 403, 'and nobody else');

  const next = await readyMember(member.id);
  t.not(next.id, member.id, 'the pool refilled with a new member');
  t.equal((await api(alice, 'DELETE', `/api/desktops/${member.id}`)).status, 204);
});

t.test('a killed member is replaced by a new container', async (t) => {
  const member = await readyMember();
  const [container] = (await runtime.list()).filter((s) => s.desktopId === member.id);
  await runtime.docker.getContainer(container!.runtimeId).kill();
  const replacement = await readyMember(member.id);
  t.not(replacement.id, member.id, 'a new member is ready');
  await waitFor('the killed member to be removed', async () => ((await runtime.list()).some((s) => s.desktopId === member.id) ? undefined : true), 30_000, 250);
  t.pass('its container is gone');
});
