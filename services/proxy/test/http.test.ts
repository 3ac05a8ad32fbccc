/**
 * HTTP forwarding through a real proxy to real upstreams: demo-desktop as the Kasm-like HTTPS
 * basic-auth desktop (its /__echo shows what reached it) and plain HTTP servers started here.
 */
import http from 'node:http';
import t from 'tap';
import { startDemoDesktop } from '@deskhub/demo-desktop';
import { closedPort, echoedHeaders, KASM_AUTH, KASM_PASSWORD, makeRoute, send, startStack, startUpstream, waitForSubscriber } from './helpers.ts';

t.test('a Kasm-like desktop: credentials injected, our cookies and hop-by-hop headers removed', async (t) => {
  const desktop = await startDemoDesktop({ name: 'alice-kasm', tls: true, password: KASM_PASSWORD });
  t.teardown(() => desktop.close());
  const route = makeRoute('alice-kasm', desktop.url, { authorization: KASM_AUTH });
  const { proxy } = await startStack(t, [route], { publicUrl: 'https://desk.example.test' });

  const reply = await send(`${proxy.url}/desktop/alice-kasm/__echo?x=1`, {
    headers: {
      authorization: 'Basic d3Jvbmc6d3Jvbmc=',
      cookie: 'deskhub_session=s1; theme=dark; deskhub=raw; deskhub.csrf=c; deskhubber=keep; other=2',
      connection: 'keep-alive, x-hop-named',
      'x-hop-named': 'must-go',
      'keep-alive': 'timeout=5',
      te: 'trailers',
      'proxy-authorization': 'Basic c2VjcmV0',
      'proxy-connection': 'keep-alive',
      'x-forwarded-for': '203.0.113.9',
      'x-forwarded-host': 'spoofed.example',
      'x-forwarded-proto': 'gopher',
      'x-kept': 'yes',
      host: 'desk.example.test',
      origin: 'https://desk.example.test',
    },
  });
  t.equal(reply.status, 200, 'the desktop accepted the injected credentials');
  t.equal(reply.headers['x-echo-url'], '/__echo?x=1', 'prefix stripped, query kept');
  const seen = echoedHeaders(reply);
  t.equal(seen.authorization, KASM_AUTH, 'Authorization overwritten with the route credentials');
  t.equal(seen.cookie, 'theme=dark; deskhubber=keep; other=2', "only deskhub's own cookies removed");
  for (const gone of ['x-hop-named', 'keep-alive', 'te', 'proxy-authorization', 'proxy-connection', 'transfer-encoding', 'upgrade']) {
    t.notOk(gone in seen, `${gone} not forwarded`);
  }
  t.not(seen.connection, 'keep-alive, x-hop-named', 'client Connection header not forwarded as is');
  t.equal(seen['x-forwarded-for'], '203.0.113.9, 127.0.0.1', 'client address appended to X-Forwarded-For');
  t.equal(seen['x-forwarded-host'], 'desk.example.test', 'X-Forwarded-Host is the Host the client asked for');
  t.equal(seen['x-forwarded-proto'], 'https', 'X-Forwarded-Proto from PUBLIC_URL, not the client');
  t.equal(seen.host, `127.0.0.1:${desktop.port}`, 'Host is the upstream');
  t.equal(seen.origin, 'https://desk.example.test', 'Origin kept');
  t.equal(seen['x-kept'], 'yes', 'end-to-end headers kept');
  t.match(seen['x-request-id'], /^[0-9a-f]{8}-[0-9a-z]+$/, 'a request id is passed on');

  const onlyOurs = await send(`${proxy.url}/desktop/alice-kasm/__echo`, { headers: { cookie: 'deskhub_session=s1; deskhub=x' } });
  t.notOk('cookie' in echoedHeaders(onlyOurs), 'a Cookie header left empty is dropped (KasmVNC limits headers to 1 KB)');

  const page = await send(`${proxy.url}/desktop/alice-kasm/`, { headers: { accept: 'text/html' } });
  t.equal(page.status, 200, 'no entry query configured: the root is forwarded as it is');
});

