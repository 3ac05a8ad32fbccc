/**
 * Opens the database: Postgres when DATABASE_URL is set (driver `postgres`), otherwise embedded
 * PGlite under DATA_DIR. Both get the same drizzle schema, the same SQL migrations from
 * /migrations, and the check that SECRET_KEY is the key this database was set up with.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { eq } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import { PGlite } from '@electric-sql/pglite';
import postgres from 'postgres';
import { ConfigError } from '@deskhub/config';
import * as schema from './schema.ts';

export type Database = PgDatabase<PgQueryResultHKT, typeof schema>;
export type Transaction = Parameters<Parameters<Database['transaction']>[0]>[0];
/** Either the database or a transaction: what a query function needs. */
export type Queryable = Database | Transaction;

export const migrationsFolder = fileURLToPath(new URL('../../../../migrations', import.meta.url));

export interface DatabaseHandle {
  db: Database;
  kind: 'postgres' | 'pglite';
  /** Where it lives, without credentials (for logs). */
  location: string;
  /** Applies pending migrations (idempotent). */
  migrate(): Promise<void>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  databaseUrl?: string | undefined;
  /** PGlite keeps its files in <dataDir>/pglite. */
  dataDir: string;
  /** Postgres pool size. */
  maxConnections?: number;
}

export async function openDatabase(options: DatabaseOptions): Promise<DatabaseHandle> {
  if (options.databaseUrl) {
    const client = postgres(options.databaseUrl, {
      max: options.maxConnections ?? 10,
      // postgres.js waits 3^n/100 s (up to 20 s) before the n-th reconnect, counting every failed
      // attempt of the pool, and a query waits with it: after an outage of ten seconds the
      // control plane (its API, /readyz) hung for 5-20 s more once Postgres was back. One second
      // at most between attempts costs a connection attempt per second while Postgres is down.
      backoff: (retries: number) => Math.min(0.05 * 2 ** retries, 1),
      onnotice: () => {}, // "schema already exists, skipping" from the migrator is not news
      connection: { application_name: 'deskhub-control-plane' },
    });
    const db = drizzlePostgres(client, { schema });
    const url = new URL(options.databaseUrl);
    url.password = url.password ? '***' : '';
    return {
      db: db as unknown as Database,
      kind: 'postgres',
      location: url.toString(),
      migrate: () => migratePostgres(db, { migrationsFolder }),
      close: () => client.end({ timeout: 5 }),
    };
  }
  const dir = path.join(options.dataDir, 'pglite');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const client = new PGlite(dir);
  await client.waitReady;
  const db = drizzlePglite(client, { schema });
  return {
    db: db as unknown as Database,
    kind: 'pglite',
    location: dir,
    migrate: () => migratePglite(db, { migrationsFolder }),
    close: () => client.close(),
  };
}

/**
 * Remembers which key sealed this database's credentials, and refuses another one: with a
 * changed SECRET_KEY no desktop could get its credentials back.
 */
export async function checkSecretKey(db: Database, fingerprint: string): Promise<void> {
  await db.insert(schema.settings).values({ key: 'secret_key_fingerprint', value: fingerprint }).onConflictDoNothing();
  const [row] = await db.select().from(schema.settings).where(eq(schema.settings.key, 'secret_key_fingerprint'));
  if (row && row.value !== fingerprint) {
    throw new ConfigError('SECRET_KEY', 'is not the key this database was set up with; desktop credentials sealed with the old key could not be read. Use the original key.');
  }
}
