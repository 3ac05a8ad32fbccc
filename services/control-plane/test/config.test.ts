/**
 * Start-up checks that need no running service: configuration rules, the catalog validator,
 * secrets and sealing, proxy-path rules, and the one error handler.
 */
import t from 'tap';
import { statSync, writeFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import Fastify from 'fastify';
import { loadControlPlaneConfig, defaultCatalogPath } from '../src/config.ts';
import { loadCatalog } from '../src/catalog.ts';
import { createSecrets, generatePassword, loadSecretKey, parseSecretKey } from '../src/secrets.ts';
import { isSafePathSegment, makePathSafe, pathCandidates } from '../src/proxy-path.ts';
import errors from '../src/plugins/app/errors.ts';
import { decideRepair } from '../src/lifecycle/desktops.ts';
import { tempDir } from './helpers.ts';

t.test('configuration: defaults, and errors that name the variable', async (t) => {
  const config = loadControlPlaneConfig({});
  t.equal(config.PORT, 8081);
  t.equal(config.PUBLIC_URL, 'http://127.0.0.1:8080');
  t.equal(config.AUTH_MODE, 'dev');
  t.equal(config.RUNTIME, 'all');
  t.equal(config.CATALOG, defaultCatalogPath);
  t.ok(path.isAbsolute(config.DATA_DIR));
  t.equal(loadControlPlaneConfig({}, { PORT: 8080, publicPort: 8080 }).PORT, 8080);
  const refuse = (env: NodeJS.ProcessEnv, pattern: RegExp) => t.throws(() => loadControlPlaneConfig(env), { name: 'ConfigError', message: pattern }, JSON.stringify(env));
  refuse({ PORT: 'eighty' }, /^PORT: expected a whole number/);
  refuse({ RUNTIME: 'kubernetes' }, /^RUNTIME: expected one of all, docker, process/);
  refuse({ DATABASE_URL: 'mysql://x' }, /^DATABASE_URL: expected a postgres or postgresql URL/);
  refuse({ PUBLIC_URL: 'https://desktops.example.com' }, /^AUTH_MODE: dev sign-in .* loopback/);
  refuse({ HOST: '0.0.0.0' }, /^HOST: dev sign-in .* loopback only/);
  refuse({ PUBLIC_URL: 'http://127.0.0.1:8080/deskhub' }, /^PUBLIC_URL: expected an origin without a path/);
  refuse({ AUTH_MODE: 'oidc', PUBLIC_URL: 'https://desktops.example.com' }, /^AUTH_MODE: oidc needs at least one sign-in provider/);
  refuse({ DATABASE_URL: 'postgres://u:p@127.0.0.1/db' }, /^SECRET_KEY: required when DATABASE_URL is set/);
  refuse({ MAX_DESKTOPS_PER_USER: '-1' }, /^MAX_DESKTOPS_PER_USER/);
  for (const host of ['http://localhost:8080', 'http://127.0.0.2:9000', 'http://[::1]:8080', 'http://app.localhost']) {
    t.doesNotThrow(() => loadControlPlaneConfig({ PUBLIC_URL: host }), `dev mode on ${host}`);
  }
});

t.test('the shipped catalog is valid and has the Kasm family, the local images and demo', async (t) => {
  const catalog = loadCatalog(defaultCatalogPath);
  const ids = catalog.entries.map((e) => e.id);
  for (const id of ['ubuntu-desktop', 'chrome', 'firefox', 'vs-code', 'kasm-test', 'desktop', 'demo']) t.ok(ids.includes(id), id);
  for (const id of ['ubuntu-desktop', 'chrome', 'firefox', 'vs-code']) {
    const e = catalog.get(id)!;
    t.match(e.image, /^kasmweb\/.+:1\.17\.0$/, `${id} pins a tag`);
    t.equal(e.port, 6901);
    t.equal(e.scheme, 'https');
    t.equal(e.verifyTls, false);
    t.equal(e.stripPrefix, true);
    t.same(e.credentials, { kind: 'kasm' });
    t.equal(e.entryQuery, 'path=desktop/{path}/websockify');
  }
  t.equal(catalog.get('chrome')!.shmSize, '2g');
  t.equal(catalog.get('ubuntu-desktop')!.shmSize, '512m');
  t.equal(catalog.get('kasm-test')!.pullPolicy, 'never');
  const demo = catalog.get('demo')!;
  t.equal(demo.runtime, 'process');
  t.equal(demo.command![0], process.execPath, '{node} is this Node.js');
  t.ok(readFileSync(demo.command![3]!, 'utf8').includes('startDemoDesktop'), '{catalogDir} resolves to the demo desktop');
});

t.test('catalog errors name the file, the entry and the field', async (t) => {
  const { dir, cleanup } = tempDir('catalog');
  t.teardown(cleanup);
  const file = path.join(dir, 'catalog.yaml');
  const entry = (extra: string) => `types:\n  - id: good\n    name: Good\n    runtime: process\n    command: [busybox]\n    port: 80\n  - id: bad\n    name: Bad\n${extra}`;
  const cases: [string, RegExp][] = [
    ['types: [', /not valid YAML/],
    ['nothing: here', /expected a top-level "types:" list/],
    ['types: []', /the "types" list is empty/],
    [entry('    runtime: docker\n    port: 6901\n'), /entry "bad", field "image": required for runtime docker/],
    [entry('    runtime: process\n    command: [x]\n    port: 99999\n'), /entry "bad", field "port": Expected integer to be less or equal to 65535/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    colour: red\n'), /entry "bad", field "colour"/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    scheme: ftp\n'), /entry "bad", field "scheme"/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    entryQuery: "path={nope}"\n'), /entry "bad", field "entryQuery": unknown placeholder \{nope\}/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    credentials: { kind: kasm }\n    env: { VNC_PW: fixed }\n'), /field "env.VNC_PW": generated by the credentials recipe/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    shmSize: lots\n'), /field "shmSize"/],
    ['types:\n  - id: Bad_Id\n    name: x\n    runtime: process\n    command: [x]\n    port: 80\n', /entry "Bad_Id", field "id": must be lowercase/],
    ['types:\n  - id: a\n    name: x\n    runtime: process\n    command: [x]\n    port: 80\n  - id: a\n    name: y\n    runtime: process\n    command: [x]\n    port: 80\n', /entry "a", field "id": duplicate id/],
    ['types:\n  - name: nameless\n    runtime: process\n    command: [x]\n    port: 80\n', /entry #1, field "id"/],
  ];
  for (const [text, message] of cases) {
    writeFileSync(file, text);
    t.throws(() => loadCatalog(file), { name: 'CatalogError', message }, text.split('\n').slice(-3).join(' | '));
    t.throws(() => loadCatalog(file), { message: new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`) }, 'starts with the file name');
  }
  t.throws(() => loadCatalog(path.join(dir, 'missing.yaml')), { message: /CATALOG: cannot read .*missing\.yaml/ });
});

t.test('secrets: key formats, the embedded key file, sealing', async (t) => {
  const { dir, cleanup } = tempDir('secrets');
  t.teardown(cleanup);
  const key = Buffer.alloc(32, 9);
  t.same(parseSecretKey(key.toString('base64')), key);
  t.same(parseSecretKey(key.toString('hex')), key);
  t.throws(() => parseSecretKey('too-short'), { name: 'ConfigError', message: /^SECRET_KEY: expected 32 bytes/ });
  t.throws(() => parseSecretKey(Buffer.alloc(16).toString('base64')), { message: /^SECRET_KEY/ });

  const first = loadSecretKey(undefined, dir);
  t.equal(statSync(path.join(dir, 'secret.key')).mode & 0o777, 0o600, 'the generated key file is 0600');
  t.same(loadSecretKey(undefined, dir), first, 'the same key at the next start');

  const secrets = createSecrets(first);
  const sealed = secrets.seal({ env: { VNC_PW: 'hunter2hunter2' }, authorization: 'Basic x' });
  t.notMatch(sealed, /hunter2/);
  t.same(secrets.open(sealed), { env: { VNC_PW: 'hunter2hunter2' }, authorization: 'Basic x' });
  t.not(secrets.seal('same'), secrets.seal('same'), 'a fresh nonce each time');
  const parts = sealed.split(':');
  const tampered = [...parts.slice(0, 3), Buffer.from('x' + Buffer.from(parts[3]!, 'base64').toString('latin1').slice(1), 'latin1').toString('base64')].join(':');
  t.throws(() => secrets.open(tampered), 'tampering is detected');
  t.throws(() => createSecrets(Buffer.alloc(32, 1)).open(sealed), 'another key cannot open it');
  t.not(createSecrets(Buffer.alloc(32, 1)).fingerprint, secrets.fingerprint);
  const pw = generatePassword();
  t.match(pw, /^[A-Za-z0-9]{28}$/, 'letters and digits only (Kasm passes VNC_PW through echo -e)');
});

t.test('proxy paths', async (t) => {
  t.equal(makePathSafe('Alice'), 'alice');
  t.equal(makePathSafe('  My Work Desktop! '), 'my-work-desktop');
  t.equal(makePathSafe('José.Müller'), 'jose-muller');
  t.equal(makePathSafe('a--b'), 'a-b');
  t.equal(makePathSafe('../..'), null);
  t.equal(makePathSafe('日本'), null);
  t.equal(makePathSafe('x'.repeat(40) + '-y'), 'x'.repeat(32));
  t.equal(makePathSafe('a'.repeat(31) + '-b'), 'a'.repeat(31), 'no trailing "-" after cutting');
  t.ok(isSafePathSegment('alice-ubuntu-desktop-2'));
  for (const bad of ['-a', 'a-', 'A', 'a_b', '', 'a/b']) t.notOk(isSafePathSegment(bad), bad);
  t.same([...pathCandidates('alice-web', 4)], ['alice-web', 'alice-web-2', 'alice-web-3', 'alice-web-4']);
});

t.test('one error handler: 4xx messages reach the caller, 5xx details only the log', async (t) => {
  const logged: string[] = [];
  const app = Fastify({ logger: { level: 'error', stream: { write: (line: string) => void logged.push(line) } } });
  await app.register(errors);
  app.get('/boom', async () => {
    throw new Error('database password is hunter2');
  });
  app.get('/teapot', async () => {
    throw Object.assign(new Error('no coffee here'), { statusCode: 418 });
  });
  const boom = await app.inject('/boom');
  t.equal(boom.statusCode, 500);
  t.same(boom.json(), { statusCode: 500, error: 'Internal Server Error', message: 'Internal Server Error' });
  t.ok(logged.some((line) => line.includes('hunter2')), 'the detail is in the log');
  const teapot = await app.inject('/teapot');
  t.same(teapot.json(), { statusCode: 418, error: "I'm a Teapot", message: 'no coffee here' });
  const missing = await app.inject('/nowhere?x=1');
  t.same(missing.json(), { statusCode: 404, error: 'Not Found', message: 'Route GET /nowhere not found' });
  await app.close();
});

t.test('reconciliation decisions', async (t) => {
  const up = { scheme: 'http' as const, host: '127.0.0.1', port: 1, verifyTls: true };
  const route = { path: 'a', desktopId: 'd', owner: 'o', sharedWith: [], upstream: up, stripPrefix: true, entryQuery: '', state: 'running' as const };
  const alive = { runtimeId: 'r', desktopId: 'd', running: true, upstream: up };
  const dead = { runtimeId: 'r', desktopId: 'd', running: false, reason: 'process was killed by SIGKILL' };
  t.same(decideRepair({ state: 'running', runtimeId: 'r', route, upstream: up }, alive), null, 'healthy');
  t.same(decideRepair({ state: 'running', runtimeId: 'r', route, upstream: up }, null), { kind: 'vanished' });
  t.same(decideRepair({ state: 'running', runtimeId: 'r', route, upstream: up }, dead), { kind: 'exited', reason: 'process was killed by SIGKILL' });
  t.same(decideRepair({ state: 'running', runtimeId: 'r', route: null, upstream: up }, alive), { kind: 'resume' }, 'running without a route');
  t.same(decideRepair({ state: 'running', runtimeId: 'r', route, upstream: up }, { ...alive, upstream: { ...up, port: 2 } }), { kind: 'resume' }, 'moved');
  t.same(decideRepair({ state: 'creating', runtimeId: null, route: null, upstream: null }, null), { kind: 'fail-interrupted-create' });
  t.same(decideRepair({ state: 'starting', runtimeId: 'r', route: null, upstream: up }, alive), { kind: 'resume' });
  t.same(decideRepair({ state: 'starting', runtimeId: 'r', route: null, upstream: up }, dead), { kind: 'fail-interrupted-start' });
  t.same(decideRepair({ state: 'stopping', runtimeId: 'r', route, upstream: up }, alive), { kind: 'finish-stop' });
  t.same(decideRepair({ state: 'stopped', runtimeId: 'r', route, upstream: up }, dead), { kind: 'withdraw-stale-route' });
  t.same(decideRepair({ state: 'stopped', runtimeId: 'r', route: null, upstream: up }, alive), { kind: 'stop-instance' });
  t.same(decideRepair({ state: 'failed', runtimeId: 'r', route: null, upstream: up }, null), { kind: 'forget-instance' });
  t.same(decideRepair({ state: 'stopped', runtimeId: 'r', route: null, upstream: up }, dead), null);
});
