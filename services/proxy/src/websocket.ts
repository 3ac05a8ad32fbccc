/**
 * WebSocket (and any other upgraded) connections: after the access check the proxy opens a
 * TCP or TLS connection to the upstream, writes the handshake itself (path rewritten,
 * credentials injected, our cookies removed, Origin and Sec-WebSocket-Protocol untouched) and
 * then relays the two raw sockets both ways (relay.ts). Frames are never re-framed or changed
 * (but a viewer's, below), so backpressure is TCP's own: a slow browser stops the proxy reading
 * from the desktop. Only their headers are followed from desktop to browser (ws-frames.ts), so the
 * proxy can end a connection between two frames with a close frame of its own.
 *
 * A viewer's connection (view-only sharing, `PipeOptions.viewOnly`) is the exception: its
 * browser-to-desktop bytes go through the view filter (rfb-view-filter.ts), which drops input and
 * writes what it keeps as frames of its own; anything the filter cannot follow closes the viewer
 * with 1008. The desktop-to-browser direction and every owner's connection are relayed unchanged.
 *
 * Open connections are tracked per route so that withdrawing a route (or moving it to another
 * upstream) closes exactly its connections and no others, each with 1001 and the reason, after
 * the desktop's frame in progress (at most 5 s later, else cut); a route held disconnected (the
 * idle clock) closes them the same way with 4000 and the route's reason. A connection may carry a
 * tag (the share a viewer came in with), so that revoking a share closes exactly the connections
 * opened with it. The registry's keys are also the routes someone is connected to, which the
 * route subscriber marks present at each flush.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '@deskhub/config';
import { writeRawError } from './errors.ts';
import { responseHeaderLines } from './headers.ts';
import { closeParserLater, HTTPParser, kOnBody, kOnHeaders, kOnHeadersComplete, kOnMessageComplete, SKIP_BODY, type Parser } from './http1.ts';
import { relay, relayThrough, type Relay, type RelayObserver, type RelayTransform } from './relay.ts';
import type { RfbDialect } from './rfb-grammar.ts';
import { RfbViewFilter } from './rfb-view-filter.ts';
import { closeFrame, FrameCursor } from './ws-frames.ts';
import { connectUpstreamTls } from './upstream-tls.ts';
import { classifyUpstreamError } from './upstream.ts';
import type { ProxyMetrics } from './metrics.ts';
import type { UpstreamTarget } from './targets.ts';

/** TCP keep-alive probes find dead peers; there is deliberately no idle timeout (kasm-contract.md). */
const KEEPALIVE_PROBE_MS = 30_000;
/** A close at a frame boundary waits at most this long for the desktop to finish its frame in progress. */
const END_AT_BOUNDARY_MS = 5_000;

/** Ends one piped connection with a close frame (code and reason), at a frame boundary. */
export type CloseWith = (code: number, reason: string) => void;

/** How an open connection is closed, and the tag it was opened with. */
interface OpenConnection {
  closeWith: CloseWith;
  tag: string | undefined;
}

/** Open piped connections by target key (route path, "" for the control plane). */
export class OpenConnections {
  private readonly byKey = new Map<string, Map<Duplex, OpenConnection>>();

