/**
 * The proxy's own HTTP/1.1 engine (front.ts, upstream.ts) on the wire: pipelining, keep-alive
 * both ways, HTTP/1.0 clients, re-framing of chunked and close-delimited responses, HEAD/204/304,
 * 1xx responses, Expect: 100-continue, a browser that leaves mid-response, backpressure from a
 * slow reader, and more concurrent requests than one pool holds connections.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Readable, Transform } from 'node:stream';
import t from 'tap';
import { FrontServer } from '../src/front.ts';
import { makeRoute, send, silentLogger, startStack, startUpstream } from './helpers.ts';

/** Writes raw bytes and collects everything until the server closes (or `until` matches). */
function raw(port: number, request: string, until?: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`timeout; got ${JSON.stringify(text.slice(0, 300))}`));
    }, 10_000);
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (until && until.test(text)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(text);
      }
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
    socket.on('error', reject);
    socket.write(request);
  });
}

/** A raw upstream: `answer` gets each connection's bytes and writes what it likes. */
async function rawUpstream(answer: (socket: net.Socket, request: string) => void): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let buffered = '';
    socket.on('data', (c: Buffer) => {
      buffered += c.toString('latin1');
      let end: number;
      while ((end = buffered.indexOf('\r\n\r\n')) !== -1) {
        const request = buffered.slice(0, end + 4);
        buffered = buffered.slice(end + 4);
        answer(socket, request);
      }
    });
    socket.on('error', () => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

t.test('pipelined requests are answered in order; keep-alive reuses the browser connection', async (t) => {
  const upstream = await startUpstream((req, res) => {
    // The first answer is slower, so order is the proxy's doing, not the upstream's.
    const delay = req.url === '/one' ? 60 : 0;
    setTimeout(() => res.end(`answer ${req.url}`), delay);
  });
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('pia-desk', upstream.url)]);
  const get = (path: string): string => `GET /desktop/pia-desk${path} HTTP/1.1\r\nHost: x\r\n\r\n`;
  const text = await raw(proxy.port, get('/one') + get('/two') + get('/three'), /answer \/three/);
  const order = [...text.matchAll(/answer (\/(?:one|two|three))/g)].map((m) => m[1]);
  t.same(order, ['/one', '/two', '/three'], 'three answers, in request order, on one connection');
  t.equal([...text.matchAll(/HTTP\/1\.1 200 OK/g)].length, 3);

  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const ports = new Set<number>();
  for (let i = 0; i < 5; i++) {
    await new Promise<void>((resolve, reject) => {
      http
        .get(`${proxy.url}/desktop/pia-desk/k${i}`, { agent }, (res) => {
          ports.add(res.socket.localPort as number);
          res.resume();
          res.on('end', () => resolve());
        })
        .on('error', reject);
    });
  }
  t.equal(ports.size, 1, 'five requests over one kept-alive browser connection');
});

t.test('pipelining past the read-ahead bound, and a bad request behind good ones, keep request order', async (t) => {
  const upstream = await startUpstream((req, res) => {
    // The first answer is slow, so the rest wait parsed (or unread) behind it.
    setTimeout(() => res.end(`answer ${req.url}`), req.url === '/p0' ? 80 : 0);
  });
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('pib-desk', upstream.url)]);
  const get = (path: string): string => `GET /desktop/pib-desk${path} HTTP/1.1\r\nHost: x\r\n\r\n`;

  // 40 requests in one write: more than the proxy reads ahead (16), so reading pauses and resumes.
  const many = Array.from({ length: 40 }, (_, i) => get(`/p${i}`)).join('');
  const text = await raw(proxy.port, many, /answer \/p39/);
  const order = [...text.matchAll(/answer (\/p\d+)/g)].map((m) => m[1]);
  t.same(order, Array.from({ length: 40 }, (_, i) => `/p${i}`), '40 pipelined answers, in request order');

  // A good request, then bytes that are not HTTP: the good one is answered whole, then a 400.
  const samePacket = await raw(proxy.port, get('/p0') + 'HELLO THERE\r\n\r\n');
  t.match(samePacket, /^HTTP\/1\.1 200 OK[\s\S]*answer \/p0HTTP\/1\.1 400 Bad Request/, 'same packet: 200 with its body, then 400');
  t.match(samePacket, /"statusCode":400/);

  // The same with the bad bytes arriving while the first answer is still under way.
  const later = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(proxy.port, '127.0.0.1');
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('close', () => resolve(text));
    socket.on('error', reject);
    socket.write(get('/p0'));
    setTimeout(() => socket.write('HELLO THERE\r\n\r\n'), 20);
  });
  t.match(later, /^HTTP\/1\.1 200 OK[\s\S]*answer \/p0HTTP\/1\.1 400 Bad Request/, 'later packet: 200 with its body, then 400, then closed');
});

