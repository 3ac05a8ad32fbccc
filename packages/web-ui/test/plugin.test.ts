/**
 * The serving plugin against a real Vite build in a temporary folder: index.html with its CSP on
 * every UI route, hashed assets cached forever and compressed, nothing served for the control
 * plane's own paths, and the build-or-explain behaviour when dist/ is missing or stale.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import Fastify from 'fastify';
import t from 'tap';
import { readStamp } from '../src/build.ts';
import { BUILD_COMMAND, CONTENT_SECURITY_POLICY, webUi } from '../src/index.ts';

const root = await mkdtemp(join(tmpdir(), 'deskhub-web-ui-'));
t.teardown(() => rm(root, { recursive: true, force: true }));
const distDir = join(root, 'dist');

async function appWith(options: Parameters<typeof webUi>[1]) {
  const app = Fastify({ logger: false });
  // A control-plane route beside the UI, to show the plugin leaves other paths alone.
  app.get('/api/me', async (_req, reply) => reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'sign in' }));
  await app.register(webUi, options);
  await app.ready();
  return app;
}

t.test('refuses to start without a build when told not to build, naming the command', async (t) => {
  const app = Fastify({ logger: false });
  app.register(webUi, { distDir: join(root, 'nowhere'), build: 'never' });
  await t.rejects(async () => {
    await app.ready();
  }, { message: new RegExp(BUILD_COMMAND.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) });
  await app.close();
});

t.test('builds a missing dist at registration and serves it', async (t) => {
  const app = await appWith({ distDir, build: 'if-missing' });
  t.teardown(() => app.close());
  const stamp = await readStamp(distDir);
  t.ok(stamp, 'the build left its stamp');
  // A budget, not a speed: the whole first load (HTML, JS, CSS) stays small over a slow link.
  t.ok(stamp!.firstLoad.gzip > 1000 && stamp!.firstLoad.gzip < 40 * 1024, `first load is ${stamp!.firstLoad.gzip} bytes gzipped`);

  const home = await app.inject({ method: 'GET', url: '/' });
  t.equal(home.statusCode, 200);
  t.match(home.headers['content-type'], /^text\/html/);
  t.equal(home.headers['content-security-policy'], CONTENT_SECURITY_POLICY);
  t.equal(home.headers['cache-control'], 'no-cache');
  t.equal(home.headers['x-content-type-options'], 'nosniff');
  t.match(home.body, /<div id="app"><\/div>/);
  t.notMatch(home.body, /<script>(?!<\/script>)/, 'no inline script for the CSP to forbid');

  for (const url of ['/signin?next=%2Fadmin', '/admin', '/tokens', '/homes', '/desktops', '/desktops/0b7d8f0e-1', '/shared/0b7d8f0e-1', '/share/Zm9vYmFyYmF6cXV4cXV1eHh4eHh4eA']) {
    const res = await app.inject({ method: 'GET', url });
    t.equal(res.statusCode, 200, `${url} is a UI route`);
    t.equal(res.body, home.body, `${url} gets index.html`);
    t.equal(res.headers['content-security-policy'], CONTENT_SECURITY_POLICY);
  }

  const api = await app.inject({ method: 'GET', url: '/api/me' });
  t.equal(api.statusCode, 401, 'the control plane keeps its own routes');
  const unknown = await app.inject({ method: 'GET', url: '/api/nothing-here' });
  t.equal(unknown.statusCode, 404);
  t.match(unknown.headers['content-type'], /json/, 'an unknown API path is a JSON 404, not the UI');
  const desktop = await app.inject({ method: 'GET', url: '/desktop/alice-demo/' });
  t.equal(desktop.statusCode, 404, 'desktop paths are never answered with the UI');

  const script = /src="(\/assets\/[^"]+\.js)"/.exec(home.body)?.[1];
  const style = /href="(\/assets\/[^"]+\.css)"/.exec(home.body)?.[1];
  t.ok(script && style, 'index.html links a hashed script and stylesheet');
  const js = await app.inject({ method: 'GET', url: script! });
  t.equal(js.statusCode, 200);
  t.match(js.headers['content-type'], /^text\/javascript/);
  t.equal(js.headers['cache-control'], 'public, max-age=31536000, immutable');
  t.equal(js.headers['content-security-policy'], undefined, 'the policy belongs to documents');
  const onDisk = await readFile(join(distDir, script!.slice(1)));
  t.same(Buffer.from(js.rawPayload), onDisk, 'uncompressed when the client does not ask');

  const gz = await app.inject({ method: 'GET', url: script!, headers: { 'accept-encoding': 'gzip, deflate' } });
  t.equal(gz.headers['content-encoding'], 'gzip');
  t.equal(gz.headers.vary, 'accept-encoding');
  t.same(gunzipSync(gz.rawPayload), onDisk);
  const br = await app.inject({ method: 'GET', url: style!, headers: { 'accept-encoding': 'gzip, br' } });
  t.equal(br.headers['content-encoding'], 'br');
  t.same(brotliDecompressSync(br.rawPayload), await readFile(join(distDir, style!.slice(1))));
  const refused = await app.inject({ method: 'GET', url: script!, headers: { 'accept-encoding': 'br;q=0, gzip;q=0' } });
  t.equal(refused.headers['content-encoding'], undefined, 'q=0 means no');

  const again = await app.inject({ method: 'GET', url: script!, headers: { 'if-none-match': js.headers.etag as string } });
  t.equal(again.statusCode, 304);
  t.not(gz.headers.etag, js.headers.etag, 'each coding has its own entity tag');
  const againGz = await app.inject({ method: 'GET', url: script!, headers: { 'if-none-match': gz.headers.etag as string, 'accept-encoding': 'gzip' } });
  t.equal(againGz.statusCode, 304);
  const otherCoding = await app.inject({ method: 'GET', url: script!, headers: { 'if-none-match': gz.headers.etag as string } });
  t.equal(otherCoding.statusCode, 200, 'a gzip tag does not validate the identity body');
  const copy = await app.inject({ method: 'GET', url: `${script!}.br` });
  t.equal(copy.statusCode, 404, 'the compressed copies are not addressable themselves');
  const head = await app.inject({ method: 'HEAD', url: '/' });
  t.equal(head.statusCode, 200);
  t.equal(head.headers['content-security-policy'], CONTENT_SECURITY_POLICY);

  const stale = await app.inject({ method: 'GET', url: '/assets/index-OLDBUILD.js' });
  t.equal(stale.statusCode, 404);
  t.match(stale.json(), { statusCode: 404, error: 'Not Found' });
  const stampFile = await app.inject({ method: 'GET', url: '/.deskhub-build.json' });
  t.equal(stampFile.statusCode, 404, 'the build stamp is not served');
  const icon = await app.inject({ method: 'GET', url: '/favicon.svg' });
  t.equal(icon.statusCode, 200);
  t.match(icon.headers['content-type'], /image\/svg\+xml/);
});

t.test('with DESKTOP_ORIGIN the policy frames the desktops\' own origins, and only those', async (t) => {
  for (const bad of ['*', 'https://*', "https://*.x.net 'unsafe-inline'", 'https://*.x.net; script-src *', 'javascript:x']) {
    await t.rejects(appWith({ distDir, build: 'if-missing', frameSources: [bad] }), `refuses ${bad}`);
  }
  const app = await appWith({ distDir, build: 'if-missing', frameSources: ['https://*.desktops.example.net'] });
  t.teardown(() => app.close());
  const home = await app.inject({ method: 'GET', url: '/shared/0b7d8f0e-1' });
  const csp = home.headers['content-security-policy'] as string;
  t.match(csp, /(^|; )frame-src 'self' https:\/\/\*\.desktops\.example\.net(;|$)/, 'frame-src adds the desktop origins');
  t.equal(csp.replace(" https://*.desktops.example.net", ''), CONTENT_SECURITY_POLICY, 'and nothing else changes');
});

t.test('rebuilds a dist built from other sources', async (t) => {
  const stampPath = join(distDir, '.deskhub-build.json');
  const stamp = JSON.parse(await readFile(stampPath, 'utf8')) as { sources: string; builtAt: string };
  await writeFile(stampPath, JSON.stringify({ ...stamp, sources: 'sources-of-an-older-checkout' }));
  const neverApp = await appWith({ distDir, build: 'if-missing' });
  await neverApp.close();
  t.equal((await readStamp(distDir))!.sources, 'sources-of-an-older-checkout', "'if-missing' leaves a present build alone");

  const app = await appWith({ distDir, build: 'if-stale' });
  t.teardown(() => app.close());
  const rebuilt = await readStamp(distDir);
  t.equal(rebuilt!.sources, stamp.sources, 'the stale build was replaced by one of the current sources');
  const home = await app.inject({ method: 'GET', url: '/' });
  t.equal(home.statusCode, 200);
});
