/**
 * @deskhub/proxy: the data-plane proxy. `startProxy` runs it inside any process (the embedded
 * start, tests, benchmarks); `main.ts` runs it as a service of its own. See README.md.
 */
export { RESTART_CLOSE_REASON, startProxy } from './proxy.ts';
export type { ProxyOptions, RunningProxy } from './proxy.ts';
export type { AccessDecision, AccessHook } from './router.ts';
export { createAccessControl, RENEW_PATH } from './access.ts';
export type { AccessControl, AccessControlOptions } from './access.ts';
