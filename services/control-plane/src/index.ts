/** @deskhub/control-plane: the app, its start functions and its configuration, for the embedded start, tests and benchmarks. */
export { buildApp } from './app.ts';
export type { AppOptions } from './app.ts';
export { startControlPlane } from './control-plane.ts';
export type { RunningControlPlane, StartOptions } from './control-plane.ts';
export { loadControlPlaneConfig, defaultCatalogPath } from './config.ts';
export type { ControlPlaneConfig } from './config.ts';
export { startEmbedded } from './embedded-start.ts';
export type { EmbeddedOptions, RunningDeskhub } from './embedded-start.ts';
