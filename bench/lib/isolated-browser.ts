/**
 * Headless Chromium in a network namespace of its own, reaching one address of this machine
 * (`http://127.0.0.1:<port>`, the same URL inside and out) through a bridge over a Unix socket.
 *
 * Why: Chromium watches the machine's interfaces and aborts loads and connections with
 * ERR_NETWORK_CHANGED whenever one appears or goes, and Docker adds a veth interface for every
 * container it starts. A browser on a user's machine never sees the server's containers start; a
 * browser on the same machine as a warm pool refilling itself does (the Docker tests ride it out
 * with retries: services/control-plane/test/docker-browser.ts), and a measurement must not. In a
 * namespace with only its loopback, Chromium sees no change.
 *
 * How: `unshare --net` runs a script that brings up the namespace's loopback, starts a small
 * forwarder there (127.0.0.1:<port> → the Unix socket; file-system sockets cross namespaces) and
 * execs Chromium; playwright drives it over its pipe as usual. The harness listens on the Unix
 * socket and connects each stream to 127.0.0.1:<port> on the host. The forwarder exits when
 * Chromium does; the namespace goes with them.
 */
import { chmodSync, writeFileSync } from 'node:fs';
import net, { type Server } from 'node:net';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { chromiumPath, launchChromium } from '../../services/control-plane/test/docker-browser.ts';

const FORWARDER = `import fs from 'node:fs';
import net from 'node:net';
const [sock, port, ready] = process.argv.slice(2);
const parent = process.ppid;
net.createServer((client) => {
  const bridge = net.connect(sock);
  const end = () => { client.destroy(); bridge.destroy(); };
  for (const s of [client, bridge]) { s.on('error', end); s.on('close', end); }
  client.pipe(bridge).pipe(client);
}).listen(Number(port), '127.0.0.1', () => fs.writeFileSync(ready, ''));
// Chromium is the parent (the script exec'd it): once it is gone, so is this.
setInterval(() => { if (process.ppid !== parent) process.exit(0); }, 500);
`;

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

export interface IsolatedBrowser {
  browser: Browser;
  close(): Promise<void>;
}

export async function launchIsolatedChromium(dir: string, port: number): Promise<IsolatedBrowser> {
  const sock = path.join(dir, 'browser-bridge.sock');
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
      `${quote(process.execPath)} ${quote(forwarder)} ${quote(sock)} ${port} ${quote(ready)} 3>&- 4>&- &`,
      'i=0',
      `while [ ! -e ${quote(ready)} ]; do i=$((i + 1)); if [ "$i" -gt 500 ]; then echo "browser bridge did not start" >&2; exit 1; fi; sleep 0.02; done`,
      `exec ${quote(chromiumPath)} "$@"`,
      '',
    ].join('\n'),
  );
  writeFileSync(outer, `#!/bin/sh\nexec unshare --net ${quote(inner)} "$@"\n`);
  chmodSync(inner, 0o755);
  chmodSync(outer, 0o755);

  const server: Server = net.createServer((client) => {
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
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(sock, () => resolve());
  });
  const closeServer = () => new Promise<void>((resolve) => server.close(() => resolve()));
  try {
    const browser = await launchChromium(outer);
    return {
      browser,
      close: async () => {
        await browser.close().catch(() => {});
        await closeServer();
      },
    };
  } catch (err) {
    await closeServer();
    throw err;
  }
}
