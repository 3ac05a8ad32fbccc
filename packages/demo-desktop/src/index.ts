/**
 * A desktop in miniature that keeps the contract of a KasmVNC container (kasm-contract.md):
 * basic auth on every request and upgrade, HTTPS with a self-signed certificate made at start,
 * a WebSocket on any path (refused without Origin, subprotocol `binary` chosen when offered).
 * The process runtime runs it as the `demo` desktop; tests and benchmarks use it as an upstream.
 *
 * Like Kasm images it has two users with the same password: kasm_user, the owner, and
 * kasm_viewer, who may only watch. Both get the page, `/__echo` and the WebSocket; only the
 * owner gets `/api/...` (KasmVNC's owner API: 403 for the viewer).
 *
 * Besides `/` (a page naming the desktop that opens the WebSocket at `?path=` like noVNC does),
 * it answers `/__echo` with the method, URL, headers and user it received, and streams any
 * request body straight back: what the proxy tests need to see what reached the container.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { timingSafeEqual } from 'node:crypto';
import { posix } from 'node:path';
import selfsigned from 'selfsigned';
import { WebSocketServer, type WebSocket } from 'ws';

export interface DemoDesktopOptions {
  /** Shown on the page. */
  name: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  tls?: boolean;
  /** The owner's Basic auth user name (kasm_user); no auth when password is empty. */
  username?: string;
  /** The view-only user's name (kasm_viewer), with the same password. */
  viewerUsername?: string;
  password?: string;
  /** Kasm refuses a WebSocket without Origin (KasmVNC #205); so does this, unless false. */
  requireOrigin?: boolean;
}

export interface DemoDesktop {
  server: Server;
  port: number;
  url: string;
  close(): Promise<void>;
}

/**
 * A self-signed certificate for `commonName` (subjectAltName: that name, and 127.0.0.1 for
 * localhost). `organization` tells two certificates of one name apart: a client trusting both
 * finds the one that signed by its subject, so two with the same subject would be confused
 * (no commas in it: they are lost on the way into the certificate's name).
 */
export async function makeSelfSignedCertificate(commonName = 'localhost', organization?: string): Promise<{ key: string; cert: string }> {
  const subject = [{ name: 'commonName', value: commonName }, ...(organization ? [{ name: 'organizationName', value: organization }] : [])];
  const pems = await selfsigned.generate(subject, {
    keyType: 'ec',
    algorithm: 'sha256',
    notAfterDate: new Date(Date.now() + 30 * 24 * 3600 * 1000),
  });
  return { key: pems.private, cert: pems.cert };
}

/** Who a request is: a user's name, '' when the desktop has no password, null when refused. */
type Authenticate = (header: string | undefined) => string | null;

function basicAuthenticator(users: string[], password: string): Authenticate {
  if (!password) return () => '';
  const expected = users.map((user) => ({ user, header: Buffer.from('Basic ' + Buffer.from(`${user}:${password}`).toString('base64')) }));
  return (header) => {
    if (!header) return null;
    const given = Buffer.from(header.trim());
    // Both users are always compared (each in constant time): the time taken does not tell which matched.
    let found: string | null = null;
    for (const { user, header: wanted } of expected) {
      if (given.length === wanted.length && timingSafeEqual(given, wanted)) found = user;
    }
    return found;
  };
}

/** KasmVNC's owner API: /api or below, however the path is spelled (//api, /%61pi, /x/../api). */
export function isOwnerApi(rawUrl: string): boolean {
  let path = rawUrl.split(/[?#]/, 1)[0] ?? '';
  try {
    path = decodeURIComponent(path);
  } catch {
    // Not valid percent-encoding: compared as it is.
  }
  const clean = '/' + posix.normalize(path).replace(/^\/+/, '');
  return clean === '/api' || clean.startsWith('/api/');
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(name: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo desktop ${escapeHtml(name)}</title>
<style>body{font:16px system-ui,sans-serif;margin:2rem;background:#1d2a3a;color:#f4f7fa}#status{font-weight:bold}</style>
</head><body>
<h1>Demo desktop <span id="name">${escapeHtml(name)}</span></h1>
<p>Connection: <span id="status" role="status">Connecting...</span></p>
<script>
  // Like the noVNC/KasmVNC client: the WebSocket path comes from ?path= and ignores the page's own path.
  const path = new URLSearchParams(location.search).get('path') || 'websockify';
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/' + path, ['binary']);
  const status = document.getElementById('status');
  ws.onopen = () => ws.send('hello');
  ws.onmessage = (e) => { status.textContent = e.data === 'hello' ? 'Connected' : 'Unexpected reply'; };
  ws.onerror = () => { status.textContent = 'Failed'; };
  ws.onclose = () => { if (status.textContent !== 'Connected') status.textContent = 'Disconnected'; };
</script>
</body></html>
`;
}

export async function startDemoDesktop(options: DemoDesktopOptions): Promise<DemoDesktop> {
  const owner = options.username ?? 'kasm_user';
  const viewer = options.viewerUsername ?? 'kasm_viewer';
  const authenticate = basicAuthenticator([owner, viewer], options.password ?? '');
  const requireOrigin = options.requireOrigin ?? true;
  const html = page(options.name);

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const user = authenticate(req.headers.authorization);
    if (user === null) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="Websockify"', 'content-type': 'text/plain' });
      res.end('401 Unauthorized\n');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://demo');
    if (url.pathname === '/__echo' || url.pathname.endsWith('/__echo')) {
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'x-echo-method': req.method ?? '',
        'x-echo-url': req.url ?? '',
        'x-echo-headers': Buffer.from(JSON.stringify(req.headers)).toString('base64'),
        'x-echo-user': user,
      });
      req.pipe(res);
      return;
    }
    if (isOwnerApi(req.url ?? '/')) {
      // Without a password there is no viewer: everyone is treated as the owner.
      const allowed = user !== viewer;
      const body = allowed ? { user, api: (req.url ?? '/').split('?', 1)[0] } : { user, error: 'the API is for the owner only' };
      res.writeHead(allowed ? 200 : 403, { 'content-type': 'application/json' });
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify(body) + '\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      res.end('405 Method Not Allowed\n');
      return;
    }
    if (url.pathname === '/' || url.pathname.endsWith('/') || url.pathname.endsWith('/index.html')) {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'cross-origin-embedder-policy': 'require-corp',
        'cross-origin-opener-policy': 'same-origin',
      });
      res.end(req.method === 'HEAD' ? undefined : html);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('404 Not Found\n');
  };

  const server: Server = options.tls
    ? createHttpsServer(await makeSelfSignedCertificate(), onRequest)
    : createHttpServer(onRequest);

  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    handleProtocols: (protocols) => (protocols.has('binary') ? 'binary' : protocols.values().next().value ?? false),
  });
  wss.on('connection', (ws: WebSocket) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    if (authenticate(req.headers.authorization) === null) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="Websockify"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    if (requireOrigin && !req.headers.origin) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = options.host ?? '127.0.0.1';
  return {
    server,
    port,
    url: `${options.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`,
    async close() {
      for (const ws of wss.clients) ws.terminate();
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
