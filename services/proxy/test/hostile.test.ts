/**
 * Hostile and broken requests, written byte for byte on raw sockets: each gets a 4xx the
 * client can read, nothing reaches an upstream, and the proxy keeps serving.
 *
 * Refused by the proxy (400): dot segments ("." / "..", also as %2e), encoded slashes and
 * backslashes (%2f, %5c), backslashes, %00, targets not starting with "/". Refused by Node's
 * parser before the proxy sees them: CR/LF inside headers and other malformed HTTP (400),
 * headers over 16 KiB (431).
 */
import net from 'node:net';
import t from 'tap';
import { makeRoute, send, startStack, startUpstream } from './helpers.ts';

function rawExchange(port: number, request: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('close', () => resolve(text));
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? resolve(text) : reject(err)));
    socket.setTimeout(10_000, () => {
      socket.destroy();
      reject(new Error(`no answer and no close; got: ${JSON.stringify(text.slice(0, 200))}`));
    });
    socket.end(request);
  });
}

function statusOf(answer: string): number {
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(answer);
  return m ? Number(m[1]) : 0;
}

t.test('hostile requests get a 4xx and the proxy keeps serving', async (t) => {
  const reached: string[] = [];
  const upstream = await startUpstream((req, res) => {
    reached.push(req.url ?? '');
    res.end('fine');
  });
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('mo-desk', upstream.url)], { controlPlaneUrl: upstream.url });
  const get = (target: string, extra = ''): string => `GET ${target} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n${extra}\r\n`;

  const cases: Array<[string, string | Buffer, number]> = [
    ['dot-dot segments', get('/desktop/mo-desk/../../etc/passwd'), 400],
    ['dot-dot out of the route name', get('/desktop/../mo-desk/'), 400],
    ['encoded dot-dot', get('/desktop/mo-desk/%2e%2e/%2E%2E/secret'), 400],
    ['half-encoded dot-dot', get('/desktop/mo-desk/.%2e/x'), 400],
    ['encoded dot-dot as the route name', get('/desktop/%2e%2e/'), 400],
    ['single dot segment', get('/desktop/mo-desk/./x'), 400],
    ['encoded slash', get('/desktop/mo-desk/a%2fb'), 400],
    ['encoded slash, upper case', get('/desktop/mo-desk%2F..%2Fother/'), 400],
    ['encoded backslash', get('/desktop/mo-desk/a%5c..%5cb'), 400],
    ['backslashes', get('/desktop/mo-desk/..\\..\\x'), 400],
    ['encoded NUL', get('/desktop/mo-desk/a%00b'), 400],
    ['dot-dot towards the control plane', get('/api/../desktop/mo-desk/'), 400],
    ['absolute-form target', get('http://evil.example/desktop/mo-desk/'), 400],
    ['asterisk target', 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['CR inside a header value', get('/desktop/mo-desk/', 'X-Inject: a\rSet-Cookie: evil=1\r\n'), 400],
    ['LF inside a header name', get('/desktop/mo-desk/', 'X-In\nject: a\r\n'), 400],
    ['space before the colon', get('/desktop/mo-desk/', 'X-Bad : a\r\n'), 400],
    ['Content-Length and Transfer-Encoding together', 'POST /desktop/mo-desk/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400],
    ['a non-numeric Content-Length', 'POST /desktop/mo-desk/ HTTP/1.1\r\nHost: x\r\nContent-Length: five\r\n\r\n', 400],
    ['overlong headers', get('/desktop/mo-desk/', `Cookie: deskhub_session=${'a'.repeat(20_000)}\r\n`), 431],
    ['garbage bytes', Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0xde, 0xad, 0xbe, 0xef, 0x0d, 0x0a, 0x0d, 0x0a]), 400],
    ['text garbage', 'HELLO THERE\r\n\r\n', 400],
    ['CONNECT', 'CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n', 405],
  ];
  for (const [name, request, status] of cases) {
    const answer = await rawExchange(proxy.port, request);
    t.equal(statusOf(answer), status, `${name}: ${status}`);
    const body = answer.slice(answer.indexOf('\r\n\r\n') + 4);
    t.match(JSON.parse(body), { statusCode: status }, `${name}: the one error shape`);
    t.notMatch(answer, /\n\s+at /, `${name}: no stack trace`);
    const ok = await send(`${proxy.url}/desktop/mo-desk/after`);
    t.equal(ok.status, 200, `${name}: the proxy keeps serving`);
  }
  t.same(
    reached.filter((u) => u !== '/after'),
    [],
    'no hostile request reached the upstream',
  );

  const fine = await send(`${proxy.url}/desktop/mo-desk/a.b/..c/...d/%41%20b?q=../%2f`);
  t.equal(fine.status, 200, 'names with dots, percent escapes of ordinary characters, and a query with anything are fine');
  t.equal(reached.at(-1), '/a.b/..c/...d/%41%20b?q=../%2f', 'and reach the upstream untouched');
});