t.test('WWW-Authenticate dropped from a desktop 401; wrong or missing credentials never prompt', async (t) => {
  const desktop = await startDemoDesktop({ name: 'bob-kasm', tls: true, password: KASM_PASSWORD });
  t.teardown(() => desktop.close());
  const wrong = makeRoute('bob-wrong', desktop.url, { authorization: 'Basic ' + Buffer.from('kasm_user:nope').toString('base64') });
  const none = makeRoute('bob-none', desktop.url, { authorization: null });
  const { proxy } = await startStack(t, [wrong, none]);
  for (const path of ['bob-wrong', 'bob-none']) {
    const reply = await send(`${proxy.url}/desktop/${path}/__echo`, { headers: { authorization: KASM_AUTH } });
    t.equal(reply.status, 401, `${path}: the browser's own Authorization is never let through`);
    t.notOk('www-authenticate' in reply.headers, `${path}: no WWW-Authenticate reaches the browser`);
  }
});

t.test('authorization null removes the header; prefix kept for routes that want it', async (t) => {
  const upstream = await startUpstream((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ url: req.url, authorization: req.headers.authorization ?? null, cookie: req.headers.cookie ?? null }));
  });
  t.teardown(() => upstream.close());
  const keep = makeRoute('carol-webtop', upstream.url, { stripPrefix: false, authorization: null });
  const { proxy } = await startStack(t, [keep]);
  const reply = await send(`${proxy.url}/desktop/carol-webtop/assets/app.js?v=2`, { headers: { authorization: 'Bearer leak', cookie: 'deskhub_s=1' } });
  t.equal(reply.status, 200);
  t.same(JSON.parse(reply.text), { url: '/desktop/carol-webtop/assets/app.js?v=2', authorization: null, cookie: null });
  const post = await send(`${proxy.url}/desktop/carol-webtop`, { method: 'POST', body: 'x' });
  t.equal(JSON.parse(post.text).url, '/desktop/carol-webtop', 'non-GET without slash is forwarded, not redirected');
});

t.test('every method is forwarded and bodies are echoed back both ways', async (t) => {
  const desktop = await startDemoDesktop({ name: 'dan-kasm', tls: true, password: KASM_PASSWORD });
  t.teardown(() => desktop.close());
  const { proxy } = await startStack(t, [makeRoute('dan-kasm', desktop.url, { authorization: KASM_AUTH })]);
  for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
    const body = method === 'GET' || method === 'HEAD' ? undefined : `payload for ${method}`;
    const reply = await send(`${proxy.url}/desktop/dan-kasm/__echo`, { method, body });
    t.equal(reply.status, 200, `${method} answered`);
    t.equal(reply.headers['x-echo-method'], method, `${method} reached the desktop`);
    if (body !== undefined) t.equal(reply.text, body, `${method} body streamed back`);
  }
  const chunked = await send(`${proxy.url}/desktop/dan-kasm/__echo`, { method: 'POST', body: 'chunked body', chunked: true });
  t.equal(chunked.text, 'chunked body', 'a chunked upload is forwarded');
});