  /** `tag`: what the connection was opened with (a share), for `closeWhere`. */
  add(key: string, socket: Duplex, closeWith: CloseWith, tag?: string): void {
    let set = this.byKey.get(key);
    if (set === undefined) {
      set = new Map();
      this.byKey.set(key, set);
    }
    set.set(socket, { closeWith, tag });
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

  /** Keys with at least one open connection (route paths, and "" for the control plane's). */
  keys(): IterableIterator<string> {
    return this.byKey.keys();
  }

  /**
   * Ends every connection of one key; returns how many. With a code, each gets a close frame with
   * it and `reason` at its next frame boundary (the browser shows why); without, it is cut.
   */
  close(key: string, code?: number, reason = ''): number {
    const set = this.byKey.get(key);
    if (set === undefined) return 0;
    this.byKey.delete(key);
    for (const [socket, { closeWith }] of set) {
      if (code === undefined) socket.destroy();
      else closeWith(code, reason);
    }
    return set.size;
  }

  /**
   * Ends the connections of one key whose tag `shouldClose` accepts (untagged ones never), each
   * with a close frame of `code` and `reason` at its next frame boundary; returns how many.
   */
  closeWhere(key: string, shouldClose: (tag: string) => boolean, code: number, reason: string): number {
    const set = this.byKey.get(key);
    if (set === undefined) return 0;
    let closed = 0;
    for (const [socket, { closeWith, tag }] of set) {
      if (tag === undefined || !shouldClose(tag)) continue;
      set.delete(socket);
      closeWith(code, reason);
      closed++;
    }
    if (set.size === 0 && this.byKey.get(key) === set) this.byKey.delete(key);
    return closed;
  }

  /** Open connections, all keys together. */
  get size(): number {
    let n = 0;
    for (const set of this.byKey.values()) n += set.size;
    return n;
  }

  /**
   * Ends every connection as `close` does (with a code: a close frame at each one's next frame
   * boundary; without: cut). Returns their sockets, for a caller that bounds how long the close
   * frames may take to leave (a browser that stopped reading never takes one).
   */
  closeAll(code?: number, reason = ''): Duplex[] {
    const sockets: Duplex[] = [];
    for (const set of this.byKey.values()) for (const socket of set.keys()) sockets.push(socket);
    for (const key of [...this.byKey.keys()]) this.close(key, code, reason);
    return sockets;
  }
}

export interface PipeOptions {
  /** Shown every byte the client sends, as it sent them (a VNC desktop's input watch, rfb-input.ts). */
  observe?: RelayObserver;
  /** A viewer's connection to a VNC desktop of this dialect: only what does not act on the desktop reaches it (rfb-view-filter.ts). */
  viewOnly?: RfbDialect;
  /** Registered with the connection, for `OpenConnections.closeWhere` (the share a viewer came in with). */
  tag?: string;
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
 * connecting must not leave a connection behind. `options`: see `PipeOptions`.
 *
 * The upstream's answer is parsed up to the end of its head. A 101 is passed on byte for byte and
 * the two sockets are relayed from then on. Anything else (a refusal: 400, 403, 426 ...) is an
 * ordinary HTTP answer: passed on with its headers cleaned as for any response, its body framed
 * by the connection's close, and both connections closed after it, so a refused upgrade leaves
 * no socket behind and the client never waits on a tunnel that will not come.
 */
export function pipeUpgrade(
  settings: UpgradeSettings,
  client: Duplex,
  head: Buffer,
  target: UpstreamTarget,
  handshake: string,
  html: boolean,
  stillCurrent: () => boolean,
  options: PipeOptions = {},
): void {
  const { metrics, connections } = settings;
  const { observe, viewOnly } = options;
  const upstream: net.Socket = target.tls
    ? connectUpstreamTls(target.hostname, target.port, target.verifyTls)
    : net.connect({ host: target.hostname, port: target.port });

  let answered = false; // the upstream has sent at least one byte of its answer
  let closed = false;
  let ending = false;
  let stopClientRelay = (): void => undefined;
  let toClient: Relay | null = null;
  // A viewer refused before the tunnel opened: closed with this reason once it has.
  let refusedViewer: string | null = null;
  const frames = new FrameCursor();
  metrics.openWebSockets++;
  metrics.webSocketsOpened++;

  /** The tunnel ends with a close frame after the desktop's frame in progress; before a tunnel, it is cut. */
  const closeWith = (code: number, reason: string): void => {
    if (closed || ending) return;
    ending = true;
    if (toClient === null) {
      cleanup();
      return;
    }
    stopClientRelay();
    const fallback = setTimeout(cleanup, END_AT_BOUNDARY_MS);
    toClient.endAtBoundary(closeFrame(code, reason), () => {
      clearTimeout(fallback);
      // Closed once the frame is flushed; the upstream goes with it (cleanup on the client's close).
      if (client instanceof net.Socket) client.destroySoon();
      else client.end();
    });
  };
  connections.add(target.key, client, closeWith, options.tag);

  const cleanup = (): void => {
    if (closed) return;
    closed = true;
    metrics.openWebSockets--;
    connections.delete(target.key, client);
    client.destroy();
    upstream.destroy();
    answer?.close();
  };

  /** No tunnel after all: the upstream side goes, the client gets `write`'s bytes, then its connection closes. */
  const endWithAnswer = (write: () => void): void => {
    if (closed) return;
    closed = true;
    metrics.openWebSockets--;
    connections.delete(target.key, client);
    upstream.destroy();
    stopClientRelay();
    answer?.close();
    write();
  };

  const failBeforeAnswer = (status: number, message: string): void => {
    endWithAnswer(() => {
      metrics.countResponse(status);
      writeRawError(client, status, message, html);
    });
  };

  // Only until the upstream's answer is read: a tunnel lets go of it (and of its parser), since
  // whatever this call's closures hold lives as long as the WebSocket.
  let answer: UpgradeAnswer | null = new UpgradeAnswer(target, client, {
    tunnel: (received, headLength) => {
      answer = null;
      client.write(received);
      frames.feed(received, headLength, received.length - headLength);
      toClient = relay(upstream, client, { frames });
      if (refusedViewer !== null) closeWith(1008, refusedViewer);
    },
    refused: () => endWithAnswer(() => (client instanceof net.Socket ? client.destroySoon() : client.end())),
    unusable: () => {
      metrics.upstreamErrors.protocol++;
      if (answer?.headWritten) cleanup();
      else failBeforeAnswer(502, 'The upstream sent a response the proxy could not use.');
    },
  });

  client.on('error', cleanup);
  client.on('close', cleanup);
  upstream.on('close', () => {
    // A refusal whose body ran to the connection's end is complete now.
    if (!closed && answer?.refusing) answer.end();
    cleanup();
  });
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
  const onAnswer = (chunk: Buffer): void => {
    if (!answered) {
      answered = true;
      upstream.setTimeout(0);
      // "HTTP/1.1 101 ..." : counted by its status.
      metrics.countResponse(Number(chunk.toString('latin1', 9, 12)) || 0);
    }
    // Once the head is a 101, the relay takes the upstream's reads from here on.
    if (answer === null || answer.read(chunk)) upstream.off('data', onAnswer);
  };
  upstream.on('data', onAnswer);

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
  if (viewOnly === undefined) {
    if (head.length > 0) {
      if (observe !== undefined) observe(head, 0, head.length);
      upstream.write(head);
    }
    const fromClient = relay(client, upstream, { observe });
    stopClientRelay = fromClient.stop;
  } else {
    const filter = new RfbViewFilter(viewOnly);
    const pass: RelayTransform = (chunk) => {
      if (observe !== undefined) observe(chunk, 0, chunk.length);
      const out = filter.feed(chunk);
      if (filter.failed === null) return out;
      settings.logger.warn({ route: target.key || undefined, dialect: viewOnly, why: filter.failed }, 'view-only connection closed: the proxy cannot follow what the viewer sent');
      const reason = `View-only, the stream cannot be followed: ${filter.failed}`;
      if (toClient === null) refusedViewer = reason;
      else closeWith(1008, reason);
      return false;
    };
    const first = head.length > 0 ? pass(head) : null;
    if (first !== null && first !== false) upstream.write(first);
    if (first !== false) stopClientRelay = relayThrough(client, upstream, pass);
  }

  if (!stillCurrent()) cleanup();
}

interface AnswerOutcomes {
  /** A 101: `received` (its head, `headLength` bytes, and whatever followed) goes to the client; the relay takes over. */
  tunnel(received: Buffer, headLength: number): void;
  /** A refusal was passed on whole. */
  refused(): void;
  /** Not HTTP the proxy can use. */
  unusable(): void;
}

/** Reads the upstream's answer to an upgrade request (see pipeUpgrade). */
class UpgradeAnswer {
  private readonly parser: Parser = new HTTPParser();
  private received: Buffer[] = [];
  private partial: string[] = [];
  private upgraded = false;
  private done = false;
  /** A non-101 answer is being passed on. */
  refusing = false;
  headWritten = false;

