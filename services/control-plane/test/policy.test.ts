/**
 * The base every policy is built on (src/policies/policy.ts): passes on a timer that never
 * overlap, a failed pass that does not stop the next, a stop that waits for the pass under way,
 * and the plugin that starts a policy when the app is ready and stops it when it closes.
 */
import Fastify from 'fastify';
import fp from 'fastify-plugin';
import pino from 'pino';
import t from 'tap';
import { policyPlugin, TimedPolicy } from '../src/policies/policy.ts';

const logger = pino({ level: 'silent' });
const tick = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

class Counting extends TimedPolicy<number> {
  passes = 0;
  concurrent = 0;
  most = 0;
  failNext = false;
  passMs = 0;

  protected async pass(): Promise<number> {
    this.concurrent++;
    this.most = Math.max(this.most, this.concurrent);
    try {
      await tick(this.passMs);
      if (this.failNext) {
        this.failNext = false;
        throw new Error('the database went away');
      }
      return ++this.passes;
    } finally {
      this.concurrent--;
    }
  }
}

t.test('runOnce joins a pass under way instead of starting a second', async (t) => {
  const policy = new Counting({ name: 'count', intervalMs: 1000, logger });
  policy.passMs = 50;
  const [a, b] = await Promise.all([policy.runOnce(), policy.runOnce()]);
  t.equal(a, 1);
  t.equal(b, 1, 'the same pass');
  t.equal(policy.most, 1, 'never two at once');
});

t.test('a failed pass gives null and the next one runs', async (t) => {
  const policy = new Counting({ name: 'count', intervalMs: 1000, logger });
  policy.failNext = true;
  t.equal(await policy.runOnce(), null);
  t.equal(await policy.runOnce(), 1);
});

t.test('on its timer, then stopped: stop waits for the pass under way, and none follows', async (t) => {
  const policy = new Counting({ name: 'count', intervalMs: 20, logger });
  policy.passMs = 30;
  policy.start();
  while (policy.passes < 3) await tick(10);
  t.equal(policy.most, 1, 'slow passes never overlap');
  while (policy.concurrent === 0) await tick(1);
  await policy.stop();
  t.equal(policy.concurrent, 0, 'the pass under way finished before stop resolved');
  const after = policy.passes;
  await tick(100);
  t.equal(policy.passes, after, 'no pass after stop');
  t.equal(await policy.runOnce(), null, 'a stopped policy runs nothing');
});

t.test('as a plugin: started when the app is ready, stopped when it closes, absent when its settings say so', async (t) => {
  let made: Counting | null = null;
  const counting = policyPlugin('count', () => {
    made = new Counting({ name: 'count', intervalMs: 20, logger });
    return made;
  });
  const off = policyPlugin('off', () => null);
  const app = Fastify({ logger: false });
  // The policy plugin depends on the lifecycle's plugin by name.
  await app.register(fp(async () => undefined, { name: 'desktops' }));
  await app.register(counting);
  await app.register(off);
  await app.ready();
  const policy = made as unknown as Counting;
  while (policy.passes < 2) await tick(10);
  t.pass('passes run once the app is ready');
  await app.close();
  const after = policy.passes;
  await tick(80);
  t.equal(policy.passes, after, 'stopped with the app');

  const alone = Fastify({ logger: false });
  await t.rejects(
    (async () => {
      await alone.register(counting);
      await alone.ready();
    })(),
    /dependency 'desktops'/,
    'a policy without the lifecycle does not start',
  );
});

t.test('wake: a pass now, or one more right after the pass under way, however many wakes', async (t) => {
  const policy = new Counting({ name: 'count', intervalMs: 60_000, logger });
  policy.passMs = 40;
  policy.wake();
  await tick(5);
  policy.wake();
  policy.wake();
  policy.wake();
  while (policy.passes < 2) await tick(5);
  await tick(100);
  t.equal(policy.passes, 2, 'the first pass, then exactly one more');
  t.equal(policy.most, 1, 'never two at once');
  await policy.stop();
});
