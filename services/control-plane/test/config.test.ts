/**
 * Start-up checks that need no running service: configuration rules, the catalog validator,
 * secrets and sealing, proxy-path rules, and the one error handler.
 */
import t from 'tap';
import { statSync, writeFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import Fastify from 'fastify';
import { loadControlPlaneConfig, defaultCatalogPath } from '../src/config.ts';
import { claimGrantsAdmin, parseAdminClaim } from '../src/oidc/config.ts';
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
  refuse({ AUTH_MODE: 'oidc', PUBLIC_URL: 'https://desktops.example.com' }, /^OIDC_PROVIDERS: AUTH_MODE=oidc needs at least one sign-in provider/);
  refuse({ DATABASE_URL: 'postgres://u:p@127.0.0.1/db' }, /^SECRET_KEY: required when DATABASE_URL is set/);
  refuse({ MAX_DESKTOPS_PER_USER: '-1' }, /^MAX_DESKTOPS_PER_USER/);
  refuse({ HOME_NODE_LOST: 'new-home' }, /^HOME_NODE_LOST: expected one of wait, offer-new-home/);
  t.equal(config.HOME_NODE_LOST, 'wait', 'a lost node means waiting unless the operator allows a stand-in home');
  // Desktops on origins of their own (sharing).
  refuse({ DESKTOP_ORIGIN: 'https://desktops.example.net' }, /^DESKTOP_ORIGIN: expected a wildcard origin such as https:\/\/\*\.desktops\.example\.net/);
  refuse({ DESKTOP_ORIGIN: 'http://*.desktops.example.net' }, /^DESKTOP_ORIGIN: plain http is only possible under localhost/);
  refuse({ DESKTOP_ORIGIN: 'http://*.localhost:8080', PUBLIC_URL: 'http://app.localhost:8080' }, /^DESKTOP_ORIGIN: http:\/\/\*\.localhost:8080 covers PUBLIC_URL's host app\.localhost:8080/);
  refuse({ DESKTOP_ORIGIN: 'http://*.localhost:8080', SHARE_LINK_TTL: '8d' }, /^SHARE_LINK_TTL: must not be longer than SHARE_LINK_MAX_TTL/);
  refuse({ SHARE_LINK_CONTROL: 'maybe' }, /^SHARE_LINK_CONTROL: expected true or false/);
  t.equal(loadControlPlaneConfig({ DESKTOP_ORIGIN: 'http://*.localhost:8080', PUBLIC_URL: 'http://localhost:8080' }).DESKTOP_ORIGIN?.suffix, 'localhost', "the UI on localhost, desktops on each their own subdomain");
  for (const host of ['http://localhost:8080', 'http://127.0.0.2:9000', 'http://[::1]:8080', 'http://app.localhost']) {
    t.doesNotThrow(() => loadControlPlaneConfig({ PUBLIC_URL: host }), `dev mode on ${host}`);
  }
});

