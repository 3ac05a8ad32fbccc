/**
 * What every policy is built on: a pass run on a timer (never two at once, a failed pass logged
 * and the next one run as usual), and the Fastify plugin that starts it once the app is ready and
 * stops it before the lifecycle closes. A policy decides; the lifecycle's verbs act.
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '@deskhub/config';

export interface PolicyOptions {
  /** Used in logs and as the plugin's name. */
  name: string;
  intervalMs: number;
  logger: Logger;
}

export abstract class TimedPolicy<Result = unknown> {
  protected readonly logger: Logger;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<Result | null> | null = null;
  /** Something changed while a pass was under way: run another as soon as it ends. */
  private again = false;
  private stopped = false;

  constructor(protected readonly policy: PolicyOptions) {
    this.logger = policy.logger.child({ component: `policy:${policy.name}` });
  }

  /** One look at the desktops and what to do about them; calls only the lifecycle's public verbs. */
  protected abstract pass(): Promise<Result>;

  start(): void {
    if (this.timer !== null || this.stopped) return;
    this.timer = setInterval(() => void this.runOnce(), this.policy.intervalMs);
    this.timer.unref();
  }

  /** Runs a pass now, or joins the one under way; null when it failed or the policy is stopped. */
  runOnce(): Promise<Result | null> {
    if (this.stopped) return Promise.resolve(null);
    this.running ??= this.pass()
      .catch((err: unknown) => {
        this.logger.error({ err }, 'policy pass failed; the next one runs as usual');
        return null;
      })
      .finally(() => {
        this.running = null;
      });
    return this.running;
  }

  /**
   * A pass that sees what just changed: now, or right after the one under way (which may have
   * read the desktops before the change). Many calls during one pass make one more pass.
   */
  wake(): void {
    if (this.stopped) return;
    if (this.running === null) {
      void this.runOnce();
      return;
    }
    if (this.again) return;
    this.again = true;
    void this.running.then(() => {
      this.again = false;
      void this.runOnce();
    });
  }

  /** Stops the timer and waits for a pass under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}

/**
 * A policy as one plugin, so src/app.ts registers it in one line. `make` builds it from the app
 * (app.desktops, app.db, app.config) or returns null when its settings leave it off.
 */
export function policyPlugin(name: string, make: (app: FastifyInstance) => TimedPolicy | null) {
  return fp(
    async (app) => {
      const policy = make(app);
      if (policy === null) return;
      app.addHook('onReady', async () => policy.start());
      // Registered after the desktops plugin, so this runs before the lifecycle closes (onClose runs in reverse).
      app.addHook('onClose', async () => policy.stop());
    },
    { name: `policy-${name}`, dependencies: ['desktops'] },
  );
}
