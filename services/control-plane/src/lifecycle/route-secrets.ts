/**
 * A route's secrets: the Authorization headers the proxy injects (the owner's user, and for view
 * shares the read-only user's). They travel to the proxies in the route, but are never stored in
 * the clear: `desktops.route` and the outbox keep the route without them, the desktop's sealed
 * credentials (and the outbox's sealed copy) hold them. One place splits and joins them.
 */
import type { Route } from '@deskhub/route-stream';
import type { DesktopCredentials, StoredRoute } from '../db/schema.ts';
import type { Secrets } from '../secrets.ts';

export interface RouteSecrets {
  authorization: string | null;
  viewerAuthorization?: string | null;
}

/** The route without its secrets, and the secrets. */
export function splitSecrets(route: Route): { stored: StoredRoute; secrets: RouteSecrets } {
  const { authorization, viewerAuthorization, ...stored } = route;
  return { stored, secrets: viewerAuthorization === undefined ? { authorization } : { authorization, viewerAuthorization } };
}

/** The route with its secrets back in (a null or absent viewer header leaves the route without one). */
export function joinSecrets(stored: StoredRoute, secrets: RouteSecrets | null): Route {
  const route: Route = { ...stored, authorization: secrets?.authorization ?? null };
  if (secrets?.viewerAuthorization) route.viewerAuthorization = secrets.viewerAuthorization;
  return route;
}

/** The secrets a desktop's credentials give its route. */
export function secretsOf(credentials: DesktopCredentials): RouteSecrets {
  return { authorization: credentials.authorization, viewerAuthorization: credentials.viewerAuthorization ?? null };
}

/** Seals secrets for the outbox. */
export function sealSecrets(secrets: Secrets, routeSecrets: RouteSecrets): string | null {
  return routeSecrets.authorization === null && !routeSecrets.viewerAuthorization ? null : secrets.seal(routeSecrets);
}

/** Opens the outbox's sealed secrets (a bare string: an Authorization header sealed before view shares existed). */
export function openSecrets(secrets: Secrets, sealed: string): RouteSecrets {
  const opened = secrets.open<RouteSecrets | string>(sealed);
  return typeof opened === 'string' ? { authorization: opened } : opened;
}
