import { startRedis } from '@deskhub/testkit/redis';
import pino from 'pino';
import { createRouteStream } from '../src/index.ts';
import { route } from './helpers.ts';
const server = await startRedis();
const logger = pino({ level: 'warn' });
const s = createRouteStream({ redisUrl: server.url, logger });
const pub = s.publisher();
const routes = Array.from({ length: 100_000 }, (_, i) => route(`user${i}-ubuntu-desktop`, 10_000 + (i % 50_000)));
let t0 = performance.now();
await pub.republish({ version: 1, routes });
console.log('republish', (performance.now() - t0).toFixed(0));
for (let k = 0; k < 4; k++) {
  const sub = s.subscriber();
  const cpu = process.cpuUsage();
  t0 = performance.now();
  await new Promise<void>((res) => { sub.on('ready', () => res()); void sub.start(); });
  const u = process.cpuUsage(cpu);
  console.log('load wall', (performance.now() - t0).toFixed(0), 'cpu', ((u.user + u.system) / 1000).toFixed(0), sub.table.size);
  await sub.close();
}
await s.close(); await server.close();
