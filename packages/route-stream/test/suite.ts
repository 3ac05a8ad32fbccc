/**
 * The route-stream semantics, written once and run against every transport (memory.test.ts,
 * redis.test.ts), so the embedded start and a Redis deployment behave the same.
 */
import type tapRoot from 'tap';
import { parseViewerKey, viewerKey, type Channel, type RouteBus } from '../src/bus.ts';
import type { RouteChange, RoutePublisher, RouteStream, RouteSubscriber, Route } from '../src/index.ts';
import type { SubscriberOptions } from '../src/stream.ts';
import { captureLog, eventually, nextEvent, paths, resyncSeen, route, type CapturedLog } from './helpers.ts';

export interface Harness {
  /** The control plane's stream. */
  stream: RouteStream;
  /** A stream for another replica on the same store (another process for Redis; the same bus in memory). */
  replicaStream(): RouteStream;
  /** The control plane stream's bus, to forge announcements. */
  bus: RouteBus;
  log: CapturedLog;
  /** Sends a raw message on a channel without touching the store. */
  injectMessage(channel: Channel, raw: string): Promise<void>;
  /** Changes the stored snapshot without publishing (a message everyone missed). json null deletes. */
  writeSilently(version: number, path: string, json: string | null): Promise<void>;
  /** The store forgets everything (Redis restarted without its data). */
  loseData(): Promise<void>;
  /** Every subscription loses its connection and gets it back. */
  dropSubscriptions(): Promise<void>;
  close(): Promise<void>;
}

export type MakeHarness = (log: CapturedLog) => Promise<Harness>;

const WAIT = 10_000;

function put(version: number, r: Route): RouteChange {
  return { version, op: 'put', route: r };
}

async function readySubscriber(stream: RouteStream, options?: SubscriberOptions): Promise<RouteSubscriber> {
  const sub = stream.subscriber({ checkIntervalMs: 60_000, ...options });
  const ready = nextEvent(sub, 'ready');
  await sub.start();
  await ready;
  return sub;
}

/** Publishes puts of the given paths as versions from+1, from+2, ... */
async function publishAll(publisher: RoutePublisher, from: number, names: string[]): Promise<number> {
  let version = from;
  for (const name of names) {
    version++;
    if (!(await publisher.publish(put(version, route(name))))) throw new Error(`change ${version} not applied`);
  }
  return version;
}

