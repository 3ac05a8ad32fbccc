/**
 * A VNC desktop's activity is its input (rfb-input.ts), seen by a real proxy in a real WebSocket:
 * page loads, a background tab's keep-alives and update requests leave the desktop's activity
 * where it was; a key press moves it. The desktop receives exactly the bytes the browser sent. A
 * web app's route (activity traffic, or none given) counts every request, as before.
 */
import t from 'tap';
import type WebSocket from 'ws';
import { makeRoute, startStack } from './helpers.ts';
import { open, startRecordingDesktop } from './ws-helpers.ts';

const rfbHandshake = Buffer.concat([Buffer.from('RFB 003.008\n', 'latin1'), Buffer.from([1, 1])]);
const keyUp1 = Buffer.from([4, 0, 0, 0, 0, 0, 0, 1]); // Kasm's keep-alive
const updateRequest = Buffer.from([3, 1, 0, 0, 0, 0, 4, 0, 3, 0]);
const keyDownA = Buffer.from([4, 1, 0, 0, 0, 0, 0, 0x61]);

function sendAll(ws: WebSocket, messages: Buffer[]): Promise<void> {
  return Promise.all(messages.map((m) => new Promise<void>((resolve, reject) => ws.send(m, (err) => (err ? reject(err) : resolve()))))).then(() => undefined);
}

t.test('input routes: only input moves the activity; traffic routes: every request', async (t) => {
  const desktop = await startRecordingDesktop();
  t.teardown(() => desktop.close());
  const vnc = makeRoute('ann-vnc', desktop.url, { activity: { on: 'input', rfb: 'kasmvnc' } });
  const web = makeRoute('ann-web', desktop.url, { activity: { on: 'traffic' } });
  const older = makeRoute('ann-old', desktop.url); // published before routes had an activity
  const { proxy, subscriber, publisher } = await startStack(t, [vnc, web, older]);
  const activityOf = async (path: string): Promise<number | undefined> => {
    await subscriber.flushActivity();
    return (await publisher.readActivity()).get(path);
  };

  // Page loads and a background tab: no activity on the input route.
  t.equal((await fetch(`${proxy.url}/desktop/ann-vnc/`)).status, 200);
  const ws = await open(`${proxy.url.replace('http', 'ws')}/desktop/ann-vnc/websockify`);
  t.teardown(() => ws.terminate());
  const idle = [rfbHandshake, ...Array.from({ length: 20 }, (_, i) => (i % 2 ? keyUp1 : updateRequest))];
  await sendAll(ws, idle);
  await waitForBytes(desktop.received, idle);
  t.equal(await activityOf('ann-vnc'), undefined, 'page loads, keep-alives and update requests are not input');

  const before = Date.now();
  await sendAll(ws, [keyDownA]);
  await waitForBytes(desktop.received, [...idle, keyDownA]);
  const at = await activityOf('ann-vnc');
  t.ok(at !== undefined && at >= before, 'a key press is input');
  t.same(Buffer.concat(desktop.received), Buffer.concat([...idle, keyDownA]), 'the desktop got exactly the bytes the browser sent');

  for (const path of ['ann-web', 'ann-old']) {
    const t0 = Date.now();
    t.equal((await fetch(`${proxy.url}/desktop/${path}/`)).status, 200);
    const seen = await activityOf(path);
    t.ok(seen !== undefined && seen >= t0, `${path}: a page load is activity`);
  }
});

t.test('a stream the watch cannot follow counts as input', async (t) => {
  const desktop = await startRecordingDesktop();
  t.teardown(() => desktop.close());
  const { proxy, subscriber, publisher } = await startStack(t, [makeRoute('ann-vnc', desktop.url, { activity: { on: 'input', rfb: 'standard' } })]);
  const ws = await open(`${proxy.url.replace('http', 'ws')}/desktop/ann-vnc/websockify`);
  t.teardown(() => ws.terminate());
  const t0 = Date.now();
  await sendAll(ws, [Buffer.from('not RFB at all')]);
  await waitForBytes(desktop.received, [Buffer.from('not RFB at all')]);
  await subscriber.flushActivity();
  const at = (await publisher.readActivity()).get('ann-vnc');
  t.ok(at !== undefined && at >= t0, 'counted as input, never taken for idle');
});

async function waitForBytes(received: Buffer[], want: Buffer[]): Promise<void> {
  const total = want.reduce((n, b) => n + b.length, 0);
  for (let i = 0; i < 200; i++) {
    if (received.reduce((n, b) => n + b.length, 0) >= total) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('the desktop did not get the bytes');
}
