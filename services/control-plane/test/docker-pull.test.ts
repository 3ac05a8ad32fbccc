// Image pulls for real, from a registry the test runs on loopback (Debian's docker-registry):
// a missing image is pulled with progress events and then runs; an image the registry does not
// have fails with a message naming it; pullPolicy never does not pull at all.
import t from 'tap';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import type { RuntimeEvent } from '../src/runtime/types.ts';
import { basicAuth, buildImage, httpsGet, kasmTestType, randomId, specFor, startLocalRegistry, testRuntime, waitForHttps } from './docker-helpers.ts';

const run = promisify(execFile);

await buildImage('kasm-test');
const registry = await startLocalRegistry();
t.teardown(() => registry.close());
const { runtime, cleanup } = testRuntime();
t.teardown(cleanup);

// An image with a layer of its own (8 MB of random bytes, so it neither compresses nor exists
// locally once removed), on top of kasm-test, pushed to the loopback registry.
const image = `${registry.address}/deskhub/pull-test:${randomId()}`;
{
  const builder = await runtime.docker.createContainer({ Image: 'deskhub/kasm-test:local', Labels: { 'deskhub.test': 'pull' } });
  try {
    await builder.putArchive(tarWithFile('home/kasm-user/ballast.bin', randomBytes(8 * 1024 * 1024)), { path: '/' });
    await builder.commit({ repo: image.slice(0, image.lastIndexOf(':')), tag: image.slice(image.lastIndexOf(':') + 1) });
  } finally {
    await builder.remove({ force: true });
  }
  await run('docker', ['push', image], { timeout: 120_000 });
  await run('docker', ['rmi', image]);
}
t.teardown(() => run('docker', ['rmi', '-f', image]).catch(() => undefined));

t.test('a missing image is pulled with progress, then runs', async (t) => {
  t.notOk(await runtime.docker.getImage(image).inspect().catch(() => null), 'not present before');
  const events: RuntimeEvent[] = [];
  const spec = specFor(kasmTestType({ id: 'pulled', image, pullPolicy: 'if-missing' }));
  const instance = await runtime.create(spec, (e) => events.push(e));
  t.teardown(() => runtime.remove(instance.runtimeId));
  const pulls = events.filter((e) => e.kind === 'pull');
  t.match(pulls[0], { message: `pulling ${image}`, progress: 0 });
  t.match(pulls.at(-1), { message: `pulled ${image}`, progress: 100 });
  const percents = pulls.map((e) => e.progress ?? -1);
  t.same(percents, [...percents].sort((a, b) => a - b), `progress only goes up (${percents.join(' ')})`);
  t.ok(percents.every((p) => p >= 0 && p <= 100));
  t.same(events.slice(pulls.length).map((e) => e.kind), ['create', 'start'], 'then create and start');
  t.ok(await runtime.docker.getImage(image).inspect(), 'present after');
  await waitForHttps(instance.upstream.host, instance.upstream.port);
  t.equal((await httpsGet(instance.upstream.host, instance.upstream.port, '/', basicAuth(spec.env.VNC_PW!))).status, 200, 'the pulled desktop answers');
});

t.test('an image the registry does not have fails, naming the image', async (t) => {
  const missing = `${registry.address}/deskhub/not-there:${randomId()}`;
  const events: RuntimeEvent[] = [];
  const before = (await runtime.list()).length;
  await t.rejects(runtime.create(specFor(kasmTestType({ image: missing, pullPolicy: 'if-missing' })), (e) => events.push(e)), {
    message: new RegExp(`^image ${missing.replace(/[.]/g, '\\.')} could not be pulled: .+`),
  });
  t.same(events.map((e) => e.kind), ['pull'], 'only the pull started');
  t.equal((await runtime.list()).length, before, 'no container created');
});

t.test('pullPolicy always pulls even when present; never does not pull', async (t) => {
  const events: RuntimeEvent[] = [];
  const instance = await runtime.create(specFor(kasmTestType({ id: 'pulled', image, pullPolicy: 'always' })), (e) => events.push(e));
  t.teardown(() => runtime.remove(instance.runtimeId));
  t.match(events.find((e) => e.kind === 'pull'), { message: `pulling ${image}` }, 'pulled again');
  const quiet: RuntimeEvent[] = [];
  const other = await runtime.create(specFor(kasmTestType({ id: 'pulled', image, pullPolicy: 'never' })), (e) => quiet.push(e));
  t.teardown(() => runtime.remove(other.runtimeId));
  t.same(quiet.map((e) => e.kind), ['create', 'start'], 'present and never: no pull');
});

/** A tar archive holding one regular file (ustar header + data + end blocks). */
function tarWithFile(path: string, data: Buffer): Buffer {
  const header = Buffer.alloc(512);
  header.write(path, 0, 100, 'utf8');
  header.write('0000644\0', 100);
  header.write('0001750\0', 108); // uid 1000
  header.write('0001750\0', 116); // gid 1000
  header.write(data.length.toString(8).padStart(11, '0') + '\0', 124);
  header.write(Math.floor(Date.now() / 1000).toString(8).padStart(11, '0') + '\0', 136);
  header.write('        ', 148); // checksum placeholder
  header.write('0', 156); // regular file
  header.write('ustar\0' + '00', 257);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  const padding = Buffer.alloc((512 - (data.length % 512)) % 512);
  return Buffer.concat([header, data, padding, Buffer.alloc(1024)]);
}
