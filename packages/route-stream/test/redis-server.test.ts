/** The testkit's private Redis server: start, stop keeping data, restart losing it, close. */
import t from 'tap';
import { Redis } from 'ioredis';
import { startRedis } from '@deskhub/testkit/redis';

t.test('startRedis gives a private server that can stop, start and lose its data', async (t) => {
  const server = await startRedis();
  t.not(server.port, 6379, 'never the shared port');
  t.match(server.url, /^redis:\/\/127\.0\.0\.1:\d+$/);
  const client = new Redis(server.url, { maxRetriesPerRequest: null, retryStrategy: () => 50 });
  client.on('error', () => undefined);
  t.teardown(() => client.disconnect());

  await client.set('k', 'v');
  await server.stop();
  await server.start();
  t.equal(await client.get('k'), 'v', 'stop then start keeps the data, same port');

  await server.restart();
  t.equal(await client.get('k'), 'v', 'restart keeps the data');

  await server.restart({ loseData: true });
  t.equal(await client.get('k'), null, 'restart with loseData comes back empty');
  t.equal(await client.dbsize(), 0);

  await server.close();
  await t.rejects(
    new Redis(server.url, { maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true }).connect(),
    'closed: nothing listens any more',
  );
});

t.test('an appendonly server keeps its data across a restart', async (t) => {
  const server = await startRedis({ appendonly: true });
  t.teardown(() => server.close());
  const client = new Redis(server.url, { maxRetriesPerRequest: null, retryStrategy: () => 50 });
  client.on('error', () => undefined);
  t.teardown(() => client.disconnect());
  await client.set('k', 'aof');
  await server.restart();
  t.equal(await client.get('k'), 'aof');
});