t.test('response framing: chunked, close-delimited, HEAD, 204, 304, informational', async (t) => {
  const upstream = await rawUpstream((socket, request) => {
    const path = request.split(' ')[1];
    switch (path) {
      case '/chunked':
        socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');
        break;
      case '/until-close':
        socket.end('HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until the upstream closes');
        break;
      case '/head':
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n');
        break;
      case '/no-content':
        socket.write('HTTP/1.1 204 No Content\r\n\r\n');
        break;
      case '/not-modified':
        socket.write('HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n');
        break;
      case '/early-hints':
        socket.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n');
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal');
        break;
      default:
        socket.write('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    }
  });
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('fra-desk', upstream.url)]);
  const base = `${proxy.url}/desktop/fra-desk`;

  const chunked = await send(`${base}/chunked`);
  t.equal(chunked.text, 'hello world', 'chunked upstream body arrives whole');
  t.equal(chunked.headers['transfer-encoding'], 'chunked', 're-chunked for an HTTP/1.1 browser');
  const untilClose = await send(`${base}/until-close`);
  t.equal(untilClose.text, 'body until the upstream closes', 'a close-delimited body arrives whole');
  const head = await send(`${base}/head`, { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.headers['content-length'], '1234', 'HEAD keeps the declared length');
  t.equal(head.body.length, 0, 'and has no body');
  t.equal((await send(`${base}/no-content`)).status, 204);
  const notModified = await send(`${base}/not-modified`);
  t.equal(notModified.status, 304);
  t.equal(notModified.headers.etag, '"x"');
  const hints = await send(`${base}/early-hints`);
  t.same([hints.status, hints.text], [200, 'final'], 'a 1xx before the answer is skipped');

  const old = await raw(proxy.port, 'GET /desktop/fra-desk/chunked HTTP/1.0\r\nHost: x\r\n\r\n');
  t.match(old, /^HTTP\/1\.1 200 OK\r\n/);
  t.notMatch(old, /transfer-encoding/i, 'no chunked framing for an HTTP/1.0 browser');
  t.match(old, /connection: close/i);
  t.ok(old.endsWith('\r\n\r\nhello world'), 'the body ends with the connection');
  const keepAlive10 = await raw(proxy.port, 'HEAD /desktop/fra-desk/head HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /desktop/fra-desk/no-content HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n', /204 No Content/);
  t.match(keepAlive10, /connection: keep-alive/i, 'an HTTP/1.0 keep-alive browser is kept alive');
});

t.test('Expect: 100-continue, and an upstream answering before the upload ends', async (t) => {
  let received = 0;
  const upstream = await startUpstream((req, res) => {
    if (req.url === '/refuse') {
      // Answers at once, before the upload is in (Node then reads and drops the rest).
      res.writeHead(403, { 'content-type': 'text/plain' });
      res.end('no uploads here');
      return;
    }
    req.on('data', (c: Buffer) => (received += c.length));
    req.on('end', () => res.end(`got ${received}`));
  });
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('exa-desk', upstream.url)]);
  const text = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(proxy.port, '127.0.0.1');
    let out = '';
    socket.on('data', (c: Buffer) => {
      out += c.toString('latin1');
      if (out.includes('100 Continue') && !out.includes('sent')) {
        out += '[sent]';
        socket.write('hello');
      }
      if (out.includes('got 5')) {
        socket.destroy();
        resolve(out);
      }
    });
    socket.on('error', reject);
    socket.write('POST /desktop/exa-desk/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
  });
  t.match(text, /^HTTP\/1\.1 100 Continue\r\n\r\n/, '100 Continue first');
  t.match(text, /HTTP\/1\.1 200 OK[\s\S]*got 5/, 'then the answer');

  const refused = await send(`${proxy.url}/desktop/exa-desk/refuse`, { method: 'POST', body: Buffer.alloc(2 * 1024 * 1024, 1) });
  t.same([refused.status, refused.text], [403, 'no uploads here'], "the upstream's early answer reaches the browser");
  t.equal((await send(`${proxy.url}/desktop/exa-desk/up`, { method: 'POST', body: 'after' })).text, `got ${received}`, 'and the proxy keeps serving');
});

