/**
 * Hostile and broken requests, written byte for byte on raw sockets, kept as data
 * (test/hostile-requests/*.json): each gets a 4xx the client can read in the one error shape,
 * nothing reaches an upstream, and the proxy keeps serving.
 *
 * A case: name; request (the bytes as text, `{{repeat C N}}` for N copies of C) or requestHex;
 * status; answerHas, patterns the answer must match (a 405's Allow header).
 *
 * Refused by the proxy's target rules (paths.ts, 400): dot segments ("." / "..", also as %2e),
 * encoded slashes and backslashes (%2f, %5c), backslashes, %00, a "%" that is not an escape, a
 * fragment, targets not starting with "/"; by its head rules (request-rules.ts): TRACE and
 * CONNECT (405 with Allow), a request line without a version (400). Refused by llhttp before the
 * proxy sees them: CR/LF inside headers, obs-fold and other malformed HTTP (400), heads over
 * 16 KiB (431). CASE=regex runs the cases whose name matches.
 */
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { makeRoute, send, startStack, startUpstream } from './helpers.ts';

interface Case {
  name: string;
  request?: string;
  requestHex?: string;
  status: number;
  answerHas?: string[];
}

const dir = path.join(import.meta.dirname, 'hostile-requests');
const only = process.env.CASE ? new RegExp(process.env.CASE) : null;
const cases = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .flatMap((f) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as Case[])
  .filter((c) => !only || only.test(c.name));

function bytesOf(c: Case): Buffer {
  if (c.requestHex !== undefined) return Buffer.from(c.requestHex, 'hex');
  if (c.request === undefined) throw new Error(`${c.name}: needs request or requestHex`);
  return Buffer.from(c.request.replace(/\{\{repeat (\S) (\d+)\}\}/g, (_, ch: string, n: string) => ch.repeat(Number(n))), 'latin1');
}

function rawExchange(port: number, request: Buffer): Promise<string> {
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
  t.ok(cases.length > 0, `${cases.length} cases`);
  for (const c of cases) {
    const { name, status } = c;
    const answer = await rawExchange(proxy.port, bytesOf(c));
    t.equal(statusOf(answer), status, `${name}: ${status}`);
    const body = answer.slice(answer.indexOf('\r\n\r\n') + 4);
    t.match(JSON.parse(body), { statusCode: status }, `${name}: the one error shape`);
    t.notMatch(answer, /\n\s+at /, `${name}: no stack trace`);
    for (const pattern of c.answerHas ?? []) t.match(answer, new RegExp(pattern), `${name}: the answer has ${pattern}`);
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
