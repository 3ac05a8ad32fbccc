/** The route-stream message schema: what enters a proxy is checked, and the error says what is wrong. */
import t from 'tap';
import { RouteMessageError, parseRoute, parseRouteChange } from '../src/index.ts';
import { sameRoute } from '../src/schema.ts';
import { route } from './helpers.ts';

t.test('a valid route and change parse, from objects and from JSON text', async (t) => {
  const r = route('alice-ubuntu-desktop');
  t.same(parseRoute(r), r);
  t.same(parseRoute(JSON.stringify(r)), r);
  t.same(parseRoute(Buffer.from(JSON.stringify(r))), r);
  t.same(parseRouteChange({ version: 3, op: 'put', route: r }), { version: 3, op: 'put', route: r });
  t.same(parseRouteChange('{"version":4,"op":"delete","path":"alice-ubuntu-desktop"}'), { version: 4, op: 'delete', path: 'alice-ubuntu-desktop' });
  const shares = [{ id: 'sh-1', user: 'u-bob', mode: 'view' }, { id: 'ln-1', mode: 'control', expiresAt: 1_900_000_000_000 }];
  t.same(parseRoute({ ...r, authorization: null, entryQuery: '', shares }).shares, shares);
  t.same(parseRoute({ ...r, viewerAuthorization: 'Basic a2FzbV92aWV3ZXI6eA==', ownerOnly: ['/api/', '/Downloads/'] }).ownerOnly, ['/api/', '/Downloads/']);
  // A route from before sharing (sharedWith, no shares) still loads, with no shares.
  const { shares: _omit, ...old } = r;
  t.same(parseRoute({ ...old, sharedWith: [] }).shares, []);
  t.notOk('sharedWith' in parseRoute({ ...old, sharedWith: [] }), 'the old field does not travel on');
});

t.test('activity: absent (older publishers), traffic, or input in a dialect; unknown fields in it dropped', async (t) => {
  const r = route('a');
  t.notOk('activity' in parseRoute(r), 'absent stays absent');
  t.same(parseRoute({ ...r, activity: { on: 'traffic' } }).activity, { on: 'traffic' });
  const input = { ...r, activity: { on: 'input', rfb: 'kasmvnc' } };
  t.equal(parseRoute(input), input, 'a route with exactly its fields is kept as it is');
  t.same(parseRoute({ ...r, activity: { on: 'input', rfb: 'standard', extra: 1 } }).activity, { on: 'input', rfb: 'standard' });
  t.throws(() => parseRoute({ ...r, activity: { on: 'idle' } }), /^route\.activity\.on: expected "traffic" or "input", got "idle"/);
  t.throws(() => parseRoute({ ...r, activity: { on: 'input' } }), /^route\.activity\.rfb: expected "standard" or "kasmvnc"/);
  t.throws(() => parseRoute({ ...r, activity: 'input' }), /^route\.activity: expected an object/);
});

t.test('disconnected: absent (streams allowed), or the reason; at most 123 bytes of UTF-8, as a close frame carries', async (t) => {
  const r = route('a');
  t.notOk('disconnected' in parseRoute(r), 'absent stays absent: older routes stay valid');
  const held = { ...r, disconnected: 'Disconnected after 30 minutes without input' };
  t.equal(parseRoute(held), held, 'a route with exactly its fields is kept as it is');
  t.equal(parseRoute(JSON.stringify(held)).disconnected, held.disconnected, 'from JSON text');
  const both = { ...held, activity: { on: 'input', rfb: 'kasmvnc' } as const };
  t.equal(parseRoute(both), both, 'beside activity, still kept as it is');
  t.same(parseRoute({ ...held, extra: 1 }), held, 'an unknown field beside it dropped, the reason kept');
  t.equal(parseRoute({ ...r, disconnected: 'x'.repeat(123) }).disconnected?.length, 123, '123 bytes: accepted');
  t.equal(parseRoute({ ...r, disconnected: 'é'.repeat(61) + 'x' }).disconnected?.length, 62, '61 two-byte characters and one more byte: 123 bytes, accepted');
  t.throws(() => parseRoute({ ...r, disconnected: 'x'.repeat(124) }), /^route\.disconnected: expected a non-empty reason of at most 123 bytes of UTF-8, got a string of 124 characters/);
  t.throws(() => parseRoute({ ...r, disconnected: 'é'.repeat(62) }), /^route\.disconnected: expected a non-empty reason of at most 123 bytes/, '62 characters but 124 bytes: refused');
  t.throws(() => parseRoute({ ...r, disconnected: '' }), /^route\.disconnected: expected a non-empty reason/);
  t.throws(() => parseRoute({ ...r, disconnected: true }), /^route\.disconnected: .* got true/);
  t.throws(() => parseRoute({ ...r, disconnected: null }), /^route\.disconnected: .* got null/);
  t.throws(() => parseRouteChange({ version: 2, op: 'put', route: { ...r, disconnected: 5 } }), /^change\.route\.disconnected: /);
});

t.test('sameRoute: a route held disconnected differs from the same route without, or with another reason', async (t) => {
  const r = route('a');
  t.ok(sameRoute(r, { ...r }));
  t.notOk(sameRoute(r, { ...r, disconnected: 'Disconnected after 30 minutes without input' }), 'set against absent');
  t.notOk(sameRoute({ ...r, disconnected: 'a' }, r), 'absent against set');
  t.notOk(sameRoute({ ...r, disconnected: 'a' }, { ...r, disconnected: 'b' }), 'another reason');
  t.ok(sameRoute({ ...r, disconnected: 'a' }, { ...r, disconnected: 'a' }), 'the same reason');
});

