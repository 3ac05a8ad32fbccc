/**
 * The HTTP conformance corpus (test/conformance/*.json), run on real sockets: each case writes
 * raw bytes to the proxy and says what the client must get back and what the desktop behind it
 * must (or must not) receive. The desktop is Node's own HTTP server (a strict parser of its own,
 * so a request the proxy frames wrongly shows up as a second request there), answering `ok` or
 * with raw bytes the case gives.
 *
 * A case (all fields but name, rfc and request optional):
 *   request           raw bytes the client writes (the connection is not half-closed)
 *   upstreamResponse  raw bytes the desktop writes for each request it reads (default: 200 "ok")
 *   upstreamClose     the desktop closes its connection after writing them
 *   statuses          the statuses of the responses the client must parse, in order
 *   closed            true: the proxy must close the connection afterwards; false: keep it open
 *   client / clientNot        regexes the client's bytes must / must not match
 *   upstream          how many requests the desktop must receive
 *   upstreamHead / upstreamNot  regexes every request the desktop received must / must not match
 *                     (dumped as "METHOD url HTTP/x.y\r\nName: value\r\n...\r\n\r\nbody")
 *   upstreamClosed    true: the proxy closes every connection it opened to the desktop
 */
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import t from 'tap';
import { HTTPParser, kOnBody, kOnHeaders, kOnHeadersComplete, kOnMessageComplete } from '../src/http1.ts';
import { makeRoute, silentLogger, startStack } from './helpers.ts';

interface Case {
  name: string;
  rfc: string;
  request: string;
  upstreamResponse?: string;
  upstreamClose?: boolean;
  statuses: number[];
  closed?: boolean;
  client?: string[];
  clientNot?: string[];
  upstream?: number;
  upstreamHead?: string[];
  upstreamNot?: string[];
  upstreamClosed?: boolean;
}

/** The route every case talks to, and the credentials the proxy injects for it. */
const ROUTE = 'cf-desk';
export const DESKTOP_AUTH = 'Basic ZGVza3RvcDpzZWNyZXQ=';
const WAIT_MS = 5_000;

interface Received {
  statuses: number[];
  text: string;
  closed: boolean;
  /** Stopped waiting without getting what the case expects. */
  timedOut: boolean;
}

/** Writes `request`, parses what comes back until the case's answers are in (and, if it expects one, the close). */
function exchange(port: number, c: Case): Promise<Received> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const parser = new HTTPParser();
    parser.initialize(HTTPParser.RESPONSE, {});
    const got: Received = { statuses: [], text: '', closed: false, timedOut: false };
    let current = 0;
    let tunnel = false;
    parser[kOnHeaders] = () => undefined;
    parser[kOnHeadersComplete] = (_ma: number, _mi: number, _h: string[], _m: number, _u: string, status: number) => {
      current = status;
      if (status === 101) {
        tunnel = true;
        got.statuses.push(101);
      }
      return status === 101 || status === 304 || status === 204 ? 1 : 0;
    };
    parser[kOnBody] = () => undefined;
    parser[kOnMessageComplete] = () => {
      if (current !== 101 && current >= 200) got.statuses.push(current);
      check();
    };
    let finished = false;
    let parserOpen = true; // a closed parser must never be called again (the binding crashes)
    const closeParser = (): void => {
      // Never from inside one of its own callbacks (this may run in one): on the next turn.
      if (parserOpen) setImmediate(() => parser.close());
      parserOpen = false;
    };
    const finish = (timedOut: boolean): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      got.timedOut = timedOut;
      if (timedOut || !got.closed) {
        // Does the proxy keep the connection? Give a close already on its way a moment.
        setTimeout(() => {
          socket.destroy();
          closeParser();
          resolve(got);
        }, c.closed === false ? 100 : 0);
      } else {
        closeParser();
        resolve(got);
      }
    };
    const check = (): void => {
      const enough = got.statuses.length >= c.statuses.length;
      if (enough && (c.closed !== true || got.closed)) finish(false);
    };
    const timer = setTimeout(() => finish(true), WAIT_MS);
    socket.on('data', (chunk: Buffer) => {
      got.text += chunk.toString('latin1');
      if (!tunnel && parserOpen) parser.execute(chunk);
      check();
    });
    socket.on('close', () => {
      got.closed = true;
      if (!tunnel && parserOpen) parser.finish();
      check();
      finish(false);
    });
    socket.on('error', () => undefined);
    socket.write(c.request, 'latin1');
  });
}

