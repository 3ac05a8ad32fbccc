/**
 * TLS connections to upstreams (Kasm desktops serve HTTPS on 6901), for the keep-alive pools and
 * for WebSocket upgrades alike. Every connection shares one SecureContext: without one, Node's
 * tls.connect builds a new context (an OpenSSL SSL_CTX) for each connection, which cost about
 * 50 KiB of native memory per open WebSocket to a TLS desktop, and left the process's memory
 * fragmented after they closed.
 */
import net from 'node:net';
import tls from 'node:tls';

let shared: tls.SecureContext | null = null;

/** The one context: Node's default CA store and protocol settings; verification is per connection. */
function secureContext(): tls.SecureContext {
  shared ??= tls.createSecureContext();
  return shared;
}

/**
 * Connects to an upstream over TLS, verifying its certificate or not as its route says, offering
 * only HTTP/1.1, resuming `session` when one is given.
 */
export function connectUpstreamTls(host: string, port: number, verifyTls: boolean, session?: Buffer): tls.TLSSocket {
  return tls.connect({
    host,
    port,
    servername: net.isIP(host) ? undefined : host,
    rejectUnauthorized: verifyTls,
    ALPNProtocols: ['http/1.1'],
    secureContext: secureContext(),
    ...(session !== undefined ? { session } : {}),
  });
}