t.test('entry redirects: no trailing slash, and a missing entry query key', async (t) => {
  const desktop = await startDemoDesktop({ name: 'erin-kasm', tls: true, password: KASM_PASSWORD });
  t.teardown(() => desktop.close());
  const route = makeRoute('erin-kasm', desktop.url, { authorization: KASM_AUTH, entryQuery: 'path=desktop/erin-kasm/websockify' });
  const { proxy } = await startStack(t, [route]);
  const base = `${proxy.url}/desktop/erin-kasm`;
  const cases: Array<[string, string | null]> = [
    ['', '/desktop/erin-kasm/?path=desktop/erin-kasm/websockify'],
    ['?resize=remote', '/desktop/erin-kasm/?resize=remote&path=desktop/erin-kasm/websockify'],
    ['/', '/desktop/erin-kasm/?path=desktop/erin-kasm/websockify'],
    ['/?resize=remote', '/desktop/erin-kasm/?resize=remote&path=desktop/erin-kasm/websockify'],
    ['/?path=other', null],
    ['/?resize=remote&path=desktop/erin-kasm/websockify', null],
    ['/?xpath=1', '/desktop/erin-kasm/?xpath=1&path=desktop/erin-kasm/websockify'],
  ];
  for (const [rest, location] of cases) {
    const reply = await send(base + rest, { headers: { accept: 'text/html' } });
    if (location === null) {
      t.equal(reply.status, 200, `${rest}: forwarded`);
      t.match(reply.text, /Demo desktop/);
    } else {
      t.equal(reply.status, 302, `${rest}: redirected`);
      t.equal(reply.headers.location, location, `${rest}: to the entry URL`);
    }
  }
  const head = await send(base, { method: 'HEAD' });
  t.equal(head.status, 302, 'HEAD page loads are redirected too');
  const post = await send(`${base}/__echo`, { method: 'POST', body: 'x' });
  t.equal(post.status, 200, 'other paths and methods are not redirected');
});

t.test('Location headers come back under the prefix', async (t) => {
  const upstream = await startUpstream((req, res) => {
    const to = new URL(req.url ?? '/', 'http://x').searchParams.get('to') ?? '/';
    res.writeHead(302, { location: to.replace('ORIGIN', `http://127.0.0.1:${upstream.port}`) });
    res.end();
  });
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [
    makeRoute('fay-strip', upstream.url, { stripPrefix: true }),
    makeRoute('fay-keep', upstream.url, { stripPrefix: false }),
  ]);
  const cases: Array<[string, string, string]> = [
    ['fay-strip', '/login?next=%2F', '/desktop/fay-strip/login?next=%2F'],
    ['fay-strip', 'ORIGIN/app/', '/desktop/fay-strip/app/'],
    ['fay-strip', 'ORIGIN', '/desktop/fay-strip/'],
    ['fay-strip', 'relative/page', 'relative/page'],
    ['fay-strip', 'https://elsewhere.example/x', 'https://elsewhere.example/x'],
    ['fay-strip', '//elsewhere.example/x', '//elsewhere.example/x'],
    ['fay-keep', '/desktop/fay-keep/in', '/desktop/fay-keep/in'],
    ['fay-keep', 'ORIGIN/desktop/fay-keep/in', '/desktop/fay-keep/in'],
  ];
  for (const [path, to, expected] of cases) {
    const reply = await send(`${proxy.url}/desktop/${path}/go?to=${encodeURIComponent(to)}`, { method: 'POST' });
    t.equal(reply.status, 302);
    t.equal(reply.headers.location, expected, `${path}: ${to}`);
  }
});

t.test('Set-Cookie Path comes back under the prefix of a route that strips it', async (t) => {
  const upstream = await startUpstream((_req, res) => {
    res.setHeader('set-cookie', ['root=1; Path=/; HttpOnly', 'app=2; path=/app; Secure', 'nopath=3', 'rel=4; Path=relative', 'spaced=5 ;  PATH = /x/y ; SameSite=Lax']);
    res.end('ok');
  });
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [
    makeRoute('fib-strip', upstream.url, { stripPrefix: true }),
    makeRoute('fib-keep', upstream.url, { stripPrefix: false }),
  ]);
  const strip = await send(`${proxy.url}/desktop/fib-strip/`);
  t.same(strip.headers['set-cookie'], [
    'root=1; Path=/desktop/fib-strip/; HttpOnly',
    'app=2; Path=/desktop/fib-strip/app; Secure',
    'nopath=3',
    'rel=4; Path=relative',
    'spaced=5 ; Path=/desktop/fib-strip/x/y; SameSite=Lax',
  ], 'absolute paths prefixed, the rest untouched');
  const keep = await send(`${proxy.url}/desktop/fib-keep/`);
  t.same(keep.headers['set-cookie'], ['root=1; Path=/; HttpOnly', 'app=2; path=/app; Secure', 'nopath=3', 'rel=4; Path=relative', 'spaced=5 ;  PATH = /x/y ; SameSite=Lax'], 'a route that keeps its prefix: unchanged');
});

