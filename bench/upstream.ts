/**
 * The upstream every benchmarked path ends at, run as its own process so its CPU is not the
 * harness's: small responses (`/small`, 100 bytes), 1 MiB responses (`/mib`), and a WebSocket
 * echo on any path. Prints one JSON line `{"port": N}` once listening on 127.0.0.1.
 */
import http from 'node:http';
import { WebSocketServer } from 'ws';

const small = Buffer.alloc(100, 'x');
const mib = Buffer.alloc(1024 * 1024, 'm');

const server = http.createServer((req, res) => {
  // Only the first path segment matters, so /small?x and /small/ behave the same.
  const first = (req.url ?? '/').split(/[/?]/)[1] ?? '';
  if (first === 'mib') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': mib.length });
    res.end(mib);
    return;
  }
  // /small and everything else (route-propagation probes ask for arbitrary paths).
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': small.length });
  res.end(small);
});
// Proxies keep pooled connections for a while; a 5 s default would make them reconnect mid-run.
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.requestTimeout = 0;
server.maxConnections = 100_000;

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 });
server.on('upgrade', (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('error', () => ws.terminate());
  });
});

server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('upstream: no TCP address');
  process.stdout.write(JSON.stringify({ port: address.port }) + '\n');
});

const stop = () => {
  for (const ws of wss.clients) ws.terminate();
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
