/**
 * One configuration loader and one logger for every deskhub service.
 *
 * Configuration comes from environment variables only. Each service declares the variables it
 * reads with the small builders below; `loadConfig` reads them all and throws a `ConfigError`
 * naming the first bad variable, so start-up fails with a message a person can act on.
 */
export { ConfigError, loadConfig, env } from './env.ts';
export type { EnvSpec, ConfigOf } from './env.ts';
export { createLogger, loggerOptions, redactPaths, requestIdOptions } from './logger.ts';
export type { Logger } from './logger.ts';