t.test('a browser that leaves mid-response frees the upstream; a slow reader holds the upstream back', async (t) => {
  const total = 64 * 1024 * 1024;
  let produced = 0;
  let aborted = 0;
  const upstream = await startUpstream((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
    const chunk = Buffer.alloc(64 * 1024, 3);
    let sent = 0;
    const source = new Readable({
      read() {
        if (sent >= total) this.push(null);
        else {
          sent += chunk.length;
          this.push(chunk);
        }
      },
    });
    const counter = new Transform({
      transform(c: Buffer, _e, done) {
        produced += c.length;
        done(null, c);
      },
    });
    res.on('close', () => {
      if (!res.writableFinished) aborted++;
    });
    source.pipe(counter).pipe(res);
    void req;
  });
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('sly-desk', upstream.url)]);

  // Slow reader: read the head, then stop.
  const hash = createHash('sha256');
  let got = 0;
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get(`${proxy.url}/desktop/sly-desk/big`, { agent: false }, resolve).on('error', reject);
  });
  res.pause();
  let last = -1;
  for (let i = 0; i < 40 && produced !== last; i++) {
    last = produced;
    await new Promise((r) => setTimeout(r, 250));
  }
  t.ok(produced < total / 2, `the upstream was held back after ${(produced / 1048576).toFixed(1)} MiB of 64 (kernel buffers only)`);
  await new Promise<void>((resolve, reject) => {
    res.on('data', (c: Buffer) => {
      got += c.length;
      hash.update(c);
    });
    res.on('end', () => resolve());
    res.on('error', reject);
    res.resume();
  });
  t.equal(got, total, 'everything arrived once the reader read again');

  // A browser that leaves: the upstream's response is cut too (its connection is not reused).
  const before = aborted;
  await new Promise<void>((resolve, reject) => {
    http
      .get(`${proxy.url}/desktop/sly-desk/big`, { agent: false }, (r) => {
        r.once('data', () => {
          r.destroy();
          resolve();
        });
      })
      .on('error', reject);
  });
  for (let i = 0; i < 100 && aborted === before; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal(aborted, before + 1, 'the upstream response was abandoned, not read to the end');
  t.equal((await send(`${proxy.url}/desktop/sly-desk/big`, { method: 'HEAD' })).status, 200, 'the proxy keeps serving');
});

t.test('more requests at once than a pool has connections: all answered', async (t) => {
  let open = 0;
  let most = 0;
  const upstream = await startUpstream((_req, res) => {
    open++;
    most = Math.max(most, open);
    setTimeout(() => {
      open--;
      res.end('ok');
    }, 100);
  });
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('cro-desk', upstream.url)]);
  const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => send(`${proxy.url}/desktop/cro-desk/${i}`)));
  t.ok(replies.every((r) => r.status === 200 && r.text === 'ok'), '200 answers');
  t.ok(most <= 128, `at most 128 upstream requests at once (${most})`);
  t.ok(most > 1, 'and more than one');
});

