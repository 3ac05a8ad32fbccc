/** `pnpm db:migrate`: applies the SQL migrations to DATABASE_URL, or to the embedded PGlite under DATA_DIR. */
import path from 'node:path';
import { ConfigError, env, loadConfig } from '@deskhub/config';
import { openDatabase } from './client.ts';

try {
  const config = loadConfig({ DATABASE_URL: env.url(['postgres', 'postgresql']), DATA_DIR: env.string('./.data') });
  const handle = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: path.resolve(config.DATA_DIR), maxConnections: 1 });
  try {
    await handle.migrate();
    process.stdout.write(`deskhub: migrations applied to ${handle.kind} at ${handle.location}\n`);
  } finally {
    await handle.close();
  }
} catch (err) {
  process.stderr.write(`deskhub: ${err instanceof ConfigError ? err.message : (err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
}
