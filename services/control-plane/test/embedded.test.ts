/**
 * `pnpm start` as a user runs it (src/embedded.ts in a child process, the shipped catalog):
 * it prints where to go, the demo desktop works through the public port, Ctrl-C stops
 * everything including the desktop process; bad settings stop it with a message naming them.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { freePort } from '@deskhub/testkit/net';
import path from 'node:path';
import { pidAlive, processRecords, repoRoot, tempDir, waitFor, type DesktopJson } from './helpers.ts';

const entry = path.join(repoRoot, 'services/control-plane/src/embedded.ts');


function run(env: NodeJS.ProcessEnv): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, ['--import', 'tsx', entry], { cwd: repoRoot, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

t.test('pnpm start: one process, the demo desktop through the public port, Ctrl-C stops everything', async (t) => {
  const { dir, cleanup } = tempDir('embedded-cli');
  const port = await freePort();
  const dataDir = path.join(dir, 'data');
  const deskhub = run({ PORT: String(port), DATA_DIR: dataDir, RUNTIME: 'process', METRICS_PORT: '0', PROXY_METRICS_PORT: '0', LOG_LEVEL: 'warn' });
  let exitCode: number | null | undefined;
  void deskhub.exited.then((code) => (exitCode = code));
  t.teardown(() => {
    if (exitCode === undefined) deskhub.child.kill('SIGKILL');
    for (const record of processRecords(dataDir)) if (record.pid && pidAlive(record.pid)) process.kill(-record.pid, 'SIGKILL');
    cleanup();
  });

  const base = `http://127.0.0.1:${port}`;
  await waitFor('the start banner', () => (deskhub.output().includes('Press Ctrl-C') ? true : undefined), 180_000, 200);
  const banner = deskhub.output();
  t.match(banner, new RegExp(`Open\\s+${base}/`), 'prints the URL to open');
  t.match(banner, /dev-login/, 'says how to sign in');
  t.match(banner, /Can run\s+.*demo/, 'the shipped demo type can run here');

  t.equal((await fetch(`${base}/readyz`)).status, 200);
  t.equal((await fetch(`${base}/api/docs/`)).status, 200, 'API docs on the public port');
  t.equal((await fetch(`${base}/metrics`)).status, 404, 'metrics are not on the public port');

  const login = await fetch(`${base}/auth/dev-login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice' }) });
  const cookie = login.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const created = (await (await fetch(`${base}/api/desktops`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'demo' }) })).json()) as DesktopJson;
  t.equal(created.url, `${base}/desktop/alice-demo/?path=desktop/alice-demo/websockify&idle_disconnect=10080&reconnect=true`);
  const desktop = await waitFor(
    'the demo desktop to run',
    async () => {
      const d = (await (await fetch(`${base}/api/desktops/${created.id}`, { headers: { cookie } })).json()) as DesktopJson;
      if (d.state === 'failed') throw new Error(`failed: ${d.reason}`);
      return d.state === 'running' ? d : undefined;
    },
    120_000,
    250,
  );
  const page = await fetch(desktop.url, { headers: { cookie } });
  t.equal(page.status, 200);
  t.match(await page.text(), /Demo desktop <span id="name">alice-demo/);
  const pid = processRecords(dataDir).find((r) => r.desktopId === created.id)?.pid;
  t.ok(pid && pidAlive(pid), 'the demo desktop process runs');

  deskhub.child.kill('SIGINT');
  const code = await Promise.race([deskhub.exited, new Promise<string>((resolve) => setTimeout(() => resolve('timeout'), 60_000))]);
  t.equal(code, 0, 'exits cleanly on Ctrl-C');
  t.notOk(pidAlive(pid!), 'the desktop process stopped with it');
});

t.test('pnpm start refuses bad settings with a message naming them', async (t) => {
  const { dir, cleanup } = tempDir('embedded-bad');
  t.teardown(cleanup);
  const cases: [NodeJS.ProcessEnv, RegExp][] = [
    [{ PUBLIC_URL: 'https://desktops.example.com' }, /configuration error: AUTH_MODE: dev sign-in .* loopback/],
    [{ PORT: 'http' }, /configuration error: PORT: expected a whole number/],
    [{ CATALOG: path.join(dir, 'missing.yaml') }, /configuration error: CATALOG: cannot read/],
  ];
  for (const [env, message] of cases) {
    const deskhub = run({ DATA_DIR: path.join(dir, 'data'), METRICS_PORT: '0', PROXY_METRICS_PORT: '0', ...env });
    const code = await Promise.race([deskhub.exited, new Promise<string>((resolve) => setTimeout(() => resolve('timeout'), 60_000))]);
    if (code === 'timeout') deskhub.child.kill('SIGKILL');
    t.equal(code, 2, JSON.stringify(env));
    t.match(deskhub.output(), message);
    t.notMatch(deskhub.output(), /\n\s+at /, 'no stack trace');
  }
});
