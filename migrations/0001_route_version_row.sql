-- The single row of the route version counter (schema.ts, routeVersion): bumped, never inserted.
INSERT INTO "route_version" ("id", "version") VALUES (1, 0) ON CONFLICT ("id") DO NOTHING;