t.test('withdrawing a route cuts its requests in flight (503 before the head, cut during the body), and nobody else’s', async (t) => {
  const seen: string[] = [];
  const upstream = await startUpstream((req, res) => {
    seen.push(req.url ?? '');
    if (req.url === '/stream') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first part;');
      return; // the rest never comes: a long download
    }
    setTimeout(() => res.end(`late answer ${req.url}`), 1500);
  });
  t.teardown(() => upstream.close());
  const stack = await startStack(t, [makeRoute('gil-a', upstream.url), makeRoute('gil-b', upstream.url)]);
  const waiting = send(`${stack.proxy.url}/desktop/gil-a/slow`);
  const other = send(`${stack.proxy.url}/desktop/gil-b/slow-too`);
  const streamCut = new Promise<{ received: string; ended: boolean }>((resolve, reject) => {
    http
      .get(`${stack.proxy.url}/desktop/gil-a/stream`, { agent: false }, (res) => {
        let received = '';
        let ended = false;
        res.on('data', (c: Buffer) => (received += c.toString()));
        res.on('end', () => (ended = true));
        res.on('error', () => undefined);
        res.socket.on('close', () => resolve({ received, ended }));
      })
      .on('error', reject);
  });
  const deadline = Date.now() + 5000;
  while (seen.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(seen.length, 3, 'all three requests reached the upstream');
  const t0 = Date.now();
  await stack.remove('gil-a');
  const cut = await waiting;
  t.equal(cut.status, 503, 'the request still waiting for its head: 503');
  t.match(cut.text, /stopped or moved/);
  t.equal(cut.headers['retry-after'], '1');
  t.ok(Date.now() - t0 < 1000, `answered at once (${Date.now() - t0} ms), not when the upstream would have`);
  const stream = await streamCut;
  t.same(stream, { received: 'first part;', ended: false }, 'the response under way: its connection cut, not ended as if complete');
  const kept = await other;
  t.same([kept.status, kept.text], [200, 'late answer /slow-too'], 'the other route’s request is untouched');
});

t.test('upstream TLS verification is switched per route', async (t) => {
  const desktop = await startDemoDesktop({ name: 'gus-kasm', tls: true, password: KASM_PASSWORD });
  t.teardown(() => desktop.close());
  const trusting = makeRoute('gus-trusting', desktop.url, { authorization: KASM_AUTH });
  const verifying = makeRoute('gus-verifying', desktop.url, { authorization: KASM_AUTH });
  verifying.upstream.verifyTls = true;
  const { proxy } = await startStack(t, [trusting, verifying]);
  t.equal((await send(`${proxy.url}/desktop/gus-trusting/__echo`)).status, 200, 'self-signed accepted without verification');
  const refused = await send(`${proxy.url}/desktop/gus-verifying/__echo`);
  t.equal(refused.status, 502, 'self-signed refused with verification');
  t.match(JSON.parse(refused.text), { statusCode: 502, error: 'Bad Gateway', message: /certificate/ });
});

t.test('keep-alive pool per upstream: reused connections, and more than one', async (t) => {
  const upstream = await startUpstream((_req, res) => {
    // Answer a little later so that parallel requests overlap.
    setTimeout(() => res.end('ok'), 20);
  });
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('hal-pool', upstream.url)]);
  for (let i = 0; i < 10; i++) t.equal((await send(`${proxy.url}/desktop/hal-pool/x`)).status, 200);
  t.equal(upstream.connections, 1, 'sequential requests share one upstream connection');
  const parallel = await Promise.all(Array.from({ length: 8 }, () => send(`${proxy.url}/desktop/hal-pool/x`)));
  t.ok(parallel.every((r) => r.status === 200));
  t.ok(upstream.connections >= 4, `parallel requests open several connections (${upstream.connections}), not a one-connection pool`);
});

