/** Opens the database (Postgres or PGlite), applies migrations, checks SECRET_KEY against it; closes it last. */
import fp from 'fastify-plugin';
import { checkSecretKey, openDatabase, type Database, type DatabaseHandle } from '../../db/client.ts';

declare module 'fastify' {
  interface FastifyInstance {
    database: DatabaseHandle;
    db: Database;
  }
}

export default fp(
  async (app) => {
    const handle = await openDatabase({ databaseUrl: app.config.DATABASE_URL, dataDir: app.config.DATA_DIR });
    try {
      await handle.migrate();
      await checkSecretKey(handle.db, app.secrets.fingerprint);
    } catch (err) {
      await handle.close().catch(() => {});
      throw err;
    }
    app.log.info({ database: handle.kind, location: handle.location }, 'database ready');
    app.decorate('database', handle);
    app.decorate('db', handle.db);
    app.addHook('onClose', async () => {
      await handle.close();
    });
  },
  { name: 'database', dependencies: ['config'] },
);
