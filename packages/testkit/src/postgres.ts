/**
 * A fresh, uniquely named Postgres database per test, created on the server TEST_DATABASE_URL
 * points at (scripts/test.sh sets it; the default is the one the test machines run) and dropped
 * afterwards, so test files never see each other's rows.
 */
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';

export const defaultTestDatabaseUrl = 'postgres://deskhub:deskhub@127.0.0.1:5432/postgres';

export interface TestDatabase {
  /** Connection URL of the new database. */
  url: string;
  name: string;
  /** Drops it, ending any connection still open to it. Safe to call twice. */
  drop(): Promise<void>;
}

export function testDatabaseServerUrl(): string {
  return process.env.TEST_DATABASE_URL?.trim() || defaultTestDatabaseUrl;
}

/** Creates `deskhub_test_<label>_<random>`; `label` helps when reading pg_stat_activity. */
export async function createTestDatabase(label = 'db'): Promise<TestDatabase> {
  const serverUrl = testDatabaseServerUrl();
  const safeLabel = label.toLowerCase().replace(/[^a-z0-9]+/g, '_').slice(0, 20);
  const name = `deskhub_test_${safeLabel}_${process.pid}_${randomBytes(4).toString('hex')}`;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end({ timeout: 5 });
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    url: url.toString(),
    name,
    async drop() {
      if (dropped) return;
      dropped = true;
      const sql = postgres(serverUrl, { max: 1, onnotice: () => {} });
      try {
        await sql.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await sql.end({ timeout: 5 });
      }
    },
  };
}
