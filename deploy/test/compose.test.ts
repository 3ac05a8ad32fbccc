// docker-compose.yml for real, with Debian's docker-compose 1.29 (scripts/ensure-services.sh
// installs it) and the images build.sh makes without a registry: `docker-compose config` on the
// production defaults, then the stack brought up under a project name, an installation label,
// a desktop network and host ports of this test's own, a third proxy replica added by an
// override file as deploy/README.md says, and the newcomer's flow through the public port: dev
// sign-in, the kasm-test desktop launched through the API, its page and a WebSocket echo
// through every replica, what the desktop cannot reach (Postgres, Redis, the control plane, the
// host), delete, `docker-compose down -v`. Everything the test made
// (containers, volumes, networks, desktops, the host guard's rule) is removed even on failure.
import t from 'tap';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { apiCall, buildImage, connectFrom, devSignIn, freePort, randomId, repoRoot, testRuntime } from '../../services/control-plane/test/docker-helpers.ts';
import { waitFor } from '../../services/control-plane/test/helpers.ts';
import { hostGuardInstalled } from '../../services/control-plane/src/runtime/docker/host-guard.ts';

// Cold image builds (about two minutes on two cores) come first.
t.setTimeout(900_000);

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command in the repository root; never throws, the exit code says how it went. */
function run(command: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 180_000): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd: repoRoot, env, timeout: timeoutMs, maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) + (err && typeof err.code !== 'number' ? `\n${err.message}` : '') });
    });
  });
}

await buildImage('kasm-test');
await buildImage('stack');

