/**
 * Follows Docker's event stream for deskhub's containers (die, oom, destroy) and turns each into
 * a RuntimeStatus. The stream is reopened when it ends or fails, from the time of the last event
 * seen, so a daemon restart loses nothing; reconciliation still covers whatever slips through.
 */
import type Docker from 'dockerode';
import type { RuntimeStatus } from '../types.ts';
import { describeExit } from './engine.ts';

export interface EventWatcherOptions {
  docker: Docker;
  /** Label filters every watched container carries, e.g. ["deskhub=1", "deskhub.instance=x"]. */
  labels: string[];
  onStatus: (status: RuntimeStatus) => void;
  onError?: (err: Error) => void;
  /** Delay before reopening a stream that ended, doubled up to 10 s while it keeps failing. */
  retryMs?: number;
}

interface DockerEvent {
  Type?: string;
  Action?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  id?: string;
  time?: number;
  timeNano?: number;
}

export class EventWatcher {
  private stream: (NodeJS.ReadableStream & { destroy?: () => void }) | null = null;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private since = Math.floor(Date.now() / 1000);
  private retryMs: number;
  /** Containers killed for lack of memory: their next `die` says so. */
  private oomKilled = new Set<string>();
  /** Resolves once the first stream is open, so callers know events from now on are seen. */
  readonly ready: Promise<void>;
  private markReady!: () => void;

  constructor(private readonly options: EventWatcherOptions) {
    this.retryMs = options.retryMs ?? 500;
    this.ready = new Promise((resolve) => (this.markReady = resolve));
    void this.open();
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    try {
      const stream = (await this.options.docker.getEvents({
        since: this.since,
        filters: { type: ['container'], event: ['die', 'oom', 'destroy'], label: this.options.labels },
      })) as NodeJS.ReadableStream & { destroy?: () => void };
      if (this.stopped) {
        stream.destroy?.();
        return;
      }
      this.stream = stream;
      this.retryMs = this.options.retryMs ?? 500;
      this.markReady();
      let buffered = '';
      stream.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        let newline: number;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (line) this.handle(line);
        }
      });
      const reopen = () => {
        if (this.stream !== stream) return;
        this.stream = null;
        this.schedule();
      };
      stream.on('end', reopen);
      stream.on('close', reopen);
      stream.on('error', (err: Error) => {
        this.options.onError?.(err);
        reopen();
      });
    } catch (err) {
      this.options.onError?.(err as Error);
      this.schedule();
    }
  }

  private schedule(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.open();
    }, this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, 10_000);
  }

  private handle(line: string): void {
    let event: DockerEvent;
    try {
      event = JSON.parse(line) as DockerEvent;
    } catch {
      return;
    }
    const id = event.Actor?.ID ?? event.id;
    const attributes = event.Actor?.Attributes ?? {};
    if (!id) return;
    // Reopen from this second: an event in the same second may be delivered twice, never lost.
    if (event.time) this.since = Math.max(this.since, event.time);
    const desktopId = attributes['deskhub.desktop'] ?? '';
    switch (event.Action) {
      case 'oom':
        this.oomKilled.add(id);
        return;
      case 'die': {
        const reason = describeExit({ oomKilled: this.oomKilled.delete(id), exitCode: attributes.exitCode ?? '?' });
        this.options.onStatus({ runtimeId: id, desktopId, running: false, reason });
        return;
      }
      case 'destroy':
        this.oomKilled.delete(id);
        this.options.onStatus({ runtimeId: id, desktopId, running: false, reason: 'container removed' });
        return;
    }
  }

  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const stream = this.stream;
    this.stream = null;
    stream?.destroy?.();
    this.markReady();
  }
}
