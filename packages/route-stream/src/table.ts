/**
 * The in-memory route table a subscriber keeps. The object stays the same for the subscriber's
 * life (a proxy may hold on to it); a resync swaps the Map inside at once, so a lookup never sees
 * half a snapshot.
 */
import type { RouteTable } from './api.ts';
import type { Route } from './types.ts';

export class MapRouteTable implements RouteTable {
  routes = new Map<string, Route>();

  get(path: string): Route | undefined {
    return this.routes.get(path);
  }

  get size(): number {
    return this.routes.size;
  }

  values(): IterableIterator<Route> {
    return this.routes.values();
  }
}
