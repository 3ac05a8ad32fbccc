/**
 * Headless Chromium in a network namespace of its own, reaching some ports of this machine's
 * loopback (`http://127.0.0.1:<port>` or `http://<name>.localhost:<port>`, the same URLs inside and
 * out) through a bridge over Unix sockets.
 *
 * Why: Chromium watches the machine's interfaces and aborts loads and connections with
 * ERR_NETWORK_CHANGED whenever one appears or goes, and Docker adds a veth interface for every
 * container it starts. A browser on a user's machine never sees the server's containers start; a
 * browser on the same machine as Docker tests starting containers does: a page load fails (the
 * Docker tests' openNoVnc retries those), and an open WebSocket is cut (1006), which no retry can
 * undo for a test that holds one for a minute, nor for a timing. In a namespace with only its
 * loopback, Chromium sees no change.
 *
 * How: `unshare --net` runs a script that brings up the namespace's loopback, starts a small
 * forwarder there (127.0.0.1:<port> and [::1]:<port> → a Unix socket per port; file-system
 * sockets cross namespaces) and execs Chromium; playwright drives it over its pipe as usual. This
 * process listens on the Unix sockets and connects each stream to 127.0.0.1:<port> on the host.
 * The forwarder exits when Chromium does; the namespace goes with them.
 */
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import net, { type Server } from 'node:net';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { chromiumPath, launchChromium } from './docker-browser.ts';

const FORWARDER = `import fs from 'node:fs';
import net from 'node:net';
const [dir, ready, ...ports] = process.argv.slice(2);
const parent = process.ppid;
let listening = 0;
for (const port of ports) {
  for (const host of ['127.0.0.1', '::1']) {
    const server = net.createServer((client) => {
      const bridge = net.connect(dir + '/bridge-' + port + '.sock');
      const end = () => { client.destroy(); bridge.destroy(); };
      for (const s of [client, bridge]) { s.on('error', end); s.on('close', end); }
      client.pipe(bridge).pipe(client);
    });
    const done = () => { if (++listening === ports.length * 2) fs.writeFileSync(ready, ''); };
    server.on('error', done); // no IPv6 in the namespace: 127.0.0.1 only
    server.listen(Number(port), host, done);
  }
}
// Chromium is the parent (the script exec'd it): once it is gone, so is this.
setInterval(() => { if (process.ppid !== parent) process.exit(0); }, 500);
`;

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

export interface IsolatedBrowser {
  browser: Browser;
  close(): Promise<void>;
}

export async function launchIsolatedChromium(dir: string, ports: number[]): Promise<IsolatedBrowser> {
  const ready = path.join(dir, 'browser-bridge.ready');
  const forwarder = path.join(dir, 'browser-bridge.mjs');
  const inner = path.join(dir, 'chromium-in-netns.sh');
  const outer = path.join(dir, 'chromium-netns.sh');
  writeFileSync(forwarder, FORWARDER);
  writeFileSync(
    inner,
    [
      '#!/bin/sh',
      'set -e',
      'ip link set lo up',
      `rm -f ${quote(ready)}`,
      // Not Chromium's pipe to playwright (fds 3 and 4): the forwarder must not hold it open.
      `${quote(process.execPath)} ${quote(forwarder)} ${quote(dir)} ${quote(ready)} ${ports.join(' ')} 3>&- 4>&- &`,
      'i=0',
      `while [ ! -e ${quote(ready)} ]; do i=$((i + 1)); if [ "$i" -gt 500 ]; then echo "browser bridge did not start" >&2; exit 1; fi; sleep 0.02; done`,
      `exec ${quote(chromiumPath)} "$@"`,
      '',
    ].join('\n'),
  );
  writeFileSync(outer, `#!/bin/sh\nexec unshare --net ${quote(inner)} "$@"\n`);
  chmodSync(inner, 0o755);
  chmodSync(outer, 0o755);

  const servers: Server[] = [];
  const closeServers = () => Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  try {
    for (const port of ports) {
      const server = net.createServer((client) => {
        const upstream = net.connect({ host: '127.0.0.1', port });
        const end = () => {
          client.destroy();
          upstream.destroy();
        };
        for (const s of [client, upstream]) {
          s.on('error', end);
          s.on('close', end);
        }
        client.pipe(upstream).pipe(client);
      });
      const sock = path.join(dir, `bridge-${port}.sock`);
      rmSync(sock, { force: true });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(sock, () => resolve());
      });
      servers.push(server);
    }
    const browser = await launchChromium(outer);
    return {
      browser,
      close: async () => {
        await browser.close().catch(() => {});
        await closeServers();
      },
    };
  } catch (err) {
    await closeServers();
    throw err;
  }
}
