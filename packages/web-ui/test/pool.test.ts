/** What the UI says about the warm pool, checked in Node: members per type, a claim recognised, replayed runs left out. */
import t from 'tap';
import { claimMessage, latestRun, memberLabel, poolGroups, poolSummary } from '../client/pool.ts';

t.test('poolGroups: per type, ready ones first (the next claimed first), counts', async (t) => {
  const groups = poolGroups([
    { id: 'b1', type: 'web', state: 'starting', createdAt: '2025-01-01T10:05:00Z', readyAt: null },
    { id: 'a2', type: 'web', state: 'running', createdAt: '2025-01-01T10:00:00Z', readyAt: '2025-01-01T10:02:00Z' },
    { id: 'a1', type: 'web', state: 'running', createdAt: '2025-01-01T10:00:00Z', readyAt: '2025-01-01T10:01:00Z' },
    { id: 'f1', type: 'web', state: 'failed', createdAt: '2025-01-01T09:00:00Z', readyAt: null },
    { id: 'c1', type: 'chrome', state: 'creating', createdAt: '2025-01-01T10:00:00Z' },
  ]);
  t.same(groups.map((g) => g.type), ['chrome', 'web']);
  t.same(groups[1]!.members.map((m) => m.id), ['a1', 'a2', 'b1', 'f1']);
  t.same([groups[1]!.ready, groups[1]!.starting, groups[1]!.leaving], [2, 1, 1]);
  t.same(poolGroups([]), []);
});

t.test('poolSummary and memberLabel', async (t) => {
  t.equal(poolSummary({ ready: 2, starting: 0, leaving: 0 }), '2 ready');
  t.equal(poolSummary({ ready: 0, starting: 1, leaving: 0 }), 'none ready, 1 starting');
  t.equal(poolSummary({ ready: 1, starting: 1, leaving: 1 }), '1 ready, 1 starting, 1 being replaced');
  t.equal(memberLabel({ id: '1a2b3c4d-0000-4000-8000-000000000000' }), 'Member 1a2b3c4d');
});

t.test('claimMessage: only the claim event', async (t) => {
  const claim = 'Claimed a ready Pooled web desktop from the warm pool for /desktop/alice-pooled/';
  t.equal(claimMessage({ state: 'starting', message: claim }), claim);
  t.equal(claimMessage({ state: 'starting', message: 'Starting' }), null);
  t.equal(claimMessage({ state: null, message: claim }), null);
});

t.test('latestRun: a replayed history keeps its latest run only', async (t) => {
  const member = [
    { kind: 'state', state: 'creating', message: 'Starting a Pooled web desktop for the warm pool' },
    { kind: 'start', state: null, message: 'started' },
    { kind: 'probe', state: null, message: 'waiting' },
    { kind: 'state', state: 'running', message: 'Running' },
  ];
  const claim = { kind: 'state', state: 'starting', message: 'Claimed a ready Pooled web desktop from the warm pool for /desktop/a/' };
  const route = { kind: 'route', state: null, message: 'route published (version 3)' };
  t.same(latestRun([...member, claim, route]), [claim, route], 'the member’s own start is left out');
  t.same(latestRun(member), member, 'a first run is kept whole');
  t.same(latestRun([route]), [route], 'live events without a run start pass');
  t.same(latestRun([]), []);
});
