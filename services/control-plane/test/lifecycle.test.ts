/**
 * The whole lifecycle of a `demo` desktop (a real process speaking the Kasm contract) through
 * the real proxy, as a user sees it: sign in, create, follow the event stream until running,
 * open the page and a WebSocket under /desktop/<path>/, stop (route gone at once), start
 * again, delete (gone, no process left). Runs the embedded start in this process.
 */
import t from 'tap';
import type WebSocket from 'ws';
import { eq } from 'drizzle-orm';
import { startEmbedded, type RunningDeskhub } from '../src/embedded-start.ts';
import { desktops, type DesktopCredentials } from '../src/db/schema.ts';
import { echo, tempDir, testEnv, testProcesses, upgradeDesktop, waitFor, type DesktopJson } from './helpers.ts';

interface StreamedEvent {
  id: number;
  kind: string;
  message: string;
  state: string | null;
}

/** Reads SSE messages until one carries a final state; bounded by `timeoutMs`. */
async function followEvents(url: string, cookie: string, timeoutMs: number, lastEventId?: number): Promise<StreamedEvent[]> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`no final state within ${timeoutMs} ms`)), timeoutMs);
  const events: StreamedEvent[] = [];
  try {
    const headers: Record<string, string> = { cookie, accept: 'text/event-stream' };
    if (lastEventId !== undefined) headers['last-event-id'] = String(lastEventId);
    const res = await fetch(url, { headers, signal: controller.signal });
    if (res.status !== 200 || !res.body) throw new Error(`event stream answered ${res.status}`);
    if (!res.headers.get('content-type')?.startsWith('text/event-stream')) throw new Error(`event stream content-type ${res.headers.get('content-type')}`);
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk as Uint8Array, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) !== -1) {
        const message = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = message.split('\n').find((line) => line.startsWith('data: '));
        if (!data) continue;
        const event = JSON.parse(data.slice(6)) as StreamedEvent;
        events.push(event);
        if (event.state === 'running' || event.state === 'failed') return events;
      }
    }
    throw new Error('event stream ended before a final state');
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

async function openSocket(url: string, origin: string, cookie: string): Promise<WebSocket> {
  const { status, ws } = await upgradeDesktop(url, { origin, cookie });
  if (status !== 'open') throw new Error(`upgrade answered ${status}`);
  return ws!;
}


