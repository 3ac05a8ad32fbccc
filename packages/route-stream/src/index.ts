/**
 * The route stream: a full snapshot plus numbered changes from the control plane to every proxy
 * replica, over Redis (several processes) or an in-process bus (the embedded start).
 * See README.md for the protocol.
 */
export * from './types.ts';
export * from './api.ts';
export { createRouteStream } from './stream.ts';
export type { RouteStream, RouteStreamOptions, SubscriberOptions } from './stream.ts';
export { RouteMessageError, parseRoute, parseRouteChange } from './schema.ts';
export { viewerKey, parseViewerKey } from './bus.ts';
export { createRevocationChannel } from './revocations.ts';
export type { Revocation, RevocationChannel } from './revocations.ts';
