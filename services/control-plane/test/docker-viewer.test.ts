// The desktop image's second user, checked at the container with a real RFB client: kasm_viewer
// signs in with the owner's password like in Kasm images, sees the screen, but its keys and
// clicks change nothing; the owner's do. The observable is the xterm's shell: whatever is typed
// there followed by Return runs, so "touch <file>" typed as a user leaves <file> in the home
// folder only if that user's keys reached the desktop. Also: the owner API (/api/) is the
// owner's, the web folder (with the owner's Downloads, as in Kasm images) is both users', and
// the view-only VNC server dying ends the container like any other part.
import t from 'tap';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import WebSocket from 'ws';
import { startRfb, type RfbSession } from '@deskhub/testkit/rfb';
import { basicAuth, desktopDiagnostics, execIn, httpsGet, startDesktopImage } from './docker-helpers.ts';

const { runtime, desktop, password, host, port } = await startDesktopImage(t);
const id = desktop.runtimeId;
const owner = basicAuth(password);
const viewer = basicAuth(password, 'kasm_viewer');

function webSocket(auth: string, createConnection?: () => TLSSocket): WebSocket {
  return new WebSocket(`wss://${host}:${port}/websockify`, ['binary'], {
    rejectUnauthorized: false,
    headers: { authorization: auth },
    origin: `https://${host}:${port}`,
    ...(createConnection ? { createConnection } : {}),
  });
}

/** An RFB session; the VNC servers may still be starting just after HTTPS answers. */
async function rfb(auth: string): Promise<RfbSession> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRfb(webSocket(auth));
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** The files in the desktop's home folder whose names start with "typed-". */
async function typedFiles(): Promise<string[]> {
  const out = await execIn(runtime.docker, id, ['sh', '-c', 'cd "$HOME" && ls -1 | grep "^typed-" || true']);
  return out.split('\n').map((l) => l.trim()).filter(Boolean).sort();
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number, every?: () => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms\n${await desktopDiagnostics(runtime.docker, id)}`);
    every?.();
    await new Promise((r) => setTimeout(r, 1000));
  }
}

t.test('two users, one password; the API is the owner\'s, the web folder both users\'', async (t) => {
  t.equal((await httpsGet(host, port, '/')).status, 401, 'no credentials: 401');
  t.equal((await httpsGet(host, port, '/', basicAuth('wrong-password', 'kasm_viewer'))).status, 401, 'kasm_viewer, wrong password: 401');
  const stranger = await httpsGet(host, port, '/', basicAuth(password, 'someone'));
  t.equal(stranger.status, 401, 'another user name with the right password: 401');
  t.match(stranger.headers['www-authenticate'], /^Basic/);
  for (const [name, auth] of [['kasm_user', owner], ['kasm_viewer', viewer]] as const) {
    const page = await httpsGet(host, port, '/', auth);
    t.equal(page.status, 200, `${name}: the noVNC page`);
    t.match(page.body, /noVNC/);
  }

  const api = await httpsGet(host, port, '/api/get_screenshot', owner);
  t.equal(api.status, 200, 'kasm_user: /api/ answers');
  t.match(JSON.parse(api.body), { user: 'kasm_user', api: '/api/get_screenshot' });
  for (const path of ['/api/get_screenshot', '/api/create_user', '//api/x', '/%61pi/x', '/./api/x']) {
    const refused = await httpsGet(host, port, path, viewer);
    t.equal(refused.status, 403, `kasm_viewer: ${path} refused`);
  }

  await execIn(runtime.docker, id, ['sh', '-c', 'echo "the owner\'s file" > "$HOME/Downloads/report.txt"']);
  const download = await httpsGet(host, port, '/Downloads/Downloads/report.txt', viewer);
  t.equal(download.status, 200, "kasm_viewer fetches the owner's ~/Downloads/report.txt, as in Kasm images");
  t.equal(download.body, "the owner's file\n");
});

t.test("the viewer sees the desktop, and its keys and clicks change nothing; the owner's do", async (t) => {
  const o = await rfb(owner);
  t.teardown(() => o.close());
  const v = await rfb(viewer);
  t.teardown(() => v.close());
  t.equal(v.version, 'RFB 003.008\n', "the viewer's first frame is the RFB version");
  t.equal(o.name, 'deskhub desktop', 'kasm_user reached the read-write VNC server');
  t.equal(v.name, 'deskhub desktop (view only)', 'kasm_viewer reached the view-only VNC server');
  t.same([v.width, v.height], [o.width, o.height], 'the same screen');
  await v.update(0, 0, 32, 32);
  t.pass('the viewer receives screen updates');

  // The xterm (at 40,40) must have the focus and its shell be ready: the owner clicks into it
  // and types until the first command has run.
  const xterm = { x: 300, y: 200 };
  await until('the owner\'s "touch typed-by-owner-1"', async () => (await typedFiles()).includes('typed-by-owner-1'), 30_000, () => {
    o.click(xterm.x, xterm.y);
    o.type('touch typed-by-owner-1\n');
  });

  // The viewer clicks (on the xterm, and on the desktop beside it) and types a command of its own.
  v.click(1100, 650);
  v.click(xterm.x, xterm.y);
  v.type('touch typed-by-viewer\n');
  await new Promise((r) => setTimeout(r, 1500));
  // The owner types again, without clicking: the xterm still has the focus, and the owner's
  // line runs only if nothing the viewer sent is mixed into it.
  o.type('touch typed-by-owner-2\n');
  await until('the owner\'s "touch typed-by-owner-2"', async () => (await typedFiles()).includes('typed-by-owner-2'), 15_000);
  t.same(await typedFiles(), ['typed-by-owner-1', 'typed-by-owner-2'], 'only the owner\'s commands ran');
});

t.test('one kept-alive connection: each request gets the user it authenticated', async (t) => {
  // A GET as one user, then the WebSocket upgrade as the other on the same TLS connection: the
  // upgrade reaches the second user's VNC server (websockify keeps a connection in one process).
  for (const [first, second, expected] of [
    [owner, viewer, 'deskhub desktop (view only)'],
    [viewer, owner, 'deskhub desktop'],
  ] as const) {
    const socket = tlsConnect({ host, port, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    socket.write(`GET /vnc.html HTTP/1.1\r\nHost: ${host}:${port}\r\nAuthorization: ${first}\r\n\r\n`);
    await new Promise<void>((resolve, reject) => {
      let head = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        const length = Number(/content-length: *(\d+)/i.exec(head.subarray(0, end).toString())?.[1] ?? NaN);
        if (!/^HTTP\/1\.1 200/.test(head.toString('latin1'))) return reject(new Error(`GET answered ${head.subarray(0, end).toString()}`));
        if (head.length >= end + 4 + length) {
          socket.off('data', onData);
          if (head.length > end + 4 + length) return reject(new Error('more than one response'));
          resolve();
        }
      };
      socket.on('data', onData);
      socket.once('error', reject);
    });
    t.notOk(socket.destroyed, 'the connection is kept alive after the GET');
    const session = await startRfb(webSocket(second, () => socket));
    t.equal(session.name, expected, `then the upgrade reached "${expected}"`);
    session.close();
  }
});

t.test('the view-only VNC server dying ends the container', async (t) => {
  await execIn(runtime.docker, id, ['sh', '-c', 'kill $(ps -eo pid=,args= | awk \'/x11vnc .*-rfbport 5902/ && !/awk/ {print $1}\')']);
  await until('the container to exit', async () => (await runtime.inspect(id))?.running === false, 15_000);
  t.pass('the container exited');
  await runtime.remove(id);
});