const id = randomId();
const project = `deskhubcompose${id}`;
const instance = `t-${id}`;
const network = `deskhub-test-${id}`;
const dir = mkdtempSync(join(tmpdir(), 'deskhub-compose-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

// The shipped catalog (its kasm-test type is the one launched), mounted from a copy of this
// test's own through DESKHUB_CATALOG.
const catalog = join(dir, 'catalog.yaml');
copyFileSync(join(repoRoot, 'services/control-plane/catalog.yaml'), catalog);
// No sign-in providers: dev sign-in.
const providers = join(dir, 'deskhub.env');
writeFileSync(providers, '');

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const secrets = {
  POSTGRES_PASSWORD: randomBytes(24).toString('hex'),
  SECRET_KEY: randomBytes(32).toString('base64'),
  ACCESS_TOKEN_KEY: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  ACCESS_TOKEN_PUBLIC_KEYS: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  DESKHUB_ENV_FILE: providers,
};

/**
 * The settings as an env file for compose's ${...}, written as deploy/README.md says to write
 * `.env` (a PEM key on one line, its newlines as \n); passed with --env-file, so a .env beside
 * docker-compose.yml on this machine changes nothing here.
 */
let envFiles = 0;
function envFile(settings: Record<string, string>): string {
  const file = join(dir, `compose-${++envFiles}.env`);
  writeFileSync(file, Object.entries(settings).map(([key, value]) => `${key}=${value.trim().replace(/\n/g, '\\n')}\n`).join(''), { mode: 0o600 });
  return file;
}
// Only what compose needs from this process's environment: nothing else reaches its ${...}.
const base: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, ...(process.env.DOCKER_HOST ? { DOCKER_HOST: process.env.DOCKER_HOST } : {}) };
/** docker-compose with the settings file, named compose files (none other: no override file of this machine's) and args. */
const compose = (settings: string, files: string[], ...args: string[]) =>
  run('docker-compose', ['--env-file', settings, '-p', project, ...files.flatMap((file) => ['-f', file]), ...args], base);
const composeFile = join(repoRoot, 'docker-compose.yml');

// A third replica, added the way deploy/README.md says ("Add a replica"), but with the main
// file named by its full path (this override lives in a temporary folder).
const override = join(dir, 'docker-compose.override.yml');
writeFileSync(
  override,
  `services:
  proxy-c:
    extends: { file: ${composeFile}, service: proxy-b }
    environment:
      PORT: \${PROXY_C_PORT:-8083}
      METRICS_PORT: \${PROXY_C_METRICS_PORT:-9093}
    healthcheck:
      test: ["CMD", "node", "-e", "fetch('http://127.0.0.1:\${PROXY_C_METRICS_PORT:-9093}/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
`,
);

t.test('docker-compose config: valid, the production defaults, a missing secret named', async (t) => {
  const production = { ...secrets, PUBLIC_URL: 'https://desktops.example.com' };
  const config = await compose(envFile(production), [composeFile], 'config');
  t.equal(config.code, 0, `docker-compose config: ${config.stderr}`);
  const out = config.stdout;
  for (const [what, pattern] of [
    ['proxy-a on 8080', /PORT: '8080'/],
    ['proxy-b on 8082', /PORT: '8082'/],
    ['the control plane on 8081', /PORT: '8081'/],
    ['Postgres on the loopback 5432', /127\.0\.0\.1:5432:5432/],
    ['Redis on the loopback 6379', /127\.0\.0\.1:6379:6379/],
    ['sign-in through providers', /AUTH_MODE: oidc/],
  ] as const) {
    t.match(out, pattern, what);
  }
  // Docker's SIGKILL must come after a proxy's drain (DRAIN_TIMEOUT_S + about 6 s).
  const drains = [...out.matchAll(/DRAIN_TIMEOUT_S: '(\d+)'/g)].map((m) => Number(m[1]));
  const graces = [...out.matchAll(/stop_grace_period: (\d+)s/g)].map((m) => Number(m[1]));
  t.equal(drains.length, 2, 'two proxies with a drain time');
  t.ok(drains.every((d) => graces.length >= 3 && Math.min(...graces) > d + 10), `stop_grace_period (${graces.join(', ')} s) exceeds every drain (${drains.join(', ')} s) by more than 10 s`);

  const { SECRET_KEY: _, ...withoutSecretKey } = production;
  const missing = await compose(envFile(withoutSecretKey), [composeFile], 'config');
  t.not(missing.code, 0, 'a missing SECRET_KEY stops compose');
  t.match(missing.stderr, /set SECRET_KEY/, `the message names the setting: ${missing.stderr.trim().split('\n').pop()}`);
});

t.test('the newcomer flow against the compose stack', async (t) => {
  const ports = {
    POSTGRES_PORT: await freePort(),
    REDIS_PORT: await freePort(),
    CONTROL_PLANE_PORT: await freePort(),
    CONTROL_PLANE_METRICS_PORT: await freePort(),
    PROXY_A_PORT: await freePort(),
    PROXY_A_METRICS_PORT: await freePort(),
    PROXY_B_PORT: await freePort(),
    PROXY_B_METRICS_PORT: await freePort(),
    PROXY_C_PORT: await freePort(),
    PROXY_C_METRICS_PORT: await freePort(),
  };
  const publicUrl = `http://127.0.0.1:${ports.PROXY_A_PORT}`;
  const settings = envFile({
    ...secrets,
    ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])),
    // A loopback PUBLIC_URL allows dev sign-in, as a newcomer trying deskhub on their machine.
    PUBLIC_URL: publicUrl,
    AUTH_MODE: 'dev',
    DESKHUB_CATALOG: catalog,
    DESKHUB_INSTANCE: instance,
    DOCKER_NETWORK: network,
    DRAIN_TIMEOUT_S: '5',
  });
  const stack = (...args: string[]) => compose(settings, [composeFile, override], ...args);

  // What deskhub made outside compose (desktops, their network, the host guard's rule) and
  // compose's own, removed whatever happens; compose's logs first when something failed.
  const { runtime, cleanup } = testRuntime({ instance, networkName: network });
  let diagnosed = false;
  const diagnose = async () => {
    if (t.passing() || diagnosed) return;
    diagnosed = true;
    const logs = await stack('logs', '--no-color', '--tail', '60');
    t.comment(`docker-compose logs:\n${logs.stdout}${logs.stderr}`);
  };
  t.teardown(async () => {
    await diagnose();
    const down = await stack('down', '-v', '--remove-orphans', '--timeout', '20');
    if (down.code !== 0) t.comment(`docker-compose down: ${down.stderr}`);
    await cleanup();
  });

  const started = Date.now();
  const up = await stack('up', '-d', '--no-build');
  t.equal(up.code, 0, up.code === 0 ? 'docker-compose up -d' : `docker-compose up -d: ${up.stderr}`);
  if (up.code !== 0) return;

  const containers = (await stack('ps', '-q')).stdout.split('\n').filter(Boolean);
  t.equal(containers.length, 6, 'postgres, redis, the control plane, two proxies and the one the override file adds');
  const health = async () => (await run('docker', ['inspect', '-f', '{{.Name}} {{.State.Health.Status}}', ...containers], base)).stdout.trim().split('\n');
  const healthy = await waitFor('every service healthy', async () => {
    const states = await health();
    return states.every((s) => s.endsWith(' healthy')) ? states : undefined;
  }, 180_000, 1000).catch(async (err: Error) => {
    throw new Error(`${err.message}: ${(await health()).join(', ')}`);
  });
  t.equal(healthy.length, 6, `healthy: ${healthy.join(', ')}`);
  t.comment(`docker-compose up -d: every service healthy ${((Date.now() - started) / 1000).toFixed(1)} s after the command`);

  // Signing in through the public port (proxy A), as the sign-in page does.
  const cookie = await devSignIn(publicUrl, 'newcomer');
  t.match(cookie, /deskhub_session=/, 'dev sign-in through the proxy: a session');
  t.match(cookie, /deskhub_access=/, 'and a desktop access token');
  const api = <T>(method: string, path: string, body?: unknown) => apiCall<T>(publicUrl, cookie, method, path, body);
  t.match((await api<{ username: string }>('GET', '/api/me')).body, { username: 'newcomer' });
  const types = (await api<Array<{ id: string; available: boolean; reason?: string }>>('GET', '/api/catalog')).body;
  const kasmTest = types.find((type) => type.id === 'kasm-test');
  t.match(kasmTest, { available: true }, `the mounted catalog's kasm-test type is available: ${JSON.stringify(kasmTest)}`);

  interface DesktopView {
    id: string;
    proxyPath: string;
    url: string;
    state: string;
    reason: string | null;
  }
  const created = await api<DesktopView>('POST', '/api/desktops', { type: 'kasm-test' });
  t.equal(created.status, 201, JSON.stringify(created.body));
  const view = await waitFor('the desktop running or failed', async () => {
    const v = (await api<DesktopView>('GET', `/api/desktops/${created.body.id}`)).body;
    return v.state === 'running' || v.state === 'failed' ? v : undefined;
  }, 120_000, 500);
  t.equal(view.state, 'running', view.reason ?? '');
  t.ok(view.url.startsWith(`${publicUrl}/desktop/newcomer-kasm-test/?path=desktop/newcomer-kasm-test/websockify`), `the desktop's address is on PUBLIC_URL: ${view.url}`);

  // Its page (at the address the API gave, on proxy A's port) and a WebSocket echo, through each
  // replica (the cookie holds for both).
  for (const [replica, port] of [['proxy A', ports.PROXY_A_PORT], ['proxy B', ports.PROXY_B_PORT], ['proxy C (the override file)', ports.PROXY_C_PORT]] as const) {
    const page = await fetch(view.url.replace(publicUrl, `http://127.0.0.1:${port}`), { headers: { cookie } });
    t.equal(page.status, 200, `the desktop's page through ${replica}`);
    t.match(await page.text(), /<h1>Demo desktop/);
    const ws = new WebSocket(`ws://127.0.0.1:${port}/desktop/newcomer-kasm-test/websockify`, ['binary'], { headers: { cookie, origin: publicUrl } });
    const echoed = await new Promise<string>((resolve, reject) => {
      ws.on('open', () => ws.send(`hello through ${replica}`));
      ws.on('message', (data) => resolve(String(data)));
      ws.on('error', reject);
      ws.on('unexpected-response', (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)));
    });
    ws.close();
    t.equal(echoed, `hello through ${replica}`, `a WebSocket echo through ${replica}`);
  }
  const anonymous = await fetch(`${publicUrl}/desktop/newcomer-kasm-test/`, { redirect: 'manual' });
  t.not(anonymous.status, 200, `without the cookie the desktop is not served (${anonymous.status})`);

  // The desktop, on its own bridge, reaches none of deskhub's services.
  const [desktop] = await runtime.list();
  t.ok(desktop?.running, 'the desktop runs as a container of this installation');
  const inspect = async (container: string) =>
    JSON.parse((await run('docker', ['inspect', container], base)).stdout)[0] as { NetworkSettings: { Networks: Record<string, { IPAddress: string; Gateway: string }> } };
  const desktopNet = (await inspect(desktop!.runtimeId)).NetworkSettings.Networks[network]!;
  const serviceIp = async (service: string) => {
    const [container] = (await stack('ps', '-q', service)).stdout.split('\n').filter(Boolean);
    return Object.values((await inspect(container!)).NetworkSettings.Networks)[0]!.IPAddress;
  };
  const probes: Array<[string, string, number]> = [
    ["Postgres's container", await serviceIp('postgres'), 5432],
    ["Redis's container", await serviceIp('redis'), 6379],
    ['the control plane through the bridge gateway', desktopNet.Gateway, ports.CONTROL_PLANE_PORT],
    ["Postgres's published port through the bridge gateway", desktopNet.Gateway, ports.POSTGRES_PORT],
    ['a proxy through the bridge gateway', desktopNet.Gateway, ports.PROXY_A_PORT],
  ];
  const reached = await Promise.all(probes.map(([, host, port]) => connectFrom(runtime.docker, desktop!.runtimeId, host, port, 2000)));
  probes.forEach(([what, host, port], i) => t.not(reached[i], 'connected', `the desktop cannot reach ${what} (${host}:${port}): ${reached[i]}`));
  t.equal(await connectFrom(runtime.docker, desktop!.runtimeId, desktopNet.IPAddress, 6901), 'connected', 'the probe itself works (the desktop reaches its own port)');
  const bridge = `br-${(JSON.parse((await run('docker', ['network', 'inspect', network], base)).stdout)[0] as { Id: string }).Id.slice(0, 12)}`;
  t.ok(await hostGuardInstalled(bridge), `the control plane, in its container, installed the host guard on ${bridge}`);

  t.equal((await api('DELETE', `/api/desktops/${created.body.id}`)).status, 204, 'deleted');
  await waitFor('the desktop container to go', async () => ((await runtime.list()).length === 0 ? true : undefined), 30_000, 250);

  await diagnose();
  const down = await stack('down', '-v');
  t.equal(down.code, 0, down.code === 0 ? 'docker-compose down -v' : `docker-compose down -v: ${down.stderr}`);
  const left = await run('docker', ['ps', '-aq', '--filter', `label=com.docker.compose.project=${project}`], base);
  t.equal(left.stdout.trim(), '', "no container of the project is left");
  const volumes = await run('docker', ['volume', 'ls', '-q', '--filter', `label=com.docker.compose.project=${project}`], base);
  t.equal(volumes.stdout.trim(), '', 'its volume is gone');
  t.same(await runtime.list(), [], 'no desktop container is left');
});
