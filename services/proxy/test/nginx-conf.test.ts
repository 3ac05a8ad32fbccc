/**
 * The shipped deploy/nginx/deskhub.conf loads: `nginx -t` on the nginx this machine has (what
 * scripts/ensure-services.sh installs: Debian 12's nginx-light 1.22.1), through a temporary
 * nginx.conf that includes it as conf.d would, with a self-signed certificate made here in place
 * of the two certificate paths. Skipped, saying why, only when there is no nginx binary. The file
 * run for real, TLS in front of two replicas: deploy/test/deploy-tls.test.ts.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { makeSelfSignedCertificate } from '@deskhub/demo-desktop';
import { findNginx, nginxArgs, nginxMainConf, occurrences, replaceEachOnce, runNginx, shippedNginxConf } from '@deskhub/testkit/nginx';

const nginx = findNginx();

t.test('deploy/nginx/deskhub.conf passes nginx -t', { skip: nginx === null ? 'no nginx binary ($NGINX, PATH, /usr/sbin, /usr/local)' : false }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'deskhub-nginx-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { key, cert } = await makeSelfSignedCertificate('desktops.example.com');
  await writeFile(join(dir, 'fullchain.pem'), cert);
  await writeFile(join(dir, 'privkey.pem'), key, { mode: 0o600 });

  const text = await readFile(shippedNginxConf, 'utf8');
  for (const path of ['/etc/ssl/deskhub/fullchain.pem', '/etc/ssl/deskhub/privkey.pem']) {
    t.equal(occurrences(text, path), 1, `the shipped file names ${path} once (replaced by the test's certificate)`);
  }
  const conf = replaceEachOnce(text, [
    ['/etc/ssl/deskhub/fullchain.pem', join(dir, 'fullchain.pem')],
    ['/etc/ssl/deskhub/privkey.pem', join(dir, 'privkey.pem')],
  ]);
  await writeFile(join(dir, 'deskhub.conf'), conf);
  // As /etc/nginx/nginx.conf would have it (the shipped file goes inside http), with
  // worker_shutdown_timeout in the main context as the shipped file's comment suggests, and
  // everything nginx writes kept in the temporary directory.
  await writeFile(join(dir, 'nginx.conf'), nginxMainConf({ dir, site: join(dir, 'deskhub.conf'), main: ['worker_shutdown_timeout 1h;'] }));

  const version = await runNginx(nginx!, ['-v']);
  t.comment(version.output.trim());
  const tested = await runNginx(nginx!, ['-t', ...nginxArgs(dir)]);
  t.equal(tested.code, 0, `nginx -t: ${tested.output.trim()}`);
  t.match(tested.output, /test is successful/);

  // What a rolling restart relies on (README "Deploy"), as the file says it.
  t.match(text, /^\s*listen 443 ssl http2;/m, 'HTTP/2 towards browsers in the form nginx 1.22 knows');
  t.match(text, /^\s*proxy_next_upstream error timeout http_502 http_503;/m, 'another replica on a refused connection, a timeout, a 502 or a 503');
  t.match(text, /^\s*proxy_next_upstream_tries \d+;/m);
  t.match(text, /^\s*keepalive \d+;/m, 'keep-alive connections to the replicas');
  const idle = /^\s*keepalive_timeout (\d+)s;/m.exec(text);
  t.ok(idle !== null && Number(idle[1]) < 30, "nginx drops idle replica connections before the proxy's default 30 s drain ends");
  const servers = [...text.matchAll(/^\s*#?\s*server 127\.0\.0\.1:\d+([^;]*);/gm)];
  t.ok(servers.length > 0 && servers.every((s) => /\bmax_fails=0\b/.test(s[1]!)), 'every replica line, the example too, says max_fails=0 (no replica taken out of rotation: no "no live upstreams" during a rolling restart)');
});