t.test('unknown fields are dropped, not passed on', async (t) => {
  const r = route('a');
  const parsed = parseRoute({ ...r, extra: 'x', upstream: { ...r.upstream, headers: { 'x-evil': '1' } } });
  t.same(parsed, r);
  t.notOk('extra' in parsed);
  t.notOk('headers' in parsed.upstream);
  const change = parseRouteChange({ version: 1, op: 'delete', path: 'a', route: r });
  t.same(change, { version: 1, op: 'delete', path: 'a' });
});

t.test('each kind of bad input is refused with a message naming the field', async (t) => {
  const r = route('a');
  const cases: Array<[unknown, RegExp]> = [
    ['{nope', /^route: not valid JSON/],
    [null, /^route: expected an object, got null/],
    [[r], /^route: expected an object, got an array/],
    [{ ...r, path: 'Alice' }, /^route\.path: expected a proxy path/],
    [{ ...r, path: '-a' }, /^route\.path/],
    [{ ...r, path: 'a/../b' }, /^route\.path/],
    [{ ...r, path: 'a%2fb' }, /^route\.path/],
    [{ ...r, desktopId: '' }, /^route\.desktopId: expected a non-empty string/],
    [{ ...r, owner: 7 }, /^route\.owner/],
    [{ ...r, shares: 'bob' }, /^route\.shares: expected an array/],
    [{ ...r, shares: [{ id: 'a', mode: 'view' }, { id: '', mode: 'view' }] }, /^route\.shares\[1\]\.id/],
    [{ ...r, shares: [{ id: 'a', mode: 'admin' }] }, /^route\.shares\[0\]\.mode: expected "view" or "control"/],
    [{ ...r, shares: [{ id: 'a', mode: 'view', expiresAt: -1 }] }, /^route\.shares\[0\]\.expiresAt/],
    [{ ...r, shares: Array.from({ length: 257 }, (_, i) => ({ id: `s${i}`, mode: 'view' })) }, /^route\.shares: expected an array of at most 256/],
    [{ ...r, viewerAuthorization: 'Basic x\r\nx-evil: 1' }, /^route\.viewerAuthorization/],
    [{ ...r, ownerOnly: ['api/'] }, /^route\.ownerOnly/],
    [{ ...r, ownerOnly: ['/api/?x'] }, /^route\.ownerOnly/],
    [{ ...r, upstream: { ...r.upstream, scheme: 'ftp' } }, /^route\.upstream\.scheme: expected "http" or "https", got "ftp"/],
    [{ ...r, upstream: { ...r.upstream, host: 'evil.test/path' } }, /^route\.upstream\.host/],
    [{ ...r, upstream: { ...r.upstream, host: 'user@evil.test' } }, /^route\.upstream\.host/],
    [{ ...r, upstream: { ...r.upstream, port: 70000 } }, /^route\.upstream\.port: expected an integer from 1 to 65535, got 70000/],
    [{ ...r, upstream: { ...r.upstream, port: '443' } }, /^route\.upstream\.port/],
    [{ ...r, upstream: { ...r.upstream, verifyTls: 'no' } }, /^route\.upstream\.verifyTls: expected true or false/],
    [{ ...r, stripPrefix: 1 }, /^route\.stripPrefix/],
    [{ ...r, authorization: 'Basic x\r\nX-Injected: 1' }, /^route\.authorization/],
    [{ ...r, authorization: undefined }, /^route\.authorization/],
    [{ ...r, entryQuery: '?path=x' }, /^route\.entryQuery/],
    [{ ...r, entryQuery: 'a b' }, /^route\.entryQuery/],
    [{ ...r, state: 'stopped' }, /^route\.state: expected "starting", "running" or "stopping", got "stopped"/],
  ];
  for (const [input, message] of cases) {
    t.throws(() => parseRoute(input), { name: 'RouteMessageError', message }, String(message));
  }
  const err = (() => {
    try {
      parseRoute({ ...r, upstream: { ...r.upstream, port: 0 } });
    } catch (e) {
      return e;
    }
    return null;
  })();
  t.ok(err instanceof RouteMessageError);
  t.equal((err as RouteMessageError).field, 'route.upstream.port');
});

t.test('bad changes are refused with a message naming the field', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    ['', /^change: not valid JSON/],
    [{ op: 'delete', path: 'a' }, /^change\.version: expected a positive integer, got undefined/],
    [{ version: 0, op: 'delete', path: 'a' }, /^change\.version/],
    [{ version: 1.5, op: 'delete', path: 'a' }, /^change\.version/],
    [{ version: 2 ** 60, op: 'delete', path: 'a' }, /^change\.version/],
    [{ version: '3', op: 'delete', path: 'a' }, /^change\.version/],
    [{ version: 1, op: 'patch', path: 'a' }, /^change\.op: expected "put" or "delete", got "patch"/],
    [{ version: 1, op: 'delete', path: '../a' }, /^change\.path/],
    [{ version: 1, op: 'put' }, /^change\.route: expected an object, got undefined/],
    [{ version: 1, op: 'put', route: { ...route('a'), state: 'gone' } }, /^change\.route\.state/],
  ];
  for (const [input, message] of cases) {
    t.throws(() => parseRouteChange(input), { name: 'RouteMessageError', message }, String(message));
  }
});
