/**
 * WebSocket (and any other upgraded) connections: after the access check the proxy opens a
 * TCP or TLS connection to the upstream, writes the handshake itself (path rewritten,
 * credentials injected, our cookies removed, Origin and Sec-WebSocket-Protocol untouched) and
 * then relays the two raw sockets both ways (relay.ts). Frames are never parsed or re-framed,
 * so backpressure is TCP's own: a slow browser stops the proxy reading from the desktop.
 *
 * Open connections are tracked per route so that withdrawing a route (or moving it to another
 * upstream) closes exactly its connections and no others.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from '@deskhub/config';
import { writeRawError } from './errors.ts';
import { relay } from './relay.ts';
import { classifyUpstreamError } from './upstream.ts';
import type { ProxyMetrics } from './metrics.ts';
import type { UpstreamTarget } from './targets.ts';

/** TCP keep-alive probes find dead peers; there is deliberately no idle timeout (kasm-contract.md). */
const KEEPALIVE_PROBE_MS = 30_000;

/** Open piped connections by target key (route path, "" for the control plane). */
export class OpenConnections {
  private readonly byKey = new Map<string, Set<Duplex>>();

  add(key: string, socket: Duplex): void {
    let set = this.byKey.get(key);
    if (set === undefined) {
      set = new Set();
      this.byKey.set(key, set);
    }
    set.add(socket);
  }

  delete(key: string, socket: Duplex): void {
    const set = this.byKey.get(key);
    if (set === undefined) return;
    set.delete(socket);
    if (set.size === 0) this.byKey.delete(key);
  }

  count(key: string): number {
    return this.byKey.get(key)?.size ?? 0;
  }

  /** Destroys every connection of one key; returns how many. */
  close(key: string): number {
    const set = this.byKey.get(key);
    if (set === undefined) return 0;
    this.byKey.delete(key);
    for (const socket of set) socket.destroy();
    return set.size;
  }

  closeAll(): void {
    for (const key of [...this.byKey.keys()]) this.close(key);
  }
}

export interface UpgradeSettings {
  metrics: ProxyMetrics;
  logger: Logger;
  upstreamTimeoutMs: number;
  connections: OpenConnections;
}

/**
 * Connects `client` (an upgrade request's socket, with `head` already read past the handshake)
 * to `target`. `handshake` is the complete request head to send, ending in a blank line.
 * `stillCurrent` is asked once the connection is registered: a route withdrawn while we were
 * connecting must not leave a connection behind.
 */
export function pipeUpgrade(
  settings: UpgradeSettings,
  client: Duplex,
  head: Buffer,
  target: UpstreamTarget,
  handshake: string,
  html: boolean,
  stillCurrent: () => boolean,
): void {
  const { metrics, connections } = settings;
  const upstream: net.Socket = target.tls
    ? tls.connect({
        host: target.hostname,
        port: target.port,
        servername: net.isIP(target.hostname) ? undefined : target.hostname,
        rejectUnauthorized: target.verifyTls,
        ALPNProtocols: ['http/1.1'],
      })
    : net.connect({ host: target.hostname, port: target.port });

  let answered = false; // the upstream has sent at least one byte of its answer
  let closed = false;
  let stopClientRelay = (): void => undefined;
  metrics.openWebSockets++;
  metrics.webSocketsOpened++;
  connections.add(target.key, client);

  const cleanup = (): void => {
    if (closed) return;
    closed = true;
    metrics.openWebSockets--;
    connections.delete(target.key, client);
    client.destroy();
    upstream.destroy();
  };

  const failBeforeAnswer = (status: number, message: string): void => {
    if (closed) return;
    closed = true;
    metrics.openWebSockets--;
    metrics.countResponse(status);
    connections.delete(target.key, client);
    upstream.destroy();
    stopClientRelay();
    writeRawError(client, status, message, html);
  };

  client.on('error', cleanup);
  client.on('close', cleanup);
  upstream.on('close', cleanup);
  upstream.on('error', (err: NodeJS.ErrnoException) => {
    if (answered) {
      cleanup();
      return;
    }
    const { status, kind, message } = classifyUpstreamError(err);
    metrics.upstreamErrors[kind]++;
    settings.logger.warn({ upstream: target.origin, route: target.key || undefined, code: err.code }, `upstream error on upgrade: ${err.message}`);
    failBeforeAnswer(status, message);
  });

  // Until the upstream answers, waiting is bounded like any request; afterwards there is no idle timeout.
  upstream.setTimeout(settings.upstreamTimeoutMs, () => {
    if (answered) return;
    metrics.upstreamErrors.timeout++;
    failBeforeAnswer(504, 'The upstream did not answer in time.');
  });
  upstream.once('data', (first: Buffer) => {
    answered = true;
    upstream.setTimeout(0);
    // "HTTP/1.1 101 ..." : the status is passed on untouched, but counted.
    metrics.countResponse(Number(first.toString('latin1', 9, 12)) || 0);
  });

  upstream.once(target.tls ? 'secureConnect' : 'connect', () => {
    upstream.setNoDelay(true);
    upstream.setKeepAlive(true, KEEPALIVE_PROBE_MS);
  });

  if (client instanceof net.Socket) {
    client.setTimeout(0);
    client.setNoDelay(true);
    client.setKeepAlive(true, KEEPALIVE_PROBE_MS);
  }

  // Writes are buffered by the socket until it connects.
  upstream.write(handshake);
  if (head.length > 0) upstream.write(head);
  relay(upstream, client);
  stopClientRelay = relay(client, upstream);

  if (!stillCurrent()) cleanup();
}
