/**
 * The addresses the browser code builds, checked in Node: sign-in never redirects off this origin
 * or back to itself, desktops open on this origin, and the iframe gets the KasmVNC query exactly once.
 */
import t from 'tap';
import { desktopPath, frameHref, handoffOf, KASM_IFRAME_QUERY, renewalHref, safeNext, tabHref, withIframeQuery } from '../client/links.ts';
import { ago } from '../client/components/time.ts';

t.test('safeNext keeps same-origin paths and refuses everything else', async (t) => {
  t.equal(safeNext('/admin'), '/admin');
  t.equal(safeNext('/desktop/alice-demo/?path=desktop/alice-demo/websockify'), '/desktop/alice-demo/?path=desktop/alice-demo/websockify');
  for (const bad of [null, undefined, '', 'admin', 'https://evil.example/', '//evil.example/x', '/\\evil.example', 'javascript:alert(1)']) {
    t.equal(safeNext(bad), '/', `refuses ${String(bad)}`);
  }
  for (const loop of ['/signin', '/signin?next=%2F', '/signin/']) t.equal(safeNext(loop), '/', `no loop back to ${loop}`);
  // The control plane's rule: the path as the browser resolves it, never the raw one.
  t.equal(safeNext('/desktop/../admin'), '/admin', 'dot segments resolved');
  t.equal(safeNext('/desktop/%2e%2e/signin'), '/', 'encoded dot segments resolved (here into a loop)');
  for (const bad of ['/desktop/a%2f..%2fb', '/desktop/a%5Cb', '/desktop/a\\..\\b', '/desktop/a b']) t.equal(safeNext(bad), '/', `refuses ${bad}`);
});

t.test('desktopPath turns the API url into a path on this origin', async (t) => {
  const origin = 'http://127.0.0.1:8080';
  t.equal(
    desktopPath('http://localhost:8080/desktop/alice-demo/?path=desktop/alice-demo/websockify', 'alice-demo', origin),
    '/desktop/alice-demo/?path=desktop/alice-demo/websockify',
  );
  t.equal(desktopPath('/desktop/bob-x/', 'bob-x', origin), '/desktop/bob-x/');
  t.equal(desktopPath('http://[bad', 'bob-x', origin), '/desktop/bob-x/', 'an unparsable url falls back to the proxy path');
});

t.test('withIframeQuery appends the KasmVNC iframe query once, before any fragment', async (t) => {
  t.equal(withIframeQuery('/desktop/a/?path=desktop/a/websockify'), `/desktop/a/?path=desktop/a/websockify&${KASM_IFRAME_QUERY}`);
  t.equal(withIframeQuery('/desktop/a/'), `/desktop/a/?${KASM_IFRAME_QUERY}`);
  t.equal(withIframeQuery('/desktop/a/?'), `/desktop/a/?${KASM_IFRAME_QUERY}`);
  t.equal(withIframeQuery('/desktop/a/?x=1#top'), `/desktop/a/?x=1&${KASM_IFRAME_QUERY}`);
});

t.test('a desktop on its own origin opens through the hand-off, with the iframe query on its next', async (t) => {
  const origin = 'http://127.0.0.1:8080';
  // As the control plane's desktopUrls makes them, PUBLIC_URL http://localhost:8080, DESKTOP_ORIGIN http://*.localhost:8080.
  const next = '/desktop/alice-demo/?path=desktop/alice-demo/websockify';
  const d = {
    proxyPath: 'alice-demo',
    url: `http://alice-demo.localhost:8080${next}`,
    openUrl: `http://localhost:8080/auth/desktop-handoff?desktop=alice-demo&next=${encodeURIComponent(next)}`,
  };
  t.same(handoffOf(d.openUrl, origin), { desktop: 'alice-demo', next });
  const tab = tabHref(d, origin);
  t.ok(tab.startsWith('/auth/desktop-handoff?'), `a new tab goes to the hand-off on this origin, whatever PUBLIC_URL calls it (${tab})`);
  t.same(handoffOf(tab, origin), { desktop: 'alice-demo', next }, 'with the same next');
  const frame = frameHref(d, origin);
  t.same(handoffOf(frame, origin), { desktop: 'alice-demo', next: `${next}&${KASM_IFRAME_QUERY}` }, 'the iframe: the KasmVNC query on the next path');
  t.equal(renewalHref(d, origin), '/auth/desktop-handoff?desktop=alice-demo', 'the renewal frame: the hand-off without next');
  // A shared desktop has only openUrl.
  const shared = { proxyPath: 'alice-demo', openUrl: d.openUrl };
  t.equal(frameHref(shared, origin), frame);
  t.equal(renewalHref(shared, origin), '/auth/desktop-handoff?desktop=alice-demo');
  // A hand-off without next (never sent by the API, but read safely): the desktop's root.
  t.same(handoffOf(frameHref({ proxyPath: 'a', openUrl: '/auth/desktop-handoff?desktop=a' }, origin), origin), { desktop: 'a', next: `/desktop/a/?${KASM_IFRAME_QUERY}` });
});

t.test('without desktop origins, openUrl is the desktop itself: opened as before, nothing to renew', async (t) => {
  const origin = 'http://127.0.0.1:8080';
  const url = 'http://localhost:8080/desktop/bob-x/?path=desktop/bob-x/websockify';
  for (const d of [{ proxyPath: 'bob-x', url, openUrl: url }, { proxyPath: 'bob-x', url }]) {
    t.equal(tabHref(d, origin), '/desktop/bob-x/?path=desktop/bob-x/websockify');
    t.equal(frameHref(d, origin), `/desktop/bob-x/?path=desktop/bob-x/websockify&${KASM_IFRAME_QUERY}`);
    t.equal(renewalHref(d, origin), null);
  }
  t.equal(handoffOf('/auth/desktop-handoff', origin), null, 'a hand-off path without a desktop is not one');
  t.equal(handoffOf('http://[bad', origin), null);
});

t.test('ago says how long ago, and "—" when unknown', async (t) => {
  const now = Date.parse('2025-06-01T12:00:00Z');
  t.equal(ago(null, now), '—');
  t.equal(ago('not a date', now), '—');
  t.equal(ago('2025-06-01T11:59:55Z', now), 'just now');
  t.match(ago('2025-06-01T11:55:00Z', now), /5 minutes ago/);
  t.match(ago('2025-05-30T12:00:00Z', now), /2 days ago/);
});
