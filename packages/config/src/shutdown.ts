/**
 * How a deskhub service stops: on the first SIGTERM or SIGINT it logs the signal, runs its close
 * chain once, and exits 0, or 1 after logging what failed.
 */
import type { Logger } from './logger.ts';

export interface Shutdown {
  /** A signal came and the close chain is under way (a failure seen now is part of stopping). */
  readonly stopping: boolean;
}

export interface StopOptions {
  /**
   * A second signal while the close chain runs (a service whose stop waits on purpose, as the
   * proxy's drain does): called once, to hurry it. A third signal then ends the process at once
   * (exit 1). Without it, a second signal of the same kind finds no listener and gets Node's
   * default, and one of the other kind is ignored.
   */
  onRepeat?: (signal: NodeJS.Signals) => void;
}

/**
 * Each signal is listened for once: a second SIGTERM (or Ctrl-C) while the close chain hangs finds no
 * listener and gets Node's default, ending the process at once (unless `onRepeat` is given, above).
 */
export function stopOnSignals(logger: Logger, close: () => Promise<void>, options: StopOptions = {}): Shutdown {
  let stopping = false;
  let repeats = 0;
  const { onRepeat } = options;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      if (onRepeat === undefined) return;
      repeats++;
      if (repeats === 1) {
        logger.info({ signal }, 'stop asked again: hurrying');
        onRepeat(signal);
      } else {
        logger.warn({ signal }, 'stop asked a third time: exiting at once');
        process.exit(1);
      }
      return;
    }
    stopping = true;
    logger.info({ signal }, 'stopping');
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  const listen = onRepeat === undefined ? process.once.bind(process) : process.on.bind(process);
  listen('SIGTERM', () => stop('SIGTERM'));
  listen('SIGINT', () => stop('SIGINT'));
  return {
    get stopping() {
      return stopping;
    },
  };
}
