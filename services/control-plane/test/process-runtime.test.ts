/**
 * The process runtime on its own, with real processes: the runtime contract suite
 * (runtime-suite.ts), then what only this runtime does: its start event and loopback upstream,
 * records kept 0600 and deskhub's own settings kept from desktops, stop taking the whole process
 * group, finding a process by the DESKHUB_RUNTIME_ID marker when its pid never reached the
 * record, refusing a reused pid, and stop-on-close.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { createLogger } from '@deskhub/config';
import { loadCatalog } from '../src/catalog.ts';
import { ProcessRuntime } from '../src/runtime/process.ts';
import type { CatalogEntry } from '../src/catalog.ts';
import type { DesktopSpec } from '../src/runtime/types.ts';
import { pidAlive, tempDir, testProcesses, waitFor, writeTestCatalog } from './helpers.ts';
import { runtimeContractSuite } from './runtime-suite.ts';

const logger = createLogger('test', 'silent');

const { dir, cleanup } = tempDir('process-runtime');
const catalog = loadCatalog(writeTestCatalog(dir));
const dataDir = path.join(dir, 'data');
const runtimes: ProcessRuntime[] = [];
const newRuntime = (options: { stopOnClose?: boolean; dataDir?: string } = {}) => {
  const runtime = new ProcessRuntime({ dataDir, logger, pollIntervalMs: 100, stopGraceMs: 2000, ...options });
  runtimes.push(runtime);
  return runtime;
};
t.teardown(async () => {
  for (const r of runtimes) await r.close();
  for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
  cleanup();
});
const spec = (type: CatalogEntry): DesktopSpec => ({
  desktopId: randomUUID(),
  ownerId: randomUUID(),
  ownerName: 'alice',
  proxyPath: `alice-${type.id}`,
  type,
  env: { ...type.env, WEB_PASSWORD: 'p'.repeat(24) },
});
const recordOf = (runtimeId: string) => JSON.parse(readFileSync(path.join(dataDir, 'processes', runtimeId, 'record.json'), 'utf8'));
const answers = async (port: number) => (await fetch(`http://127.0.0.1:${port}/`)).status;

const runtime = newRuntime();
const web = catalog.get('web')!;

runtimeContractSuite(t, 'process', async () => ({
  runtime,
  freshRuntime: () => newRuntime(),
  watching: async () => {},
  desktop: () => spec(web),
  answers: async (instance) => (await answers(instance.upstream.port)) === 200,
  createEvents: ['start'],
  stoppedReason: /^stopped$/,
  crashing: { spec: () => spec(catalog.get('crash')!), reason: /exited with code 3/, output: /cannot open \u001b\[1mdisplay\u001b\[0m: no such thing/ }, // its output as printed, escapes and all
  kill: async (runtimeId) => {
    process.kill(recordOf(runtimeId).pid as number, 'SIGKILL');
  },
  killedReason: /^process was killed by SIGKILL$/,
  adoptedKilledReason: /ended/,
  missing: {
    spec: () => spec({ ...web, command: ['/nonexistent/desktop'] }),
    message: /could not start \/nonexistent\/desktop: spawn \/nonexistent\/desktop ENOENT/,
    reason: 'command not found or not executable: /nonexistent/desktop',
  },
  // The port chosen for it taken between the probe and the bind, by a program deskhub does not know.
  portTaken: async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const held = (holder.address() as AddressInfo).port;
    const type: CatalogEntry = { ...web, id: 'taken', command: ['busybox', 'httpd', '-f', '-p', `127.0.0.1:${held}`, '-h', `${dir}/www`] };
    return { spec: spec(type), output: /address already in use/i, release: () => new Promise<void>((resolve) => holder.close(() => resolve())) };
  },
  // A file where its records folder should be: the process runtime's engine is its records.
  engineGone: () => {
    const file = path.join(dir, 'not-a-folder');
    writeFileSync(file, '');
    return { runtime: newRuntime({ dataDir: file }), reason: /^the process runtime cannot keep its desktop records in .*not-a-folder\/processes: ENOTDIR/ };
  },
  leftovers: async () => testProcesses(dir).map(String),
}));

t.test('process runtime: what only it does', async (t) => {
  t.test('availableFor names a missing command; create reports the process and its loopback port; the record is 0600 and the env clean', async (t) => {
    t.same(await runtime.availableFor({ ...web, command: ['no-such-command-here'] }), { ok: false, reason: 'command not found or not executable: no-such-command-here' });
    const s = spec(web);
    const events: string[] = [];
    const instance = await runtime.create(s, (e) => events.push(`${e.kind}: ${e.message}`));
    t.match(events[0], /^start: process \d+ started, listening on 127\.0\.0\.1:\d+$/);
    t.equal(instance.upstream.host, '127.0.0.1');
    await waitFor('the desktop to answer', async () => ((await answers(instance.upstream.port)) === 200 ? true : undefined), 10_000);
    const record = recordOf(instance.runtimeId);
    t.equal(record.env.WEB_PASSWORD, 'p'.repeat(24));
    t.equal(statSync(path.join(dataDir, 'processes', instance.runtimeId, 'record.json')).mode & 0o777, 0o600, 'the record (holding the env) is 0600');
    const environ = readFileSync(`/proc/${record.pid}/environ`, 'latin1');
    t.notOk(environ.includes('SECRET_KEY=') || environ.includes('DATABASE_URL='), 'deskhub\'s own settings are not passed on');
    await runtime.remove(instance.runtimeId);
  });

  t.test('stop ends the whole process group; start gives it a new port', async (t) => {
    const family: CatalogEntry = {
      ...web,
      id: 'family',
      command: ['sh', '-c', `busybox httpd -f -p 127.0.0.1:{port} -h ${dir}/www & sleep 1000 & wait`],
    };
    const instance = await runtime.create(spec(family));
    await waitFor('the desktop to answer', async () => ((await answers(instance.upstream.port)) === 200 ? true : undefined), 10_000);
    // busybox httpd forks a child per request: the probe's may still be finishing, so wait for it to go.
    t.ok(await waitFor('sh, httpd and sleep, and no request child', () => (testProcesses(dir).length === 3 ? true : undefined), 5000, 50), 'sh, httpd and sleep');
    await runtime.stop(instance.runtimeId);
    t.same(testProcesses(dir), [], 'all three are gone');
    t.same(await runtime.inspect(instance.runtimeId), { runtimeId: instance.runtimeId, desktopId: recordOf(instance.runtimeId).desktopId, running: false, reason: 'stopped' });
    const restarted = await runtime.start(instance.runtimeId);
    await waitFor('the desktop to answer again', async () => ((await answers(restarted.upstream.port)) === 200 ? true : undefined), 10_000);
    t.pass('started again');
    await runtime.remove(instance.runtimeId);
  });

  t.test('a reused pid is not mistaken for a desktop; a pid that never reached the record is found by its marker', async (t) => {
    // A record claiming our own pid with another start time: must not be adopted (nor killed).
    const fakeId = 'proc-fake0000';
    mkdirSync(path.join(dataDir, 'processes', fakeId), { recursive: true });
    writeFileSync(
      path.join(dataDir, 'processes', fakeId, 'record.json'),
      JSON.stringify({ runtimeId: fakeId, desktopId: randomUUID(), proxyPath: 'x', typeId: 'web', command: ['true'], env: {}, cwd: dir, scheme: 'http', verifyTls: true, host: '127.0.0.1', port: 1, pid: process.pid, startTime: '1', running: true, reason: null, createdAt: new Date().toISOString() }),
    );
    // A process started with the marker whose pid was never written down.
    const markerId = 'proc-marker000';
    const orphan = spawn('sleep', ['1000'], { env: { PATH: process.env.PATH, DESKHUB_RUNTIME_ID: markerId, DESKHUB_TEST_RUN: path.basename(dir) }, detached: true, stdio: 'ignore' });
    orphan.unref();
    mkdirSync(path.join(dataDir, 'processes', markerId), { recursive: true });
    writeFileSync(
      path.join(dataDir, 'processes', markerId, 'record.json'),
      JSON.stringify({ runtimeId: markerId, desktopId: randomUUID(), proxyPath: 'y', typeId: 'web', command: ['sleep', '1000'], env: {}, cwd: dir, scheme: 'http', verifyTls: true, host: '127.0.0.1', port: 1, pid: null, startTime: null, running: true, reason: null, createdAt: new Date().toISOString() }),
    );
    const third = newRuntime();
    const fake = await third.inspect(fakeId);
    t.equal(fake?.running, false, 'the pid of another process is not adopted');
    t.ok(pidAlive(process.pid));
    const found = await third.inspect(markerId);
    t.equal(found?.running, true, 'found by DESKHUB_RUNTIME_ID');
    t.equal(recordOf(markerId).pid, orphan.pid);
    await third.remove(markerId);
    await waitFor('the marked process to be stopped', () => (pidAlive(orphan.pid!) ? undefined : true), 10_000);
    await third.remove(fakeId);
    t.ok(pidAlive(process.pid), 'removing the fake record killed nothing of ours');
  });

  t.test('stopOnClose stops every desktop process', async (t) => {
    const closing = newRuntime({ stopOnClose: true });
    await closing.create(spec(web));
    await closing.create(spec(web));
    t.equal(testProcesses(dir).length, 2);
    await closing.close();
    t.same(testProcesses(dir), []);
    const rest = newRuntime();
    for (const status of await rest.list()) await rest.remove(status.runtimeId);
    t.same(await rest.list(), [], 'nothing left');
  });
});
