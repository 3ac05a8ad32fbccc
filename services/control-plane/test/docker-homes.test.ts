/**
 * Homes on a real Docker Engine (runtime/docker/docker-runtime.ts): a named volume per home,
 * labelled, mounted at the type's home path and writable by the image's user (uid 1000, as in
 * Kasm images) from its first use; files outlive the container; another home is another volume;
 * listed with sizes; removal refused while a container mounts it.
 */
import t from 'tap';
import { buildImage, execIn, kasmTestType, specFor, testRuntime } from './docker-helpers.ts';

await buildImage('kasm-test');
const { runtime, cleanup } = testRuntime();
t.teardown(cleanup);

const type = kasmTestType({ home: { path: '/home/kasm-user', scope: 'user', name: 'kasm-test' } });
const homeA = crypto.randomUUID();
const homeB = crypto.randomUUID();
const withHome = (homeId: string, ownerId: string) => ({ ...specFor(type), ownerId, home: { id: homeId, path: '/home/kasm-user' } });
const node = (containerId: string, script: string) => execIn(runtime.docker, containerId, ['node', '-e', script]);

t.test('a file written in the home outlives its container, and only that home has it', async (t) => {
  const first = await runtime.create(withHome(homeA, 'u-alice'));
  const who = await node(first.runtimeId, "const fs=require('fs');fs.writeFileSync('/home/kasm-user/notes.txt','kept '+process.getuid());process.stdout.write(String(fs.statSync('/home/kasm-user').uid))");
  t.equal(who.trim(), '1000', 'a new home is owned by the image user (uid 1000) and writable by it');
  const volume = await runtime.docker.getVolume(`deskhub-home-${homeA}`).inspect();
  t.equal(volume.Labels['deskhub.home'], homeA, 'the volume is labelled with the home');
  t.equal(volume.Labels['deskhub.owner'], 'u-alice', 'and its owner');
  t.equal(volume.Labels['deskhub.instance'], runtime.instance);

  await runtime.remove(first.runtimeId);
  t.ok(await runtime.docker.getVolume(`deskhub-home-${homeA}`).inspect(), 'removing the container keeps the home');
  const second = await runtime.create(withHome(homeA, 'u-alice'));
  t.equal(await node(second.runtimeId, "process.stdout.write(require('fs').readFileSync('/home/kasm-user/notes.txt','utf8'))"), 'kept 1000', 'a new container on the home sees the file');

  const other = await runtime.create(withHome(homeB, 'u-bob'));
  t.equal(await node(other.runtimeId, "process.stdout.write(String(require('fs').existsSync('/home/kasm-user/notes.txt')))"), 'false', "another home (bob's) does not have it");

  const homes = await runtime.listHomes();
  t.same(homes.map((h) => h.homeId).sort(), [homeA, homeB].sort(), 'both homes are listed');
  t.ok(homes.every((h) => h.sizeBytes === null || h.sizeBytes >= 0), `sizes where the engine reports them (${homes.map((h) => h.sizeBytes).join(', ')})`);

  await t.rejects(runtime.removeHome(homeA), /in use by a container/, 'a home a container mounts is not removed');
  await runtime.remove(second.runtimeId);
  await runtime.removeHome(homeA);
  await t.rejects(runtime.docker.getVolume(`deskhub-home-${homeA}`).inspect(), /no such volume/i, 'removed once nothing mounts it');
  await runtime.removeHome(homeA);
  t.pass('removing a missing home is not an error');
  await runtime.remove(other.runtimeId);
});
