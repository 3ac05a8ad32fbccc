/** The route-stream suite over the in-process bus (the embedded start). */
import t from 'tap';
import { routeStreamOver } from '../src/stream.ts';
import { MemoryRouteBus } from '../src/transports/memory.ts';
import { routeStreamSuite } from './suite.ts';

routeStreamSuite(t, 'memory', async (log) => {
  const bus = new MemoryRouteBus();
  const stream = routeStreamOver(bus, log.logger);
  return {
    stream,
    // One process: every "replica" shares the stream's bus.
    replicaStream: () => stream,
    bus,
    log,
    injectMessage: async (channel, raw) => bus.injectMessage(channel, raw),
    writeSilently: async (version, path, json) => bus.writeSilently(version, path, json),
    loseData: async () => bus.loseData(),
    dropSubscriptions: async () => bus.simulateReconnect(),
    close: () => stream.close(),
  };
});
