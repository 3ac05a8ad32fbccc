/**
 * Shares end on time (README: Sharing a desktop). Every proxy already stops honouring a share at
 * its expiry by itself (the route carries it, and a timer closes its WebSockets then); this policy
 * removes expired shares from the database and republishes the routes that still carry them,
 * through the lifecycle's verb, so the route, the API and the UI agree again.
 */
import { policyPlugin, TimedPolicy, type PolicyOptions } from './policy.ts';
import type { DesktopLifecycle } from '../lifecycle/desktops.ts';

export class ShareExpiry extends TimedPolicy<string[]> {
  constructor(
    private readonly lifecycle: DesktopLifecycle,
    options: PolicyOptions,
  ) {
    super(options);
  }

  protected async pass(): Promise<string[]> {
    const desktops = await this.lifecycle.expireShares();
    if (desktops.length > 0) this.logger.info({ desktops: desktops.length }, 'expired shares removed from their routes');
    return desktops;
  }
}

export default policyPlugin('share-expiry', (app) => {
  // Without desktop origins nothing can be shared, so nothing expires.
  if (!app.config.DESKTOP_ORIGIN) return null;
  return new ShareExpiry(app.desktops, { name: 'share-expiry', intervalMs: app.config.SHARES_INTERVAL_MS, logger: app.logger });
});
