/** The PostgreSQL AuthStore against a real PostgreSQL shows the behaviour every AuthStore must (auth-store.behavior.ts). */
import t from 'tap';
import { migrate, openPostgres } from '../../src/storage/postgres/database.ts';
import { PgAuthStore } from '../../src/storage/postgres/pg-auth-store.ts';
import { freshDatabase } from '../helpers/postgres.ts';
import { authStoreBehavior } from './auth-store.behavior.ts';

authStoreBehavior(t, async () => {
  const pool = await openPostgres({ url: await freshDatabase(t) });
  await migrate(pool);
  return new PgAuthStore(pool, { ownsPool: true });
});
