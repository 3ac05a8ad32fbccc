/**
 * Homes on a real Docker Engine (runtime/docker/docker-runtime.ts): a named volume per home,
 * labelled, mounted at the type's home path and writable by the image's user (uid 1000, as in
 * Kasm images) from its first use; files outlive the container; another home is another volume;
 * listed with sizes; removal refused while a container mounts it.
 *
 * On shared storage (HOME_VOLUME_DRIVER=local with a device per home): the home's folder is made
 * under the homes' root before its first desktop, holds the files the desktop writes, is sized
 * and deleted through helper containers; the settings are checked as a whole at start-up.
 */
import t from 'tap';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { dockerRuntimeOptionsFromEnv } from '../src/runtime/docker/docker-runtime.ts';
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

t.test('homes on shared storage: a folder per home under the root, made, kept, sized and deleted', async (t) => {
  // A folder every engine on this machine sees, bound per home: the local driver's shared mode
  // (o=bind on a cluster filesystem mounted at the same path on every host; NFS is type=nfs).
  await buildImage('deskhub');
  const root = await mkdtemp('/tmp/deskhub-shared-homes-');
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const shared = testRuntime({
    homeStorage: { driver: 'local', options: { type: 'none', o: 'bind', device: `${root}/{home}` } },
    // The helper image by default (HOME_HELPER_IMAGE): deskhub's own.
  });
  t.teardown(shared.cleanup);
  const sharedRuntime = shared.runtime;
  t.same(await sharedRuntime.availableFor(type), { ok: true });
  const homeC = crypto.randomUUID();

  const first = await sharedRuntime.create(withHome(homeC, 'u-carol'));
  const folder = `${root}/${homeC}`;
  t.equal((await stat(folder)).uid, 1000, "the home's own folder was made under the root, and is the image user's once first mounted");
  const volume = await sharedRuntime.docker.getVolume(`deskhub-home-${homeC}`).inspect();
  t.match(volume, { Driver: 'local', Options: { type: 'none', o: 'bind', device: folder }, Labels: { 'deskhub.home': homeC } }, 'its volume names that folder ({home} replaced)');
  await execIn(sharedRuntime.docker, first.runtimeId, ['node', '-e', "require('fs').writeFileSync('/home/kasm-user/shared.txt', 'x'.repeat(100000))"]);
  t.equal((await readFile(`${folder}/shared.txt`)).length, 100000, 'what the desktop writes is in the shared folder');

  await sharedRuntime.remove(first.runtimeId);
  const second = await sharedRuntime.create(withHome(homeC, 'u-carol'));
  t.equal(await execIn(sharedRuntime.docker, second.runtimeId, ['node', '-e', "process.stdout.write(String(require('fs').statSync('/home/kasm-user/shared.txt').size))"]), '100000', 'the next desktop sees it');

  const [listed] = (await sharedRuntime.listHomes()).filter((h) => h.homeId === homeC);
  t.ok(listed && listed.sizeBytes! >= 100000, `listed with its size from the storage itself (${listed?.sizeBytes} bytes)`);
  await t.rejects(sharedRuntime.removeHome(homeC), /in use by a container/, 'not deleted while a container mounts it');
  t.ok((await stat(`${folder}/shared.txt`)).isFile(), 'and the refusal deleted nothing');
  await sharedRuntime.remove(second.runtimeId);
  await sharedRuntime.removeHome(homeC);
  t.same(await readdir(root), [], "deleting the home deletes its folder, and only that");
  await t.rejects(sharedRuntime.docker.getVolume(`deskhub-home-${homeC}`).inspect(), /no such volume/i, 'and its volume');
  await sharedRuntime.removeHome(homeC);
  t.pass('deleting a missing home is not an error');

  const noHelper = testRuntime({ homeStorage: { driver: 'local', options: { type: 'none', o: 'bind', device: `${root}/{home}` } }, homeHelperImage: 'deskhub/no-such-helper:local' });
  t.teardown(noHelper.cleanup);
  t.match(await noHelper.runtime.availableFor(type), { ok: false, reason: /HOME_HELPER_IMAGE=deskhub\/no-such-helper:local is not on the engine/ }, 'a type with a home says what is missing');
  const noPlugin = testRuntime({ homeStorage: { driver: 'no-such-plugin', options: {} } });
  t.teardown(noPlugin.cleanup);
  t.match(await noPlugin.runtime.availableFor(type), { ok: false, reason: /HOME_VOLUME_DRIVER=no-such-plugin: the engine has no such volume plugin/ });
});

t.test('the home storage settings are checked as a whole at start-up', async (t) => {
  const nfs = { HOME_VOLUME_DRIVER: 'local', HOME_VOLUME_OPTIONS: 'type=nfs; o=addr=10.0.0.5,rw,nfsvers=4.1; device=:/export/homes/{home}' };
  t.match(dockerRuntimeOptionsFromEnv(nfs), {
    homeStorage: { driver: 'local', options: { type: 'nfs', o: 'addr=10.0.0.5,rw,nfsvers=4.1', device: ':/export/homes/{home}' } },
    homeHelperImage: 'deskhub/deskhub:local',
  }, 'a value keeps its = and , (the NFS mount options)');
  t.match(dockerRuntimeOptionsFromEnv({ HOME_VOLUME_DRIVER: 'vieux/sshfs:latest', HOME_VOLUME_OPTIONS: 'sshcmd=homes@storage:/homes/{home}' }), { homeStorage: { driver: 'vieux/sshfs:latest' } }, 'a plugin takes its own options');
  t.notOk('homeStorage' in dockerRuntimeOptionsFromEnv({}), 'unset: local volumes');
  const refuse = (env: NodeJS.ProcessEnv, pattern: RegExp) => t.throws(() => dockerRuntimeOptionsFromEnv(env), { name: 'ConfigError', message: pattern }, JSON.stringify(env));
  refuse({ HOME_VOLUME_OPTIONS: 'type=nfs' }, /^HOME_VOLUME_OPTIONS: is set without HOME_VOLUME_DRIVER/);
  refuse({ HOME_VOLUME_DRIVER: 'local' }, /^HOME_VOLUME_OPTIONS: the local driver needs type and device/);
  refuse({ ...nfs, HOME_VOLUME_OPTIONS: 'type=nfs;device=:/export/homes' }, /^HOME_VOLUME_OPTIONS: device must end in \/\{home\}.*every home the same files/);
  refuse({ ...nfs, HOME_VOLUME_OPTIONS: 'type=nfs;device=:/export/{home}/data' }, /^HOME_VOLUME_OPTIONS: device must end in \/\{home\}/);
  refuse({ ...nfs, HOME_VOLUME_OPTIONS: 'type=tmpfs;device=tmpfs/{home}' }, /^HOME_VOLUME_OPTIONS: type=tmpfs/);
  refuse({ ...nfs, HOME_VOLUME_OPTIONS: 'type=nfs;device=:/h/{home};uid=1000' }, /^HOME_VOLUME_OPTIONS: the local driver takes type, o, device and size, not uid/);
  refuse({ ...nfs, HOME_VOLUME_OPTIONS: 'type=nfs;type=cifs;device=:/h/{home}' }, /^HOME_VOLUME_OPTIONS: "type" is given twice/);
  refuse({ ...nfs, HOME_VOLUME_OPTIONS: 'nfs' }, /^HOME_VOLUME_OPTIONS: expected key=value pairs/);
  refuse({ ...nfs, HOME_VOLUME_DRIVER: 'bad driver' }, /^HOME_VOLUME_DRIVER: "bad driver" is not a volume driver name/);
});
