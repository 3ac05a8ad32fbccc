/**
 * One configuration loader, one logger and one way to stop for every deskhub service.
 *
 * Configuration comes from environment variables only. Each service declares the variables it
 * reads with the small builders below; `loadConfig` reads them all and throws a `ConfigError`
 * naming the first bad variable, so start-up fails with a message a person can act on.
 * `stopOnSignals` is the one way a service's main stops on SIGTERM/SIGINT.
 */
export { ConfigError, loadConfig, env } from './env.ts';
export type { EnvSpec, ConfigOf } from './env.ts';
export { createLogger, loggerOptions, redactPaths, requestIdOptions, StandingCondition } from './logger.ts';
export type { Logger } from './logger.ts';
export { stopOnSignals } from './shutdown.ts';
export type { Shutdown, StopOptions } from './shutdown.ts';
export { allocatorInUse, parseEnvFile } from './allocator.ts';
export type { Allocator } from './allocator.ts';
