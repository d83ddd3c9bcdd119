/**
 * PostgreSQL for Vellum's stores (`VELLUM_DATABASE_URL=postgres://…`; SQLite stays the zero-service
 * default): a connection pool from `pg`, and the schema as numbered migrations applied in order,
 * once, under an advisory lock (several nodes may start at once), each in its own transaction.
 *
 * Stores on PostgreSQL so far: blocks (pg-blob-store.ts) and the authorization server's store
 * (pg-auth-store.ts). The index, audit queue, export jobs and subscription outbox are SQLite-only
 * for now.
 */
import pg from 'pg';
import { storageError } from '../errors.ts';
import { INDEX_SCHEMA } from './pg-schema.ts';

export interface PostgresOptions {
  /** postgres://user:password@host:port/database */
  url: string;
  /** Most connections in the pool (default 10). */
  maxConnections?: number;
}

/** One schema change: applied once, in `version` order. */
interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** The schema, oldest first. A migration, once released, never changes: a change is a new one. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'blocks',
    sql: `CREATE TABLE blocks (
      cid   TEXT PRIMARY KEY,
      bytes BYTEA NOT NULL
    )`,
  },
  {
    version: 2,
    name: 'auth',
    sql: `CREATE TABLE auth_clients (
      client_id TEXT PRIMARY KEY,
      record JSONB NOT NULL,
      admin BOOLEAN NOT NULL,
      created_at BIGINT NOT NULL
    );
    CREATE TABLE auth_users (
      id TEXT PRIMARY KEY,
      username TEXT NOT NULL UNIQUE,
      record JSONB NOT NULL
    );
    CREATE TABLE auth_used_jtis (
      client_id TEXT NOT NULL,
      jti TEXT NOT NULL,
      expires_at BIGINT NOT NULL,
      PRIMARY KEY (client_id, jti)
    );
    CREATE INDEX auth_used_jtis_expiry ON auth_used_jtis (expires_at);
    CREATE TABLE auth_codes (
      code_hash TEXT PRIMARY KEY,
      record JSONB NOT NULL,
      expires_at BIGINT NOT NULL,
      used_at BIGINT
    );
    CREATE INDEX auth_codes_expiry ON auth_codes (expires_at);
    CREATE TABLE auth_refresh_tokens (
      token_hash TEXT PRIMARY KEY,
      family TEXT NOT NULL,
      record JSONB NOT NULL,
      expires_at BIGINT NOT NULL,
      used_at BIGINT,
      revoked BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX auth_refresh_tokens_family ON auth_refresh_tokens (family);
    CREATE INDEX auth_refresh_tokens_expiry ON auth_refresh_tokens (expires_at);
    CREATE TABLE auth_secrets (
      name TEXT PRIMARY KEY,
      value BYTEA NOT NULL
    )`,
  },
  {
    version: 3,
    name: 'index',
    sql: INDEX_SCHEMA,
  },
];

/** BIGINT (sequence numbers, rids, times in ms: all below 2^53) read as numbers, not strings. */
const INT8_OID = 20;
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/** Key of the advisory lock migrations run under ('vellum migrations'). */
const MIGRATION_LOCK = 0x76656c6c;

/** Open a pool; fails with `VLM_DB_UNAVAILABLE` (unavailable) when the server cannot be reached. */
export async function openPostgres(options: PostgresOptions): Promise<pg.Pool> {
  const pool = new pg.Pool({ connectionString: options.url, max: options.maxConnections ?? 10, connectionTimeoutMillis: 10_000, types: TYPES });
  // An idle client that loses its connection (the server restarted) is dropped from the pool, not thrown.
  pool.on('error', () => undefined);
  try {
    const client = await pool.connect();
    client.release();
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw storageError('VLM_DB_UNAVAILABLE', 'unavailable', 'cannot connect to PostgreSQL', err);
  }
  return pool;
}

/** Apply the migrations not yet applied; returns the versions applied now. Safe to run from several processes at once. */
export async function migrate(pool: pg.Pool): Promise<number[]> {
  const client = await pool.connect();
  const applied: number[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
      )`);
      const done = new Set((await client.query<{ version: number }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version));
      const newest = Math.max(0, ...done);
      if (newest > MIGRATIONS[MIGRATIONS.length - 1]!.version) {
        throw storageError('VLM_DB_SCHEMA', 'fault', `the database schema (version ${newest}) is newer than this Vellum knows`);
      }
      for (const migration of MIGRATIONS) {
        if (done.has(migration.version)) continue;
        await client.query('BEGIN');
        try {
          await client.query(migration.sql);
          await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [migration.version, migration.name]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw storageError('VLM_DB_MIGRATION', 'fault', `migration ${migration.version} (${migration.name}) failed`, err);
        }
        applied.push(migration.version);
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    }
  } finally {
    client.release();
  }
  return applied;
}
