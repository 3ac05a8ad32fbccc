/**
 * Postgres goes away for a while and comes back (a restart, a failover): the control plane must
 * be ready again within moments, not after whatever reconnect delay its failed attempts built up
 * meanwhile. The control plane runs as its own process (`src/main.ts`), on a private Postgres
 * cluster (testkit) so the shared server is never stopped.
 */
import t from 'tap';
import { startPostgresCluster } from '@deskhub/testkit/postgres-cluster';
import { startService } from '@deskhub/testkit/service';
import { newSecretKey, tempDir, testEnv } from './helpers.ts';

/** The outage: long enough for a client that backs off exponentially to wait many seconds. */
const OUTAGE_MS = 10_000;
/** Ready again within this of Postgres accepting connections. */
const READY_WITHIN_MS = 3000;

t.test('after a 10 s Postgres outage the control plane is ready again within 3 s', async (t) => {
  const { dir, cleanup } = tempDir('pg-restart');
  const cluster = await startPostgresCluster();
  const env = testEnv(dir, { DATABASE_URL: cluster.url, SECRET_KEY: newSecretKey(), RECONCILE_INTERVAL_MS: '2000' });
  const controlPlane = await startService({ entry: 'services/control-plane/src/main.ts', readyMessage: 'control plane listening', env, timeoutMs: 120_000 });
  t.teardown(async () => {
    await controlPlane.stop();
    await cluster.close();
    cleanup();
  });
  const url = String(controlPlane.ready.url);
  /** /readyz's status, or 0 when it does not answer within `ms` (a hung probe is a failed one). */
  const readyz = (ms: number) => fetch(`${url}/readyz`, { signal: AbortSignal.timeout(ms) }).then((r) => r.status, () => 0);
  t.equal(await readyz(5000), 200, 'ready before the outage');

  // Meanwhile the control plane keeps working (reconciliation, route publication): each of its
  // queries fails to connect, as in production.
  await cluster.crash();
  await new Promise((r) => setTimeout(r, OUTAGE_MS));
  await cluster.start();
  const back = Date.now();
  let status = 0;
  while (Date.now() - back < 30_000 && status !== 200) status = await readyz(1000);
  const took = Date.now() - back;
  t.equal(status, 200, 'ready again');
  t.ok(took <= READY_WITHIN_MS, `ready ${(took / 1000).toFixed(1)} s after Postgres accepted connections again (at most ${READY_WITHIN_MS / 1000} s)`);
});
