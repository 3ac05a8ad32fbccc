/** The runtime registry: every runtime RUNTIME allows, answering or not; closed on shutdown. */
import fp from 'fastify-plugin';
import { createRuntimeRegistry, describeRuntimes, type RuntimeRegistry } from '../../runtime/index.ts';
import type { DesktopRuntime } from '../../runtime/types.ts';

declare module 'fastify' {
  interface FastifyInstance {
    runtimes: RuntimeRegistry;
  }
}

export interface RuntimesPluginOptions {
  /** Runtimes built by the caller (tests); default: from the registry's factories. */
  runtimes?: DesktopRuntime[];
  /** Stop desktop processes when the app closes (the embedded start). */
  stopDesktopsOnClose: boolean;
  /** Where runtimes read their own settings. */
  env: NodeJS.ProcessEnv;
}

export default fp<RuntimesPluginOptions>(
  async (app, options) => {
    const registry = createRuntimeRegistry({
      selection: app.config.RUNTIME,
      context: { dataDir: app.config.DATA_DIR, logger: app.logger, stopDesktopsOnClose: options.stopDesktopsOnClose, env: options.env },
      ...(options.runtimes ? { runtimes: options.runtimes } : {}),
    });
    app.decorate('runtimes', registry);
    app.addHook('onClose', async () => {
      await registry.close();
    });
    await describeRuntimes(registry, app.catalog, app.logger);
  },
  { name: 'runtimes', dependencies: ['config'] },
);
