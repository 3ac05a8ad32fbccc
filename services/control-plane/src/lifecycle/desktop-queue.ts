/**
 * One queue per desktop: operations on the same desktop (create, stop, start, delete, repairs)
 * run one at a time, in the order they were asked for, so none of them sees another half done.
 * A stop or delete may preempt a bring-up in progress: it aborts its waits and runs right after.
 */
/** Thrown out of an operation whose signal was aborted: a later operation took over the desktop. */
export class Aborted extends Error {}

export class DesktopQueue {
  private readonly entries = new Map<string, { tail: Promise<unknown>; pending: number; current: AbortController | null }>();

  /** Whether anything is running or queued for this desktop. */
  busy(desktopId: string): boolean {
    return this.entries.has(desktopId);
  }

  get size(): number {
    return this.entries.size;
  }

  run<T>(desktopId: string, operation: (signal: AbortSignal) => Promise<T>, options: { preempt?: boolean } = {}): Promise<T> {
    let entry = this.entries.get(desktopId);
    if (!entry) {
      entry = { tail: Promise.resolve(), pending: 0, current: null };
      this.entries.set(desktopId, entry);
    }
    const own = entry;
    if (options.preempt) own.current?.abort(new Error('superseded by a later operation'));
    own.pending++;
    const controller = new AbortController();
    const result = own.tail.then(async () => {
      own.current = controller;
      try {
        return await operation(controller.signal);
      } finally {
        own.current = null;
      }
    });
    const settled = result.then(
      () => undefined,
      () => undefined,
    );
    own.tail = settled;
    void settled.then(() => {
      own.pending--;
      if (own.pending === 0 && this.entries.get(desktopId) === own) this.entries.delete(desktopId);
    });
    return result;
  }

  /** Aborts what runs now and waits until every queue is empty (shutdown). */
  async drain(): Promise<void> {
    for (const entry of this.entries.values()) entry.current?.abort(new Error('deskhub is shutting down'));
    while (this.entries.size > 0) await Promise.all([...this.entries.values()].map((e) => e.tail));
  }
}
