/**
 * The control plane's HTTP application. Reading this function tells you the whole service:
 * third-party plugins, then deskhub's own (configuration, database, runtimes, route
 * publication, desktops, sessions), then the routes, then the web UI.
 */
import Fastify, { type FastifyInstance, type FastifySchemaValidationError } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { createLogger, requestIdOptions, type Logger } from '@deskhub/config';
import type { RouteStream } from '@deskhub/route-stream';
import { loadCatalog } from './catalog.ts';
import { clockDefaults, type ControlPlaneConfig } from './config.ts';
import { createMetrics } from './metrics.ts';
import { createSecrets, loadSecretKey } from './secrets.ts';
import type { DesktopRuntime } from './runtime/types.ts';
import external from './plugins/external/index.ts';
import errors from './plugins/app/errors.ts';
import bodies from './plugins/app/bodies.ts';
import configPlugin from './plugins/app/config.ts';
import idleClocks from './policies/idle-clocks.ts';
import warmPool from './policies/warm-pool.ts';
import database from './plugins/app/database.ts';
import runtimes from './plugins/app/runtimes.ts';
import routePublication from './plugins/app/route-publication.ts';
import desktops from './plugins/app/desktops.ts';
import access from './plugins/app/access.ts';
import csrf from './plugins/app/csrf.ts';
import sessions from './plugins/app/sessions.ts';
import health from './routes/health.ts';
import auth from './routes/auth.ts';
import shareExpiry from './policies/share-expiry.ts';
import handoff from './routes/handoff.ts';
import { desktopOriginsSource } from '@deskhub/access-token';
import api, { sharedSchemas } from './routes/api/index.ts';
import { webUi } from '@deskhub/web-ui';

/** API requests are small JSON documents; desktop uploads go through the proxy, not here. */
const API_BODY_LIMIT = 1024 * 1024;

export interface AppOptions {
  config: ControlPlaneConfig;
  /** Default: a pino logger named control-plane at LOG_LEVEL. */
  logger?: Logger;
  /** A route stream shared with an in-process proxy; default: one from REDIS_URL (or a private bus). */
  routeStream?: RouteStream;
  /** Runtimes built by the caller (tests); default: those RUNTIME allows. */
  runtimes?: DesktopRuntime[];
  /** Stop desktop processes when the app closes (the embedded start). */
  stopDesktopsOnClose?: boolean;
  /** Where runtimes read their own settings (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Serve the web UI (@deskhub/web-ui) at `/`; default true. */
  webUi?: boolean;
}

/** Fastify's wording (`body/type must be string`), naming the field an unknown-field error is about. */
function validationMessage(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const text = errors
    .map((e) => {
      const field = `${dataVar}${e.instancePath}`;
      const unknown = e.keyword === 'additionalProperties' ? (e.params as { additionalProperty?: string }).additionalProperty : undefined;
      return unknown !== undefined ? `${field} has a field it does not know: "${unknown}"` : `${field} ${e.message ?? 'is not valid'}`;
    })
    .join(', ');
  return new Error(text);
}

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const { config } = options;
  const catalog = loadCatalog(config.CATALOG, { defaultReadyTimeoutS: config.READY_TIMEOUT_S, clocks: clockDefaults(config) });
  const secrets = createSecrets(loadSecretKey(config.SECRET_KEY, config.DATA_DIR));
  const metrics = createMetrics();

  const logger = options.logger ?? createLogger('control-plane', config.LOG_LEVEL);
  const app = Fastify({
    loggerInstance: logger,
    ...requestIdOptions,
    bodyLimit: API_BODY_LIMIT,
    trustProxy: '127.0.0.1',
    // No type coercion anywhere: Fastify's default ('array') turned {"type":["demo"]} into "demo"
    // and created a desktop. A value of the wrong type is a 400 naming the field; the one numeric
    // query parameter (after=) is a digit string its route converts. Nor are unknown fields
    // dropped in silence (Fastify's default removeAdditional): {"type":"web","nmae":"x"} made a
    // desktop without its name; now a 400 naming "nmae" (bodies say additionalProperties: false).
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
    schemaErrorFormatter: validationMessage,
    // The first reconciliation pass runs before the app is ready (plugins/app/desktops.ts) and
    // may remove what a dead control plane left: a swarm service is gone only once its task has
    // stopped (10 s grace) and its node let go of it. Fastify's 10 s would stop such a start-up.
    pluginTimeout: 120_000,
  }).withTypeProvider<TypeBoxTypeProvider>();
  for (const schema of sharedSchemas) app.addSchema(schema);

  try {
    await app.register(errors);
    await app.register(bodies);
    await app.register(external, { cookieSecret: secrets.cookieKey, publicUrl: config.PUBLIC_URL });

    await app.register(configPlugin, { config, catalog, secrets, metrics, logger });
    await app.register(csrf);
    await app.register(database);
    await app.register(runtimes, {
      stopDesktopsOnClose: options.stopDesktopsOnClose ?? false,
      env: options.env ?? process.env,
      ...(options.runtimes ? { runtimes: options.runtimes } : {}),
    });
    await app.register(routePublication, options.routeStream ? { routeStream: options.routeStream } : {});
    await app.register(desktops, { stopDesktopsOnClose: options.stopDesktopsOnClose ?? false });
    await app.register(idleClocks);
    await app.register(warmPool);
    await app.register(shareExpiry);
    await app.register(access);
    await app.register(sessions);

    await app.register(health);
    await app.register(auth);
    await app.register(handoff);
    await app.register(api);
    // The web UI claims only its own paths (/, /signin, /assets/...), never /api or /auth.
    // With DESKTOP_ORIGIN its CSP lets it frame the desktops' own origins.
    if (options.webUi ?? true) await app.register(webUi, config.DESKTOP_ORIGIN ? { frameSources: [desktopOriginsSource(config.DESKTOP_ORIGIN)] } : {});
    await app.ready();
  } catch (err) {
    await app.close().catch(() => {});
    throw err;
  }
  return app as unknown as FastifyInstance;
}