  constructor(
    private readonly target: UpstreamTarget,
    private readonly client: Duplex,
    private readonly outcomes: AnswerOutcomes,
  ) {
    const parser = this.parser;
    parser.initialize(HTTPParser.RESPONSE, {});
    parser[kOnHeaders] = (headers: string[]) => {
      for (const h of headers) this.partial.push(h);
    };
    parser[kOnHeadersComplete] = this.onHead;
    parser[kOnBody] = (chunk: Buffer) => {
      if (this.refusing) this.client.write(chunk);
    };
    parser[kOnMessageComplete] = () => {
      if (this.refusing) this.finish();
    };
  }

  private readonly onHead = (
    _major: number,
    _minor: number,
    headers: string[] | undefined,
    _method: unknown,
    _url: unknown,
    status: number,
    statusMessage: string,
  ): number => {
    if (headers === undefined) {
      headers = this.partial;
      this.partial = [];
    }
    if (status === 101) {
      this.upgraded = true;
      return SKIP_BODY;
    }
    if (status < 200) return SKIP_BODY; // 100, 103: the final answer follows
    this.refusing = true;
    const parts = responseHeaderLines(headers, status, this.target);
    const upgrade = status === 426 ? 'upgrade: websocket\r\nconnection: upgrade, close\r\n' : 'connection: close\r\n';
    this.headWritten = true;
    this.client.write(`HTTP/1.1 ${status} ${statusMessage || 'Unknown'}\r\n${parts.lines}${upgrade}\r\n`, 'latin1');
    return status === 204 || status === 304 ? SKIP_BODY : 0;
  };

  /** One read from the upstream; true once the relay should take over (a 101 was read). */
  read(chunk: Buffer): boolean {
    if (this.done) return false;
    if (!this.refusing) this.received.push(chunk);
    const ret = this.parser.execute(chunk);
    if (typeof ret !== 'number') {
      this.close();
      this.outcomes.unusable();
      return false;
    }
    if (this.upgraded) {
      const received = this.received.length === 1 ? (this.received[0] as Buffer) : Buffer.concat(this.received);
      this.close();
      // llhttp stops at the end of a 101's head: what it did not parse of this chunk is tunnel.
      this.outcomes.tunnel(received, received.length - (chunk.length - ret));
      return true;
    }
    if (this.refusing) this.received.length = 0;
    return false;
  }

  /** The upstream closed: a body delimited by the close is complete. */
  end(): void {
    if (this.done) return;
    const ret = this.parser.finish();
    if (!this.done) {
      if (ret !== undefined && typeof ret !== 'number') {
        this.close();
        this.outcomes.unusable();
      } else this.finish();
    }
  }

  private finish(): void {
    this.close();
    this.outcomes.refused();
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.received = [];
    closeParserLater(this.parser);
  }
}