t.test('errors a user can read: 404, 502 refused and reset, 504 timeout, as JSON or HTML', async (t) => {
  const hanging = await startUpstream(() => {
    /* never answers */
  });
  t.teardown(() => hanging.close());
  const resetting = await startUpstream((req) => req.socket.destroy());
  t.teardown(() => resetting.close());
  const refusedPort = await closedPort();
  const { proxy } = await startStack(
    t,
    [
      makeRoute('ivy-refused', `http://127.0.0.1:${refusedPort}`),
      makeRoute('ivy-reset', resetting.url),
      makeRoute('ivy-hang', hanging.url),
    ],
    { upstreamTimeoutMs: 500 },
  );
  const cases: Array<[string, number, RegExp]> = [
    ['/desktop/nobody-here/', 404, /no desktop at \/desktop\/nobody-here\//],
    ['/desktop/', 404, /no desktop/],
    ['/desktop/ivy-refused/x', 502, /connection refused/],
    ['/desktop/ivy-reset/x', 502, /closed the connection/],
    ['/desktop/ivy-hang/x', 504, /did not answer in time/],
  ];
  for (const [path, status, message] of cases) {
    const json = await send(proxy.url + path, { headers: { accept: 'application/json' } });
    t.equal(json.status, status, `${path}: ${status}`);
    t.match(json.headers['content-type'], /application\/json/);
    const body = JSON.parse(json.text) as Record<string, unknown>;
    t.same(Object.keys(body).sort(), ['error', 'message', 'statusCode'], 'the one error shape');
    t.equal(body.statusCode, status);
    t.match(body.message as string, message);
    t.notMatch(json.text, /\bat .*\(.*:\d+:\d+\)/, 'no stack trace');

    const page = await send(proxy.url + path, { headers: { accept: 'text/html,application/xhtml+xml' } });
    t.equal(page.status, status);
    t.match(page.headers['content-type'], /text\/html/);
    t.match(page.text, new RegExp(`<h1>${status} `));
    t.match(page.text, message);
  }
  const noAccept = await send(`${proxy.url}/desktop/nobody-here/`);
  t.match(noAccept.headers['content-type'], /application\/json/, 'no Accept: JSON');
});

t.test('body limit: 413 for a declared length and for a chunked upload over it', async (t) => {
  let reached = 0;
  const upstream = await startUpstream((req, res) => {
    reached++;
    req.resume();
    req.on('end', () => res.end('stored'));
  });
  t.teardown(() => upstream.close());
  const { proxy } = await startStack(t, [makeRoute('jo-upload', upstream.url)], { bodyLimit: 1024 });
  const small = await send(`${proxy.url}/desktop/jo-upload/u`, { method: 'POST', body: Buffer.alloc(1024, 1) });
  t.equal(small.status, 200, 'exactly the limit passes');
  const declared = await send(`${proxy.url}/desktop/jo-upload/u`, { method: 'POST', body: Buffer.alloc(1025, 1) });
  t.equal(declared.status, 413);
  t.match(JSON.parse(declared.text), { statusCode: 413, error: 'Payload Too Large' });
  t.equal(reached, 1, 'an upload declared too large never reaches the upstream');
  const chunked = await send(`${proxy.url}/desktop/jo-upload/u`, { method: 'POST', body: Buffer.alloc(4096, 1), chunked: true });
  t.equal(chunked.status, 413, 'a chunked upload is cut at the limit');
  t.equal((await send(`${proxy.url}/desktop/jo-upload/u`)).status, 200, 'the proxy keeps serving');
});

t.test('paths outside /desktop/ go to the control plane, untouched', async (t) => {
  const controlPlane = await startUpstream((req, res) => {
    if (req.url === '/redirect') {
      res.writeHead(303, { location: `http://127.0.0.1:${controlPlane.port}/web/` });
      res.end();
      return;
    }
    if (req.url === '/auth-needed') {
      res.writeHead(401, { 'www-authenticate': 'Bearer', 'content-type': 'application/json' });
      res.end('{}');
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': ['deskhub_session=abc; Path=/; HttpOnly', 'b=2'] });
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString() }));
    });
  });
  t.teardown(() => controlPlane.close());
  const { proxy } = await startStack(t, [], { controlPlaneUrl: controlPlane.url });
  const reply = await send(`${proxy.url}/api/desktops?mine=1`, {
    method: 'POST',
    headers: { cookie: 'deskhub_session=abc', authorization: 'Bearer token-1', 'content-type': 'application/json' },
    body: '{"type":"demo"}',
  });
  t.equal(reply.status, 200);
  const seen = JSON.parse(reply.text);
  t.equal(seen.url, '/api/desktops?mine=1', 'path and query untouched');
  t.equal(seen.body, '{"type":"demo"}');
  t.equal(seen.headers.cookie, 'deskhub_session=abc', 'the control plane gets its session cookie');
  t.equal(seen.headers.authorization, 'Bearer token-1', 'and the client Authorization');
  t.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
  t.same(reply.headers['set-cookie'], ['deskhub_session=abc; Path=/; HttpOnly', 'b=2'], 'every Set-Cookie passed back');
  const redirect = await send(`${proxy.url}/redirect`);
  t.equal(redirect.headers.location, '/web/', 'a Location naming the control plane itself becomes a path');
  const auth = await send(`${proxy.url}/auth-needed`);
  t.equal(auth.headers['www-authenticate'], 'Bearer', "the control plane's WWW-Authenticate is its own business");

  const bare = await startStack(t, []);
  const none = await send(`${bare.proxy.url}/api/me`);
  t.equal(none.status, 404, 'no control plane configured: 404');
  t.match(JSON.parse(none.text), { statusCode: 404, error: 'Not Found' });
});

