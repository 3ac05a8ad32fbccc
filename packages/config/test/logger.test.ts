import t from 'tap';
import { Writable } from 'node:stream';
import pino from 'pino';
import { loggerOptions, requestIdOptions, StandingCondition } from '../src/index.ts';

function capture(): { stream: Writable; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const stream = new Writable({ write(chunk, _enc, cb) { chunks.push(chunk.toString()); cb(); } });
  return { stream, lines: () => chunks.join('').trim().split('\n').map((l) => JSON.parse(l)) };
}

t.test('secrets never reach the log', async (t) => {
  const out = capture();
  const log = pino(loggerOptions('test'), out.stream);
  log.info({ req: { headers: { authorization: 'Basic a2FzbV91c2VyOnNlY3JldA==', cookie: 'deskhub_session=abc' } } }, 'request');
  log.info({ desktop: { password: 'hunter22', token: 'tok', credentials: 'x' } }, 'nested');
  log.info({ password: 'top-level' }, 'top');
  const text = JSON.stringify(out.lines());
  for (const secret of ['a2FzbV91c2VyOnNlY3JldA', 'deskhub_session=abc', 'hunter22', 'top-level', '"tok"']) {
    t.notMatch(text, secret, `${secret} is redacted`);
  }
  t.match(text, /\[redacted\]/);
  t.equal(out.lines()[0]?.service, 'test');
});

t.test('request ids: a sane x-request-id is kept, anything else replaced', async (t) => {
  const gen = requestIdOptions.genReqId;
  t.equal(gen({ headers: { 'x-request-id': 'abc-123' } } as never), 'abc-123');
  const replaced = gen({ headers: { 'x-request-id': 'bad id\r\nwith newline' } } as never);
  t.match(replaced, /^[0-9a-f-]{36}$/);
  t.match(gen({ headers: {} } as never), /^[0-9a-f-]{36}$/);
});

t.test('a standing condition is a warning when it begins or changes, and info once when it ends', async (t) => {
  const out = capture();
  const log = pino({ ...loggerOptions('test'), level: 'debug' }, out.stream);
  const condition = new StandingCondition(log);
  condition.ok('swarm', {}, 'swarm lists again'); // never failed: nothing
  for (let i = 0; i < 3; i++) condition.failing('swarm', 'not a swarm manager', { runtime: 'swarm' }, 'runtime did not list');
  condition.failing('docker', 'engine down', { runtime: 'docker' }, 'runtime did not list');
  condition.failing('swarm', 'connection refused', { runtime: 'swarm' }, 'runtime did not list');
  condition.ok('swarm', { runtime: 'swarm' }, 'swarm lists again');
  condition.ok('swarm', { runtime: 'swarm' }, 'swarm lists again');
  condition.failing('swarm', 'connection refused', { runtime: 'swarm' }, 'runtime did not list');
  const seen = out.lines().map((l) => `${l.level} ${l.runtime ?? ''} ${l.err ?? ''} ${l.msg}`);
  t.same(seen, [
    '40 swarm not a swarm manager runtime did not list',
    '20 swarm not a swarm manager runtime did not list',
    '20 swarm not a swarm manager runtime did not list',
    '40 docker engine down runtime did not list',
    '40 swarm connection refused runtime did not list',
    '30 swarm  swarm lists again',
    '40 swarm connection refused runtime did not list',
  ]);
});
