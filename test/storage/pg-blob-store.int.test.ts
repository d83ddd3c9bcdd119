/**
 * The PostgreSQL BlobStore against a real PostgreSQL (test/helpers/postgres.ts): the behaviour
 * every BlobStore shows (blob-store.behavior.ts), the schema applied by numbered migrations once
 * (twice at once from two pools: still once), and a server that is down answered as unavailable.
 */
import t from 'tap';
import pg from 'pg';
import { migrate, MIGRATIONS, openPostgres } from '../../src/storage/postgres/database.ts';
import { PgBlobStore } from '../../src/storage/postgres/pg-blob-store.ts';
import { isStorageError } from '../../src/storage/errors.ts';
import { freshDatabase } from '../helpers/postgres.ts';
import { blobStoreBehavior } from './blob-store.behavior.ts';

blobStoreBehavior(t, async () => {
  const pool = await openPostgres({ url: await freshDatabase(t) });
  await migrate(pool);
  return new PgBlobStore(pool, { ownsPool: true });
});

t.test('migrations: applied once, in order, also when two nodes start at once', async (t) => {
  const url = await freshDatabase(t);
  const [a, b] = await Promise.all([openPostgres({ url }), openPostgres({ url })]);
  t.teardown(() => Promise.all([a.end(), b.end()]));
  const applied = await Promise.all([migrate(a), migrate(b)]);
  t.same(applied.flat().sort(), MIGRATIONS.map((m) => m.version), 'each migration applied by exactly one of them');
  t.same(await migrate(a), [], 'nothing left to apply');
  const { rows } = await a.query('SELECT version, name FROM schema_migrations ORDER BY version');
  t.same(rows, MIGRATIONS.map(({ version, name }) => ({ version, name })));
});

t.test('a database schema newer than this Vellum is refused, not used', async (t) => {
  const url = await freshDatabase(t);
  const pool = await openPostgres({ url });
  t.teardown(() => pool.end());
  await migrate(pool);
  await pool.query("INSERT INTO schema_migrations (version, name) VALUES (9999, 'from the future')");
  await t.rejects(migrate(pool), { code: 'VLM_DB_SCHEMA' });
});

t.test('an unreachable server: VLM_DB_UNAVAILABLE (unavailable)', async (t) => {
  const err = await openPostgres({ url: 'postgres://postgres@127.0.0.1:1/none' }).catch((e: unknown) => e);
  t.ok(isStorageError(err), 'a StorageError');
  t.match(err, { code: 'VLM_DB_UNAVAILABLE', category: 'unavailable' });
});

t.test('blocks are rows of the blocks table, verified on the way out', async (t) => {
  const pool = await openPostgres({ url: await freshDatabase(t) });
  await migrate(pool);
  const store = new PgBlobStore(pool, { ownsPool: true });
  t.teardown(() => store.close());
  const cid = await store.put(new TextEncoder().encode('{"resourceType":"Patient"}'));
  const direct = new pg.Client({ connectionString: (pool as unknown as { options: { connectionString: string } }).options.connectionString });
  await direct.connect();
  t.teardown(() => direct.end());
  t.equal((await direct.query('SELECT count(*)::int AS n FROM blocks WHERE cid = $1', [cid])).rows[0].n, 1);
  await direct.query("UPDATE blocks SET bytes = 'tampered'::bytea WHERE cid = $1", [cid]);
  await t.rejects(store.get(cid), { code: 'VLM_BLOB_CORRUPT' }, 'a block that does not match its CID is never served');
});