/** A desktop behind the proxy: Node's HTTP server, recording each request it parses. */
async function desktop(c: Case): Promise<{ url: string; requests: string[]; open: Set<net.Socket>; close(): Promise<void> }> {
  const requests: string[] = [];
  const sockets = new Set<net.Socket>();
  const open = new Set<net.Socket>();
  const record = (req: http.IncomingMessage, body: string): void => {
    let dump = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
    for (let i = 0; i < req.rawHeaders.length; i += 2) dump += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
    requests.push(`${dump}\r\n${body}`);
  };
  const answer = (socket: net.Socket, res: http.ServerResponse | null): void => {
    if (c.upstreamResponse === undefined) {
      if (res !== null) {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
        res.end('ok');
      } else socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    socket.write(c.upstreamResponse, 'latin1');
    if (c.upstreamClose === true) socket.end();
  };
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      record(req, body);
      answer(req.socket, res);
    });
  });
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket);
    open.add(socket);
    // The proxy's FIN is what counts for `open` (the server keeps its side half-open).
    socket.on('end', () => open.delete(socket));
    socket.on('close', () => {
      open.delete(socket);
      sockets.delete(socket);
    });
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
    record(req, '');
    answer(socket, null);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    open,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

const dir = path.join(import.meta.dirname, 'conformance');
for (const file of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
  const cases = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as Case[];
  t.test(file, async (t) => {
    // CONFORMANCE_CASE=<regex> runs only the cases whose name matches.
    const only = process.env.CONFORMANCE_CASE ? new RegExp(process.env.CONFORMANCE_CASE, 'i') : null;
    for (const c of cases) {
      if (only !== null && !only.test(c.name)) continue;
      await t.test(`${c.name} (${c.rfc})`, async (t) => {
        const upstream = await desktop(c);
        t.teardown(() => upstream.close());
        const { proxy } = await startStack(t, [makeRoute(ROUTE, upstream.url, { authorization: DESKTOP_AUTH })], {
          controlPlaneUrl: upstream.url,
          publicUrl: 'https://desk.example.org',
          logger: silentLogger,
        });
        const got = await exchange(proxy.port, c);
        const received = { received: got.text.slice(0, 800), timedOut: got.timedOut };
        t.same(got.statuses, c.statuses, `the client gets ${c.statuses.join(', ') || 'no complete answer'}`, received);
        if (c.closed !== undefined) t.equal(got.closed, c.closed, c.closed ? 'then the connection is closed' : 'and the connection stays open');
        for (const re of c.client ?? []) t.match(got.text, new RegExp(re, 'i'), `the client sees /${re}/`, received);
        for (const re of c.clientNot ?? []) t.notMatch(got.text, new RegExp(re, 'i'), `the client never sees /${re}/`, received);
        // What reached the desktop (a request forwarded after the client's answer needs a moment).
        await new Promise((resolve) => setTimeout(resolve, 20));
        const seen = { requests: upstream.requests };
        if (c.upstream !== undefined) t.equal(upstream.requests.length, c.upstream, `the desktop receives ${c.upstream} request(s)`, seen);
        if (c.upstreamClosed === true) {
          for (let i = 0; i < 50 && upstream.open.size > 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
          t.equal(upstream.open.size, 0, 'the proxy closed its connections to the desktop');
        }
        for (const dump of upstream.requests) {
          for (const re of c.upstreamHead ?? []) t.match(dump, new RegExp(re, 'i'), `the desktop sees /${re}/`, seen);
          for (const re of c.upstreamNot ?? []) t.notMatch(dump, new RegExp(re, 'i'), `the desktop never sees /${re}/`, seen);
        }
      });
    }
  });
}