t.test('health, readiness, metrics only on the internal listener', async (t) => {
  const upstream = await startUpstream((_req, res) => res.end('ok'));
  t.teardown(() => upstream.close());
  const stack = await startStack(t, [], { publish: false, metricsPort: 0 });
  const { proxy } = stack;
  t.equal((await send(`${proxy.url}/healthz`)).status, 200, 'alive at once');
  t.ok(proxy.metricsUrl, 'metrics listener started');

  await stack.publisher.republish({ version: 5, routes: [makeRoute('kim-desk', upstream.url)] });
  await waitForSubscriber(stack.subscriber, () => stack.subscriber.version === 5);
  const ready = await send(`${proxy.url}/readyz`);
  t.equal(ready.status, 200);
  t.match(JSON.parse(ready.text), { status: 'ready', routeVersion: 5, routes: 1 });
  t.equal((await send(`${proxy.metricsUrl}/readyz`)).status, 200, 'readiness on the metrics listener too');
  t.equal((await send(`${proxy.url}/desktop/kim-desk/`)).status, 200);
  t.equal((await send(`${proxy.url}/desktop/kim-missing/`)).status, 404);

  const publicMetrics = await send(`${proxy.url}/metrics`);
  t.equal(publicMetrics.status, 404, '/metrics is not on the public port');
  const metrics = await send(`${proxy.metricsUrl}/metrics`);
  t.equal(metrics.status, 200);
  t.match(metrics.text, /deskhub_proxy_requests_total\{status_class="2xx"\} [1-9]/);
  t.match(metrics.text, /deskhub_proxy_requests_total\{status_class="4xx"\} [1-9]/);
  t.match(metrics.text, /deskhub_proxy_routes 1\b/);
  t.match(metrics.text, /deskhub_proxy_route_version 5\b/);
  t.match(metrics.text, /deskhub_proxy_route_resyncs_total [1-9]/);
  t.match(metrics.text, /deskhub_proxy_route_resync_seconds_count [1-9]/, 'each resync timed');
  t.match(metrics.text, /deskhub_proxy_open_websockets 0\b/);
  t.match(metrics.text, /deskhub_proxy_upstream_errors_total\{kind="refused"\} 0/);
  t.match(metrics.text, /deskhub_proxy_process_resident_memory_bytes \d+/, 'process metrics too');
  t.equal((await send(`${proxy.metricsUrl}/healthz`)).status, 200);
  t.equal((await send(`${proxy.metricsUrl}/other`)).status, 404);
});

