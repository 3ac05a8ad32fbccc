/** Loopback networking helpers shared by tests and the benchmark harness. */
import { createServer } from 'node:net';

/** A free loopback port: bind 0, read it, release it. For servers that must know their port up front. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const port = (probe.address() as { port: number }).port;
      probe.close(() => resolve(port));
    });
  });
}