t.test('demo desktop: create, reach it through the proxy, stop, start, delete', async (t) => {
  const { dir, cleanup } = tempDir('lifecycle');
  const env = testEnv(dir, { PUBLIC_URL: 'http://127.0.0.1:8080', REPLICA_WAIT_MS: '10000' });
  const deskhub: RunningDeskhub = await startEmbedded({ env });
  t.teardown(async () => {
    await deskhub.close();
    for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
    cleanup();
  });
  const base = deskhub.proxyUrl;

  const login = await fetch(`${base}/auth/dev-login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice' }) });
  t.equal(login.status, 200);
  // The session cookie and the desktop access cookie (the proxy lets only the owner through).
  const cookie = login.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  t.match(cookie, /deskhub_session=/);
  t.match(cookie, /deskhub_access=/);
  const api = (path: string, init: RequestInit = {}) => fetch(`${base}${path}`, { ...init, headers: { cookie, ...(init.body ? { 'content-type': 'application/json' } : {}), ...init.headers } });

  const catalog = (await (await api('/api/catalog')).json()) as { id: string; available: boolean }[];
  t.equal(catalog.find((c) => c.id === 'demo')?.available, true, 'the demo type can run here');

  const created = await api('/api/desktops', { method: 'POST', body: JSON.stringify({ type: 'demo' }) });
  t.equal(created.status, 201);
  const desktop = (await created.json()) as DesktopJson;
  t.equal(desktop.proxyPath, 'alice-demo');
  t.equal(desktop.url, 'http://127.0.0.1:8080/desktop/alice-demo/?path=desktop/alice-demo/websockify&idle_disconnect=10080&reconnect=true');

  const events = await followEvents(`${base}/api/desktops/${desktop.id}/events/stream`, cookie, 90_000);
  t.equal(events.at(-1)?.state, 'running', events.at(-1)?.message ?? '');
  t.same(
    events.filter((e) => e.state).map((e) => e.state),
    ['creating', 'starting', 'running'],
    'the stream replays and follows the state changes',
  );
  t.ok(events.some((e) => e.kind === 'probe'), 'readiness probing is reported');
  t.ok(events.some((e) => e.kind === 'route' && /every proxy replica holds/.test(e.message)), 'the replica confirmation is reported');

  const entry = new URL(desktop.url);
  const page = await fetch(`${base}${entry.pathname}${entry.search}`, { headers: { cookie } });
  t.equal(page.status, 200);
  t.match(await page.text(), /Demo desktop <span id="name">alice-demo<\/span>/, 'the desktop page arrives through the proxy');

  // What reached the container: the credentials deskhub generated, and none of our cookies.
  const seen = await fetch(`${base}/desktop/alice-demo/__echo`, { headers: { cookie } });
  t.equal(seen.status, 200);
  const headers = JSON.parse(Buffer.from(seen.headers.get('x-echo-headers')!, 'base64').toString()) as Record<string, string>;
  const [row] = await deskhub.controlPlane.app.db.select().from(desktops).where(eq(desktops.id, desktop.id));
  const password = deskhub.controlPlane.app.secrets.open<DesktopCredentials>(row!.credentials!).env.VNC_PW!;
  t.equal(headers.authorization, `Basic ${Buffer.from(`kasm_user:${password}`).toString('base64')}`, 'Basic kasm_user:VNC_PW injected');
  t.notOk(headers.cookie?.includes('deskhub_session'), 'the session cookie does not reach the desktop');
  t.notOk(headers.cookie?.includes('deskhub_access'), 'nor does the access cookie');

  const wsUrl = `${base.replace(/^http/, 'ws')}/desktop/alice-demo/websockify`;
  const ws = await openSocket(wsUrl, deskhub.publicUrl, cookie);
  t.equal(ws.protocol, 'binary');
  t.equal(await echo(ws, 'hello desktop'), 'hello desktop', 'WebSocket echo through the proxy');
  const wsClosed = new Promise<void>((resolve) => ws.once('close', () => resolve()));

  const stopped = await api(`/api/desktops/${desktop.id}/stop`, { method: 'POST', body: '{}' });
  t.equal(stopped.status, 200);
  t.equal(((await stopped.json()) as DesktopJson).state, 'stopping');
  t.equal((await fetch(`${base}/desktop/alice-demo/`, { headers: { cookie } })).status, 404, 'the route is gone as soon as stop answers');
  await wsClosed;
  t.pass('the open WebSocket was closed when the route went away');
  await waitFor('stopped', async () => (((await (await api(`/api/desktops/${desktop.id}`)).json()) as DesktopJson).state === 'stopped' ? true : undefined), 30_000);
  await waitFor('the demo process to end', () => (testProcesses(dir).length === 0 ? true : undefined), 15_000);

  const started = await api(`/api/desktops/${desktop.id}/start`, { method: 'POST', body: '{}' });
  t.equal(started.status, 200);
  // Resuming after the last event seen (as EventSource does with Last-Event-ID) skips the first run's events.
  const again = await followEvents(`${base}/api/desktops/${desktop.id}/events/stream`, cookie, 90_000, events.at(-1)!.id);
  t.ok(again.every((e) => e.id > events.at(-1)!.id), 'only events after Last-Event-ID');
  t.same(
    again.filter((e) => e.state).map((e) => e.state),
    ['stopping', 'stopped', 'starting', 'running'],
  );
  t.equal((await fetch(`${base}/desktop/alice-demo/`, { headers: { cookie } })).status, 200, 'reachable again after start');
  const ws2 = await openSocket(wsUrl, deskhub.publicUrl, cookie);
  t.equal(await echo(ws2, 'back again'), 'back again');
  ws2.close();

  // The state gauge is refreshed by the reconciliation pass (every 500 ms here), not by start itself.
  const text = await waitFor('the state gauge to count the running desktop', async () => {
    const body = await (await fetch(deskhub.controlPlane.metricsUrl!)).text();
    return /deskhub_desktops\{state="running"\} 1/.test(body) ? body : undefined;
  }, 10_000);
  t.match(text, /deskhub_desktops\{state="running"\} 1/, 'control-plane metrics count the running desktop');
  t.match(text, /deskhub_desktop_ready_seconds_count\{type="demo",runtime="process"\} 2/);
  t.match(text, /deskhub_reconcile_pass_seconds_count [1-9]/, 'each reconciliation pass timed');

  const deleted = await api(`/api/desktops/${desktop.id}`, { method: 'DELETE' });
  t.equal(deleted.status, 204);
  t.equal((await fetch(`${base}/desktop/alice-demo/`, { headers: { cookie } })).status, 404, 'gone through the proxy');
  t.equal((await api(`/api/desktops/${desktop.id}`)).status, 404, 'gone from the API');
  await waitFor('no demo process left', () => (testProcesses(dir).length === 0 ? true : undefined), 15_000);
  t.pass('no demo process left');
});

t.test('closing the embedded start stops desktop processes', async (t) => {
  const { dir, cleanup } = tempDir('embedded-close');
  const env = testEnv(dir);
  const deskhub = await startEmbedded({ env });
  t.teardown(() => {
    for (const pid of testProcesses(dir)) process.kill(pid, 'SIGKILL');
    cleanup();
  });
  const app = deskhub.controlPlane.app;
  const login = await app.inject({ method: 'POST', url: '/auth/dev-login', payload: { username: 'bob' } });
  const cookie = `deskhub_session=${login.cookies.find((c) => c.name === 'deskhub_session')!.value}`;
  const ids: string[] = [];
  for (const type of ['web', 'web', 'desktop']) ids.push((await app.inject({ method: 'POST', url: '/api/desktops', headers: { cookie }, payload: { type } })).json().id);
  for (const id of ids) {
    await waitFor('running', async () => ((await app.inject({ url: `/api/desktops/${id}`, headers: { cookie } })).json().state === 'running' ? true : undefined), 30_000);
  }
  t.equal(testProcesses(dir).length, 3, 'three desktop processes run');
  await deskhub.close();
  t.same(testProcesses(dir), [], 'none is left after close');

  // The next start shows them stopped (not running, not failed), and start brings one back.
  const next = await startEmbedded({ env });
  t.teardown(() => next.close());
  const app2 = next.controlPlane.app;
  const list = (await app2.inject({ url: '/api/desktops', headers: { cookie } })).json<DesktopJson[]>();
  t.same(list.map((d) => d.state), ['stopped', 'stopped', 'stopped']);
  t.match(list[0]?.reason, /stopped when deskhub shut down/);
  await app2.inject({ method: 'POST', url: `/api/desktops/${ids[0]}/start`, headers: { cookie } });
  await waitFor('running again', async () => ((await app2.inject({ url: `/api/desktops/${ids[0]}`, headers: { cookie } })).json().state === 'running' ? true : undefined), 30_000);
  t.equal(testProcesses(dir).length, 1, 'one desktop started again');
});