export function routeStreamSuite(tap: typeof tapRoot, transport: string, make: MakeHarness): void {
  const setup = async (t: { teardown(fn: () => unknown): void }): Promise<Harness> => {
    const h = await make(captureLog());
    t.teardown(() => h.close());
    return h;
  };

  tap.test(`${transport}: an empty store is version 0 and ready; a late joiner gets the full table`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    t.equal(await publisher.storedVersion(), null, 'nothing published yet');
    const first = h.stream.subscriber({ checkIntervalMs: 60_000 });
    t.equal(first.ready, false, 'not ready before start');
    const ready = nextEvent(first, 'ready');
    await first.start();
    t.same(await ready, [0]);
    t.equal(first.ready, true);
    t.equal(first.table.size, 0);

    t.equal(await publisher.republish({ version: 3, routes: [route('a'), route('b'), route('c')] }), true);
    t.equal(await publisher.publish({ version: 4, op: 'delete', path: 'b' }), true);
    t.equal(await publisher.publish(put(5, route('d', 9000))), true);
    t.ok(await first.waitForVersion(5, WAIT), 'first subscriber follows');
    t.same(paths(first), ['a', 'c', 'd']);

    const late = await readySubscriber(h.replicaStream());
    t.equal(late.version, 5, 'late joiner starts at the stored version');
    t.same(paths(late), ['a', 'c', 'd']);
    t.same(late.table.get('d'), route('d', 9000), 'routes arrive whole');
    t.equal(late.table.get('b'), undefined);
  });

  tap.test(`${transport}: changes apply in order and each changed path is reported once`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 0, routes: [] });
    const sub = await readySubscriber(h.stream);
    const seen: string[] = [];
    sub.on('change', (path, before, after) => seen.push(`${path}:${before ? 'had' : 'new'}:${after ? after.upstream.port : 'gone'}`));

    let version = 0;
    const expected: string[] = [];
    for (let i = 0; i < 30; i++) {
      version++;
      await publisher.publish(put(version, route(`r${i % 10}`, 1000 + i)));
      expected.push(`r${i % 10}:${i < 10 ? 'new' : 'had'}:${1000 + i}`);
    }
    version++;
    await publisher.publish({ version, op: 'delete', path: 'r3' });
    expected.push('r3:had:gone');
    version++;
    await publisher.publish(put(version, route('r4', 1024))); // same as held: no change to report
    t.ok(await sub.waitForVersion(version, WAIT));
    t.same(seen, expected, 'every change, in publication order');
    t.equal(sub.table.size, 9);
    t.equal(sub.table.get('r9')?.upstream.port, 1029);
    t.equal(sub.resyncs, 1, 'only the initial load, no resync');
  });

  tap.test(`${transport}: versions never go backwards`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 5, routes: [route('a')] });
    const sub = await readySubscriber(h.stream);
    t.equal(await publisher.publish(put(6, route('b'))), true);
    t.equal(await publisher.publish(put(6, route('x'))), false, 'same version again is refused');
    t.equal(await publisher.publish(put(4, route('x'))), false, 'older version is refused');
    t.equal(await publisher.republish({ version: 3, routes: [route('old')] }), false, 'older snapshot is refused');
    t.equal(await publisher.storedVersion(), 6);
    t.equal(await publisher.publish(put(7, route('c'))), true);
    t.ok(await sub.waitForVersion(7, WAIT));
    t.same(paths(sub), ['a', 'b', 'c']);
    t.equal(sub.table.get('x'), undefined, 'refused changes never reach a subscriber');
  });

  tap.test(`${transport}: a change the store is not ready for is refused and asks for a republish`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    let requests = 0;
    publisher.onResyncRequest(() => requests++);
    t.equal(await publisher.publish(put(4, route('a'))), false, 'an empty store cannot take change 4');
    t.equal(requests, 1, 'the control plane is asked to republish');
    t.equal(await publisher.storedVersion(), null);
    t.equal(await publisher.publish(put(1, route('a'))), true, 'change 1 needs nothing before it');
    t.equal(await publisher.storedVersion(), 1);
  });

  tap.test(`${transport}: subscribe, load, then apply buffered changes: no gap while publishing`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 0, routes: [] });
    const names = Array.from({ length: 150 }, (_, i) => `p${i}`);
    const sub = h.replicaStream().subscriber({ checkIntervalMs: 60_000 });
    const reported = new Set<string>();
    sub.on('change', (path) => reported.add(path));
    // Start the subscriber in the middle of a stream of changes.
    const publishing = publishAll(publisher, 0, names);
    await new Promise((r) => setImmediate(r));
    await sub.start();
    const last = await publishing;
    t.ok(await sub.waitForVersion(last, WAIT), 'caught up');
    t.equal(sub.table.size, names.length, 'every route, none lost between snapshot and buffer');
    t.equal(sub.resyncs, 1, 'the join needed no resync');
    t.equal(reported.size, names.length, 'every route reported once');
  });

  tap.test(`${transport}: a change that never arrived (a gap) triggers a full resync`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 2, routes: [route('a'), route('b')] });
    const sub = await readySubscriber(h.stream);
    const changes: Array<[string, boolean]> = [];
    sub.on('change', (path, _before, after) => changes.push([path, after !== undefined]));

    // Change 3 reaches the store but its message is lost; change 4 arrives normally.
    await h.writeSilently(3, 'c', JSON.stringify(route('c')));
    const resync = nextEvent(sub, 'resync');
    t.equal(await publisher.publish({ version: 4, op: 'delete', path: 'a' }), true);
    t.same(resyncSeen(t, await resync), [4, 'gap']);
    t.equal(sub.version, 4);
    t.same(paths(sub), ['b', 'c']);
    t.same(changes.sort(), [['a', false], ['c', true]], 'the resync reports what it changed, withdrawn routes included');

    // A forged change far ahead: a gap, and the snapshot (still 4) wins.
    const second = nextEvent(sub, 'resync');
    await h.injectMessage('changes', JSON.stringify(put(9, route('forged'))));
    t.same(resyncSeen(t, await second), [4, 'gap']);
    t.equal(sub.table.get('forged'), undefined, 'a change after a gap is never applied');
    t.equal(await publisher.publish(put(5, route('e'))), true);
    t.ok(await sub.waitForVersion(5, WAIT), 'the stream goes on after the resync');
  });

  tap.test(`${transport}: a malformed message is logged, never applied, and triggers a resync`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 1, routes: [route('a')] });
    const sub = await readySubscriber(h.stream);
    const before = sub.table.get('a');

    const bad = [
      'not json at all',
      JSON.stringify({ version: 2, op: 'put', route: { ...route('b'), upstream: { scheme: 'ftp', host: 'x', port: 1, verifyTls: true } } }),
      JSON.stringify({ version: 2, op: 'put', route: { ...route('b'), authorization: 'Basic x\r\nX-Evil: 1' } }),
      JSON.stringify({ version: 2, op: 'delete', path: '../etc' }),
      JSON.stringify({ version: -1, op: 'delete', path: 'a' }),
      JSON.stringify([1, 2, 3]),
    ];
    for (const raw of bad) {
      const resync = nextEvent(sub, 'resync');
      await h.injectMessage('changes', raw);
      t.same(resyncSeen(t, await resync), [1, 'malformed'], `resync after ${raw.slice(0, 40)}`);
    }
    t.equal(sub.version, 1);
    t.same(paths(sub), ['a'], 'table untouched');
    t.same(sub.table.get('a'), before, 'same route after the resyncs');
    t.equal(h.log.find('malformed route change').length, bad.length, 'each one logged');
    t.match(h.log.find('malformed route change')[1], { err: /upstream\.scheme/ }, 'the log says what was wrong');

    // A malformed route inside the snapshot is left out, the rest loads.
    await h.writeSilently(2, 'broken', '{"path":"broken"}');
    await h.writeSilently(3, 'c', JSON.stringify(route('c')));
    const resync = nextEvent(sub, 'resync');
    await publisher.publish(put(4, route('d')));
    t.same(resyncSeen(t, await resync), [4, 'gap']);
    t.same(paths(sub), ['a', 'c', 'd']);
    t.equal(h.log.find('malformed routes in the snapshot').length, 1);
  });

  tap.test(`${transport}: the periodic version check catches up a subscriber that missed messages`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 1, routes: [route('a'), route('b')] });
    const sub = await readySubscriber(h.stream, { checkIntervalMs: 50 });
    const withdrawn = nextEvent(sub, 'change', (path, _b, after) => path === 'a' && after === undefined);
    const resync = nextEvent(sub, 'resync', (version) => version === 3);
    await h.writeSilently(2, 'c', JSON.stringify(route('c')));
    await h.writeSilently(3, 'a', null);
    t.same(resyncSeen(t, await resync), [3, 'behind']);
    await withdrawn;
    t.same(paths(sub), ['b', 'c']);
  });

  tap.test(`${transport}: a reconnect triggers a resync`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 1, routes: [route('a')] });
    const sub = await readySubscriber(h.stream);
    const resync = nextEvent(sub, 'resync', (_v, reason) => reason === 'reconnect');
    await h.dropSubscriptions();
    t.same(resyncSeen(t, await resync), [1, 'reconnect']);
    t.equal(await publisher.publish(put(2, route('b'))), true);
    t.ok(await sub.waitForVersion(2, WAIT), 'changes flow again after the reconnect');
  });

  tap.test(`${transport}: a republish replaces the table and reports the differences`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 2, routes: [route('a'), route('b')] });
    const sub = await readySubscriber(h.stream);
    const changes: string[] = [];
    sub.on('change', (path, before, after) => changes.push(`${path}:${before ? 1 : 0}${after ? 1 : 0}`));
    const resync = nextEvent(sub, 'resync');
    t.equal(await publisher.republish({ version: 10, routes: [route('b'), route('c'), route('a', 1)] }), true);
    t.same(resyncSeen(t, await resync), [10, 'republished']);
    t.same(changes.sort(), ['a:11', 'c:01'], 'b unchanged is not reported');
    await t.rejects(publisher.republish({ version: 11, routes: [route('a'), route('a')] }), /appears twice/);
  });

  tap.test(`${transport}: after the store loses its data, replicas keep their table until a republish, never going back`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    let requests = 0;
    let database: { version: number; routes: Route[] } = { version: 2, routes: [route('old')] };
    publisher.onResyncRequest(() => {
      requests++;
      // The control plane answers with the database's snapshot, whatever version it holds.
      void publisher.republish(database);
    });
    await publisher.republish({ version: 5, routes: [route('a'), route('b')] });
    const sub = await readySubscriber(h.stream, { checkIntervalMs: 50 });
    const versions: number[] = [];
    sub.on('resync', (v) => versions.push(v));

    await h.loseData();
    t.ok(await eventually(() => requests > 0), 'a replica asked for a republish');
    // The "database" first answers with an older snapshot (restored from a backup): refused by the replica.
    t.ok(await eventually(async () => (await publisher.storedVersion()) === 2), 'store holds the old snapshot');
    t.ok(await eventually(() => requests > 2), 'the replica keeps asking');
    t.equal(sub.version, 5, 'never goes back');
    t.same(paths(sub), ['a', 'b'], 'keeps serving its table');
    t.equal(sub.ready, true);

    database = { version: 6, routes: [route('a'), route('b'), route('c')] };
    t.ok(await sub.waitForVersion(6, WAIT), 'converges once the store has caught up');
    t.same(paths(sub), ['a', 'b', 'c']);
    t.ok(versions.every((v) => v >= 5), 'no resync ever loaded an older version');
    t.ok(h.log.find('route store is behind this replica').length > 0, 'logged');
  });

  tap.test(`${transport}: replicas announce their version; waitForReplicas waits for all live ones`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    t.same(await publisher.waitForReplicas(1, 1000), { ok: true, lagging: [] }, 'no replica: ok at once');
    await publisher.republish({ version: 1, routes: [route('a')] });
    const one = await readySubscriber(h.stream, { replicaId: 'replica-one' });
    const two = await readySubscriber(h.replicaStream(), { replicaId: 'replica-two' });
    t.ok(await eventually(async () => (await publisher.replicas()).length === 2), 'both announced');
    const listed = (await publisher.replicas()).sort((a, b) => a.id.localeCompare(b.id));
    t.match(listed, [{ id: 'replica-one', version: 1 }, { id: 'replica-two', version: 1 }]);

    t.equal(await publisher.publish(put(2, route('b'))), true);
    const waited = await publisher.waitForReplicas(2, WAIT);
    t.same(waited, { ok: true, lagging: [] }, 'every replica holds version 2');
    t.equal(one.table.get('b')?.path, 'b');
    t.equal(two.table.get('b')?.path, 'b');

    // A replica that announced and then went silent (crashed) holds things up until its TTL passes.
    await h.bus.announce({ id: 'ghost', version: 1, at: Date.now() }, 2000);
    const timedOut = await publisher.waitForReplicas(2, 50);
    t.equal(timedOut.ok, false);
    t.match(timedOut.lagging, [{ id: 'ghost', version: 1 }], 'the laggard is named');
    t.equal(timedOut.lagging.length, 1);
    const afterExpiry = await publisher.waitForReplicas(2, WAIT);
    t.same(afterExpiry, { ok: true, lagging: [] }, 'an expired announcement no longer counts');

    await two.close();
    t.same((await publisher.replicas()).map((r) => r.id), ['replica-one'], 'a closed replica withdraws');
  });

  // Activity and presence are two maps kept by one mechanism: the same semantics for each.
  const timeMaps = [
    { map: 'activity', record: (s: RouteSubscriber, path: string, at: number) => s.recordActivity(path, at), read: (p: RoutePublisher) => p.readActivity() },
    { map: 'presence', record: (s: RouteSubscriber, path: string, at: number) => s.recordPresence(path, at), read: (p: RoutePublisher) => p.readPresence() },
  ];
  for (const { map, record, read } of timeMaps) {
    tap.test(`${transport}: ${map} is kept in memory, flushed in batches and merged across replicas`, async (t) => {
      const h = await setup(t);
      const publisher = h.stream.publisher();
      await publisher.republish({ version: 1, routes: [route('a'), route('b'), route('c')] });
      const one = await readySubscriber(h.stream, { activityFlushMs: 60_000 });
      const two = await readySubscriber(h.replicaStream(), { activityFlushMs: 60_000 });
      record(one, 'a', 1000);
      record(two, 'a', 2000);
      record(one, 'b', 5000);
      record(one, 'b', 4000); // older than what this replica already saw
      record(two, 'b', 3000);
      record(one, 'nope', 9000); // not a route: ignored
      t.same(await read(publisher), new Map(), 'nothing written per request');
      await Promise.all([one.flushActivity(), two.flushActivity()]);
      t.same(await read(publisher), new Map([['a', 2000], ['b', 5000]]), 'latest seen by any replica');

      record(one, 'a', 1500);
      await one.flushActivity();
      t.equal((await read(publisher)).get('a'), 2000, 'an older flush never lowers the value');

      await publisher.publish({ version: 2, op: 'delete', path: 'a' });
      t.equal((await read(publisher)).has('a'), false, `a deleted route drops its ${map}`);

      const timed = await readySubscriber(h.replicaStream(), { activityFlushMs: 30 });
      record(timed, 'c', 7000);
      t.ok(await eventually(async () => (await read(publisher)).get('c') === 7000), 'flushed on its own timer');
    });
  }

  tap.test(`${transport}: who has a route open, from every replica's open connections at each flush`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 1, routes: [route('a'), route('b')] });
    const one = await readySubscriber(h.stream, { activityFlushMs: 60_000 });
    const two = await readySubscriber(h.replicaStream(), { activityFlushMs: 60_000 });
    let open = [viewerKey('a', 'owner', 'alice'), viewerKey('a', 'view', 'bob'), viewerKey('nope', 'view', 'eve'), 'not a key'];
    one.setConnectedViewers(() => open);
    two.setConnectedViewers(() => [viewerKey('a', 'view', 'bob'), viewerKey('b', 'control', 'carol')]);
    const before = Date.now();
    await Promise.all([one.flushActivity(), two.flushActivity()]);
    const seen = (await publisher.readViewers()).map((v) => `${v.path} ${v.role} ${v.username}`).sort();
    t.same(seen, ['a owner alice', 'a view bob', 'b control carol'], 'merged across replicas; unknown routes and malformed keys left out');
    t.ok((await publisher.readViewers()).every((v) => v.at >= before), 'each at the time of its flush');
    open = [];
    const firstBob = (await publisher.readViewers()).find((v) => v.username === 'bob')!.at;
    await new Promise((resolve) => setTimeout(resolve, 5));
    await two.flushActivity();
    t.ok((await publisher.readViewers()).find((v) => v.username === 'bob')!.at > firstBob, 'a later flush moves the time on');
    t.same(parseViewerKey('a\tview\tbob'), { path: 'a', role: 'view', username: 'bob' });
    t.equal(parseViewerKey('a\tview'), null);
    one.setConnectedViewers(null);
    two.setConnectedViewers(null);
  });

  tap.test(`${transport}: activity and presence are apart, and one flush writes both in one call`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 1, routes: [route('a'), route('b'), route('c')] });
    const merges: unknown[] = [];
    const merge = h.bus.mergeTimes.bind(h.bus);
    h.bus.mergeTimes = (batch) => {
      merges.push(batch);
      return merge(batch);
    };
    const sub = await readySubscriber(h.stream, { activityFlushMs: 60_000 });
    sub.recordPresence('a', 1000);
    sub.recordPresence('b', 5000);
    sub.recordActivity('c', 6000);
    await sub.flushActivity();
    t.same(merges, [{ activity: [['c', 6000]], presence: [['a', 1000], ['b', 5000]] }], 'activity and presence go to the store in one call');
    t.same(await publisher.readPresence(), new Map([['a', 1000], ['b', 5000]]), 'presence is not activity');
    t.same(await publisher.readActivity(), new Map([['c', 6000]]), 'activity is not presence');
    await sub.flushActivity();
    t.equal(merges.length, 1, 'nothing recorded since: no call at all');
  });

  tap.test(`${transport}: the connected routes are marked present at every flush, with no request`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 1, routes: [route('a'), route('b'), route('c')] });
    let connected: string[] = ['a', 'nope', 'b'];
    let asked = 0;
    const sub = await readySubscriber(h.stream, {
      activityFlushMs: 60_000,
      connectedPaths: () => {
        asked++;
        return connected;
      },
    });
    t.equal(asked, 0, 'not asked before a flush');
    const t0 = Date.now();
    await sub.flushActivity();
    const first = await publisher.readPresence();
    t.same([...first.keys()].sort(), ['a', 'b'], 'every connected route, and only routes');
    t.ok(first.get('a')! >= t0 && first.get('a')! <= Date.now(), 'present now');
    t.same(await publisher.readActivity(), new Map(), 'being connected is not activity');

    connected = ['b'];
    await new Promise((r) => setTimeout(r, 5));
    await sub.flushActivity();
    const second = await publisher.readPresence();
    t.equal(second.get('a'), first.get('a'), 'no longer connected: its presence stays where it was');
    t.ok(second.get('b')! > first.get('b')!, 'still connected: moved on at the next flush');

    sub.setConnectedPaths(() => {
      throw new Error('registry bug');
    });
    sub.recordPresence('c', 1234);
    await sub.flushActivity();
    t.equal((await publisher.readPresence()).get('c'), 1234, 'a throwing source does not stop the flush');
    t.equal(h.log.find('listing connected routes failed').length, 1, 'and is logged');

    sub.setConnectedPaths(() => ['c']);
    const t1 = Date.now();
    await sub.close();
    t.ok((await publisher.readPresence()).get('c')! >= t1, 'set later (the proxy does): asked at the flush on close too');

    const timed = await readySubscriber(h.replicaStream(), { activityFlushMs: 30, connectedPaths: () => ['a'] });
    t.ok(await eventually(async () => ((await publisher.readPresence()).get('a') ?? 0) > second.get('a')!), 'asked on its own timer');
    await timed.close();
  });

  tap.test(`${transport}: a throwing listener neither breaks the table nor the stream`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 0, routes: [] });
    const sub = await readySubscriber(h.stream);
    sub.on('change', () => {
      throw new Error('listener bug');
    });
    await publishAll(publisher, 0, ['a', 'b']);
    t.ok(await sub.waitForVersion(2, WAIT));
    t.same(paths(sub), ['a', 'b']);
    t.equal(h.log.find('listener threw').length, 2);
  });

  tap.test(`${transport}: the publisher checks what it publishes`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await t.rejects(publisher.publish({ version: 1, op: 'put', route: { ...route('a'), path: 'A/B' } }), {
      name: 'RouteMessageError',
      message: /change\.route\.path/,
    });
    await t.rejects(publisher.publish({ version: 0, op: 'delete', path: 'a' }), /change\.version/);
    await t.rejects(publisher.republish({ version: 1.5, routes: [] }), /snapshot\.version/);
    t.equal(await publisher.storedVersion(), null, 'nothing stored');
  });

  tap.test(`${transport}: close stops everything and is idempotent`, async (t) => {
    const h = await setup(t);
    const publisher = h.stream.publisher();
    await publisher.republish({ version: 1, routes: [route('a')] });
    const sub = await readySubscriber(h.stream, { checkIntervalMs: 20, activityFlushMs: 20, announceTtlMs: 60 });
    sub.recordActivity('a', 1234);
    sub.recordPresence('a', 2345);
    await sub.close();
    await sub.close();
    t.equal((await publisher.readActivity()).get('a'), 1234, 'last activity flushed on close');
    t.equal((await publisher.readPresence()).get('a'), 2345, 'and last presence');
    t.same(await publisher.replicas(), [], 'announcement withdrawn');
    t.equal(await sub.waitForVersion(5, 10), false);
    await h.stream.close();
    await h.stream.close();
    t.throws(() => h.stream.subscriber(), /closed/);
  });
}
