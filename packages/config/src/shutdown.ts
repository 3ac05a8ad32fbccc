/**
 * How a deskhub service stops: on the first SIGTERM or SIGINT it logs the signal, runs its close
 * chain once, and exits 0, or 1 after logging what failed.
 */
import type { Logger } from './logger.ts';

export interface Shutdown {
  /** A signal came and the close chain is under way (a failure seen now is part of stopping). */
  readonly stopping: boolean;
}

/**
 * Each signal is listened for once: a second SIGTERM (or Ctrl-C) while the close chain hangs finds no
 * listener and gets Node's default, ending the process at once.
 */
export function stopOnSignals(logger: Logger, close: () => Promise<void>): Shutdown {
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
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
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  return {
    get stopping() {
      return stopping;
    },
  };
}