t.test('a head that does not arrive whole in time gets 408; an idle keep-alive connection is closed; neither before its setting', async (t) => {
  // The engine on its own, with short timeouts (the proxy's are 60 and 65 s), checked by its
  // sweep once a second. Each timeout must fire no earlier than its setting and no later than
  // the setting plus one sweep (and a margin for a busy machine).
  const TIMEOUT = 1200;
  const SWEEP = 1000;
  const LATE = TIMEOUT + SWEEP + 400;
  const front = new FrontServer(
    { bodyLimit: 1024, headersTimeoutMs: TIMEOUT, keepAliveTimeoutMs: TIMEOUT, logger: silentLogger, countResponse: () => undefined },
    // Answered once the request was read whole (an answer before that closes the connection).
    { request: (req) => setImmediate(() => req.respond(200, 'content-type: text/plain\r\n', 'ok')), upgrade: (_req, socket) => socket.destroy() },
  );
  await new Promise<void>((resolve) => front.server.listen(0, '127.0.0.1', () => resolve()));
  t.teardown(() => front.close(0));
  const port = (front.server.address() as AddressInfo).port;

  // A kept-alive connection with nothing under way is closed, without an answer; its close marks
  // a sweep, which tells the test the sweep's phase.
  let t0 = Date.now();
  const idle = await raw(port, 'GET /only HTTP/1.1\r\nHost: x\r\n\r\n');
  const swept = Date.now();
  t.match(idle, /^HTTP\/1\.1 200 OK[\s\S]*ok$/, 'answered, then closed when idle');
  t.notMatch(idle, /connection: close/, 'kept alive after the answer');
  t.ok(swept - t0 >= TIMEOUT, `idle close not before the timeout (${swept - t0} ms)`);
  t.ok(swept - t0 <= LATE, `idle close within a sweep of the timeout (${swept - t0} ms)`);

  // The unfavourable phase: the next head starts just before a sweep, when a clock advanced only
  // by the sweep is oldest (a timeout measured from it would fire ~1 s early, every time).
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, swept + SWEEP - 60 - Date.now())));
  // Half a head, after a complete request on the same connection: the clock starts at the new head.
  t0 = Date.now();
  const slow = await raw(port, 'GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n');
  const elapsed = Date.now() - t0;
  t.match(slow, /^HTTP\/1\.1 200 OK[\s\S]*okHTTP\/1\.1 408 Request Timeout/, 'the complete request answered, then 408 for the unfinished head');
  t.ok(elapsed >= TIMEOUT, `408 not before the timeout (${elapsed} ms)`);
  t.ok(elapsed <= LATE, `408 within a sweep of the timeout (${elapsed} ms)`);
});

t.test('the upstream timeout (504) fires no earlier than its setting, and within a sweep of it', async (t) => {
  const TIMEOUT = 1000;
  const SWEEP = 250; // the upstream deadline sweep
  const LATE = TIMEOUT + SWEEP + 400;
  const hanging = await startUpstream(() => {
    /* never answers */
  });
  t.teardown(() => hanging.close());
  const { proxy } = await startStack(t, [makeRoute('tim-hang', hanging.url)], { upstreamTimeoutMs: TIMEOUT });
  const timed = async (): Promise<number> => {
    const t0 = Date.now();
    const reply = await send(`${proxy.url}/desktop/tim-hang/x`);
    t.equal(reply.status, 504, '504');
    return Date.now() - t0;
  };
  // The first 504 marks a sweep; the second request starts just before the next one, when a
  // clock advanced only by the sweep would be oldest.
  const first = await timed();
  await new Promise((resolve) => setTimeout(resolve, SWEEP - 40));
  const second = await timed();
  for (const elapsed of [first, second]) {
    t.ok(elapsed >= TIMEOUT, `not before the timeout (${elapsed} ms)`);
    t.ok(elapsed <= LATE, `within a sweep of the timeout (${elapsed} ms)`);
  }
});