t.test('sign-in providers: OIDC_PROVIDERS, each OIDC_<ID>_*, the presets, and errors that name the variable', async (t) => {
  const oidc = { AUTH_MODE: 'oidc', PUBLIC_URL: 'https://desktops.example.com' };
  const corp = { OIDC_PROVIDERS: 'corp', OIDC_CORP_ISSUER: 'https://login.corp.example/realms/staff/', OIDC_CORP_CLIENT_ID: 'deskhub', OIDC_CORP_CLIENT_SECRET: 's3cret' };
  const config = loadControlPlaneConfig({ ...oidc, ...corp });
  t.same(config.OIDC_PROVIDERS, [
    { id: 'corp', kind: 'oidc', clientId: 'deskhub', clientSecret: 's3cret', name: 'corp', issuer: 'https://login.corp.example/realms/staff', scopes: ['openid', 'profile', 'email'] },
  ]);
  t.equal(loadControlPlaneConfig({ ...oidc, ...corp, OIDC_CORP_NAME: 'Corp SSO', OIDC_CORP_SCOPES: 'openid,email groups' }).OIDC_PROVIDERS[0]!.name, 'Corp SSO');
  t.same(loadControlPlaneConfig({ ...oidc, ...corp, OIDC_CORP_SCOPES: 'openid,email groups' }).OIDC_PROVIDERS[0]!.scopes, ['openid', 'email', 'groups']);

  const presets = loadControlPlaneConfig({
    ...oidc,
    OIDC_PROVIDERS: 'google, github,ghe,my-idp',
    OIDC_GOOGLE_CLIENT_ID: 'g.apps.googleusercontent.com',
    OIDC_GOOGLE_CLIENT_SECRET: 'gs',
    OIDC_GITHUB_CLIENT_ID: 'Iv1.abc',
    OIDC_GITHUB_CLIENT_SECRET: 'hs',
    OIDC_GHE_TYPE: 'github',
    OIDC_GHE_URL: 'https://github.corp.example/',
    OIDC_GHE_NAME: 'GitHub Enterprise',
    OIDC_GHE_CLIENT_ID: 'e',
    OIDC_GHE_CLIENT_SECRET: 'es',
    OIDC_MY_IDP_ISSUER: 'http://127.0.0.1:9000',
    OIDC_MY_IDP_CLIENT_ID: 'm',
    OIDC_MY_IDP_CLIENT_SECRET: 'ms',
  }).OIDC_PROVIDERS;
  t.same(presets.map((p) => [p.id, p.kind, p.name]), [['google', 'google', 'Google'], ['github', 'github', 'GitHub'], ['ghe', 'github', 'GitHub Enterprise'], ['my-idp', 'oidc', 'my-idp']]);
  t.equal(presets[0]!.issuer, 'https://accounts.google.com');
  t.same(presets[1]!.github, { url: 'https://github.com', apiUrl: 'https://api.github.com' });
  t.same(presets[1]!.scopes, ['read:user']);
  t.same(presets[2]!.github, { url: 'https://github.corp.example', apiUrl: 'https://github.corp.example/api/v3' }, 'GitHub Enterprise: the API under /api/v3');
  t.equal(presets[3]!.issuer, 'http://127.0.0.1:9000', 'http on loopback is allowed');
  t.same(
    loadControlPlaneConfig({ ...oidc, OIDC_PROVIDERS: 'github', OIDC_GITHUB_CLIENT_ID: 'i', OIDC_GITHUB_CLIENT_SECRET: 's', OIDC_GITHUB_API_URL: 'https://api.example/gh' }).OIDC_PROVIDERS[0]!.github,
    { url: 'https://github.com', apiUrl: 'https://api.example/gh' },
  );
  // Providers may also be used in dev mode (local testing beside dev sign-in).
  t.equal(loadControlPlaneConfig(corp).OIDC_PROVIDERS.length, 1);

  const refuse = (env: NodeJS.ProcessEnv, pattern: RegExp) => t.throws(() => loadControlPlaneConfig({ ...oidc, ...env }), { name: 'ConfigError', message: pattern }, JSON.stringify(env));
  refuse({}, /^OIDC_PROVIDERS: AUTH_MODE=oidc needs at least one sign-in provider: list their ids/);
  refuse({ OIDC_PROVIDERS: ' , ' }, /^OIDC_PROVIDERS: AUTH_MODE=oidc needs at least one/);
  refuse({ ...corp, OIDC_CORP_CLIENT_ID: '' }, /^OIDC_CORP_CLIENT_ID: required: the client id deskhub has at provider "corp"/);
  refuse({ ...corp, OIDC_CORP_CLIENT_SECRET: undefined }, /^OIDC_CORP_CLIENT_SECRET: required/);
  refuse({ ...corp, OIDC_CORP_CLIENT_SECRET: 'sécret' }, /^OIDC_CORP_CLIENT_SECRET: expected printable ASCII/);
  refuse({ ...corp, OIDC_CORP_ISSUER: undefined }, /^OIDC_CORP_ISSUER: required/);
  refuse({ ...corp, OIDC_CORP_ISSUER: 'login.corp.example' }, /^OIDC_CORP_ISSUER: expected a URL, got "login.corp.example"/);
  refuse({ ...corp, OIDC_CORP_ISSUER: 'http://login.corp.example' }, /^OIDC_CORP_ISSUER: expected an https URL \(http only on a loopback address\)/);
  refuse({ ...corp, OIDC_CORP_ISSUER: 'https://login.corp.example/?realm=x' }, /^OIDC_CORP_ISSUER: expected a URL without query/);
  refuse({ ...corp, OIDC_CORP_SCOPES: 'profile email' }, /^OIDC_CORP_SCOPES: an OpenID provider needs the "openid" scope/);
  refuse({ ...corp, OIDC_CORP_TYPE: 'saml' }, /^OIDC_CORP_TYPE: expected one of oidc, google, github, got "saml"/);
  refuse({ ...corp, OIDC_CORP_URL: 'https://github.com' }, /^OIDC_CORP_URL: only a GitHub provider has OIDC_CORP_URL/);
  refuse({ OIDC_PROVIDERS: 'github', OIDC_GITHUB_CLIENT_ID: 'i', OIDC_GITHUB_CLIENT_SECRET: 's', OIDC_GITHUB_ISSUER: 'https://github.com' }, /^OIDC_GITHUB_ISSUER: provider "github" is GitHub \(plain OAuth2, no issuer\)/);
  refuse({ OIDC_PROVIDERS: 'github', OIDC_GITHUB_CLIENT_ID: 'i', OIDC_GITHUB_CLIENT_SECRET: 's', OIDC_GITHUB_URL: 'ftp://ghe' }, /^OIDC_GITHUB_URL: expected an https URL/);
  refuse({ OIDC_PROVIDERS: 'Corp' }, /^OIDC_PROVIDERS: "Corp" is not a usable provider id/);
  refuse({ OIDC_PROVIDERS: 'a/b' }, /^OIDC_PROVIDERS: "a\/b" is not a usable provider id/);
  refuse({ OIDC_PROVIDERS: 'dev' }, /^OIDC_PROVIDERS: "dev" is reserved/);
  refuse({ ...corp, OIDC_PROVIDERS: 'corp,corp' }, /^OIDC_PROVIDERS: "corp" is listed twice/);
  refuse({ ...corp, OIDC_CROP_ISSUER: 'https://x.example' }, /^OIDC_CROP_ISSUER: not a setting of any configured sign-in provider \(OIDC_PROVIDERS is "corp"/);
  refuse({ ...corp, ADMIN_CLAIM: 'groups' }, /^ADMIN_CLAIM: expected <claim>=<value>/);
  refuse({ ...corp, ADMIN_CLAIM: '=admins' }, /^ADMIN_CLAIM: expected <claim>=<value>/);
});

t.test('ADMIN_CLAIM: the claim equals the value or is a list that contains it', async (t) => {
  t.same(parseAdminClaim('groups=deskhub-admins', 'ADMIN_CLAIM'), { path: ['groups'], value: 'deskhub-admins' });
  const groups = parseAdminClaim('groups=deskhub-admins', 'ADMIN_CLAIM');
  t.equal(claimGrantsAdmin({ groups: ['staff', 'deskhub-admins'] }, groups), true);
  t.equal(claimGrantsAdmin({ groups: 'deskhub-admins' }, groups), true);
  t.equal(claimGrantsAdmin({ groups: ['deskhub-admins-not'] }, groups), false);
  t.equal(claimGrantsAdmin({ groups: 'deskhub-admins-not' }, groups), false);
  t.equal(claimGrantsAdmin({}, groups), false);
  t.equal(claimGrantsAdmin({ groups: { 'deskhub-admins': true } }, groups), false, 'an object is not a match');
  t.equal(claimGrantsAdmin({ groups: ['deskhub-admins'] }, undefined), false, 'no ADMIN_CLAIM: nobody by claim');
  const nested = parseAdminClaim('realm_access.roles=admin', 'ADMIN_CLAIM');
  t.equal(claimGrantsAdmin({ realm_access: { roles: ['user', 'admin'] } }, nested), true, 'a dotted path (Keycloak roles)');
  t.equal(claimGrantsAdmin({ realm_access: ['admin'] }, nested), false);
  t.equal(claimGrantsAdmin({ is_admin: true }, parseAdminClaim('is_admin=true', 'ADMIN_CLAIM')), true);
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
    t.equal(e.entryQuery, 'path=desktop/{path}/websockify&idle_disconnect=10080&reconnect=true', `${id}: Kasm's client idle timer set past deskhub's clocks, and reconnecting by itself`);
    t.same(e.activity, { on: 'input', rfb: 'kasmvnc' }, `${id}: idle on input, in KasmVNC's dialect (the default for Kasm images)`);
    t.same(e.sharing, { enabled: true, viewer: 'kasm_viewer', ownerOnly: ['/api/', '/Downloads/'] }, `${id}: viewers as kasm_viewer; the owner API and Downloads kept to the owner`);
  }
  t.same(catalog.get('desktop')!.activity, { on: 'input', rfb: 'standard' }, 'the x11vnc desktop speaks standard RFB');
  t.equal(
    catalog.get('desktop')!.entryQuery,
    'path=desktop/{path}/websockify&autoconnect=true&resize=remote&reconnect=true&idle_disconnect=10080',
    "the noVNC desktop: reconnect=true from the catalog, kept once (noVNC 1.3's own option)",
  );
  t.same(catalog.get('demo')!.activity, { on: 'traffic' }, 'the demo echoes and speaks no RFB');
  t.same(catalog.get('kasm-test')!.activity, { on: 'traffic' });
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
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    sharing: { viewer: viewer }\n'), /entry "bad", field "sharing.viewer": a read-only user needs credentials/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    sharing: { ownerOnly: [api/] }\n'), /entry "bad", field "sharing/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    sharing: yes\n'), /entry "bad", field "sharing"/],
    ['types: [', /not valid YAML/],
    ['nothing: here', /expected a top-level "types:" list/],
    ['types: []', /the "types" list is empty/],
    [entry('    runtime: docker\n    port: 6901\n'), /entry "bad", field "image": required for runtime docker/],
    [entry('    runtime: swarm\n    port: 6901\n'), /entry "bad", field "image": required for runtime swarm/],
    [entry('    runtime: docker\n    image: x\n    port: 6901\n    placement: { constraints: [node.labels.gpu==true] }\n'), /entry "bad", field "placement": only for runtime swarm/],
    [entry('    runtime: swarm\n    image: x\n    port: 6901\n    placement: { constraints: [gpu] }\n'), /entry "bad", field "placement.constraints.0": Expected string to match/],
    [entry('    runtime: process\n    command: [x]\n    port: 99999\n'), /entry "bad", field "port": Expected integer to be less or equal to 65535/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    colour: red\n'), /entry "bad", field "colour"/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    scheme: ftp\n'), /entry "bad", field "scheme"/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    entryQuery: "path={nope}"\n'), /entry "bad", field "entryQuery": unknown placeholder \{nope\}/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    credentials: { kind: kasm }\n    env: { VNC_PW: fixed }\n'), /field "env.VNC_PW": generated by the credentials recipe/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    shmSize: lots\n'), /field "shmSize"/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    activity: input\n'), /entry "bad", field "rfb": required with activity: input \(kasmvnc for KasmVNC, standard for/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    rfb: standard\n'), /entry "bad", field "rfb": only for activity: input/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    activity: idle\n'), /entry "bad", field "activity"/],
    [entry('    runtime: process\n    command: [x]\n    port: 80\n    activity: input\n    rfb: tight\n'), /entry "bad", field "rfb"/],
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
  // Every pull policy holds on swarm: the manager's engine pulls, and the service names the image pinned.
  for (const policy of ['always', 'never', 'if-missing']) {
    writeFileSync(file, entry(`    runtime: swarm\n    image: x\n    port: 6901\n    pullPolicy: ${policy}\n`));
    t.equal(loadCatalog(file).get('bad')?.pullPolicy, policy, `swarm with pullPolicy ${policy}`);
  }
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
  const route = { path: 'a', desktopId: 'd', owner: 'o', shares: [], upstream: up, stripPrefix: true, entryQuery: '', state: 'running' as const };
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