t.test('the access hook sees every request with its route; denials are readable', async (t) => {
  const upstream = await startUpstream((_req, res) => res.end('inside'));
  t.teardown(() => upstream.close());
  const calls: Array<{ path: string; kind: string; url: string | undefined }> = [];
  const { proxy, subscriber } = await startStack(t, [makeRoute('lee-desk', upstream.url), makeRoute('lee-other', upstream.url)], {
    authMode: 'oidc',
    authorize: async (req, route, kind) => {
      calls.push({ path: route.path, kind, url: req.url });
      if (route.path === 'lee-other') return { allow: false, status: 403, message: 'This desktop is not shared with you.' };
      if (req.headers.cookie !== 'deskhub_session=good') {
        return { allow: false, status: 401, message: 'Sign in first.', redirectTo: '/auth/login?next=' + encodeURIComponent(req.url ?? '/') };
      }
      return { allow: true, userId: 'user-lee' };
    },
  });
  t.equal((await send(`${proxy.url}/desktop/lee-desk/a`, { headers: { cookie: 'deskhub_session=good' } })).text, 'inside');
  const api = await send(`${proxy.url}/desktop/lee-desk/a`);
  t.equal(api.status, 401, 'API clients get 401 JSON');
  t.match(JSON.parse(api.text), { statusCode: 401, message: 'Sign in first.' });
  const browser = await send(`${proxy.url}/desktop/lee-desk/a`, { headers: { accept: 'text/html' } });
  t.equal(browser.status, 302, 'browsers are sent to sign in');
  t.equal(browser.headers.location, '/auth/login?next=%2Fdesktop%2Flee-desk%2Fa');
  const forbidden = await send(`${proxy.url}/desktop/lee-other/`, { headers: { accept: 'text/html' } });
  t.equal(forbidden.status, 403);
  t.match(forbidden.text, /not shared with you/);
  t.same(
    calls.map((c) => `${c.kind} ${c.path} ${c.url}`),
    ['http lee-desk /desktop/lee-desk/a', 'http lee-desk /desktop/lee-desk/a', 'http lee-desk /desktop/lee-desk/a', 'http lee-other /desktop/lee-other/'],
  );
  const unknown = await send(`${proxy.url}/desktop/nobody/`);
  t.equal(unknown.status, 404);
  t.equal(calls.length, 4, 'no hook call without a route');
  t.ok(subscriber.ready);

  const throwing = await startStack(t, [makeRoute('lee-desk', upstream.url)], {
    authMode: 'oidc',
    authorize: () => {
      throw new Error('verifier exploded');
    },
  });
  const failed = await send(`${throwing.proxy.url}/desktop/lee-desk/`);
  t.equal(failed.status, 500, 'a failing hook denies with 500');
  t.notMatch(failed.text, /exploded/, 'without its internals');
});

t.test('start refuses to let everyone in outside dev mode', async (t) => {
  const { createRouteStream } = await import('@deskhub/route-stream');
  const { startProxy } = await import('../src/index.ts');
  const stream = createRouteStream();
  t.teardown(() => stream.close());
  await t.rejects(startProxy({ subscriber: stream.subscriber(), port: 0, authMode: 'oidc' }), /access hook/);
  await t.rejects(startProxy({ subscriber: stream.subscriber(), port: 0 }), /access hook/, 'no mode given is not dev');
});
