/**
 * Behind the server's back: run SQL on a test server's index (its SQLite file, or its PostgreSQL
 * database under VELLUM_TEST_DATABASE=postgres) to tamper with what it stored. Each statement is
 * given in both dialects; `?` placeholders in either.
 */
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import type { TestServer } from './server.ts';

export interface RawSql {
  sqlite: string;
  postgres: string;
}

/** Run one statement; its rows. */
export async function rawIndex(s: Pick<TestServer, 'config' | 'dataDir'>, sql: RawSql | string, ...params: (string | number)[]): Promise<Record<string, unknown>[]> {
  const { sqlite, postgres } = typeof sql === 'string' ? { sqlite: sql, postgres: sql } : sql;
  if (s.config.databaseUrl) {
    const client = new pg.Client({ connectionString: s.config.databaseUrl });
    await client.connect();
    try {
      let n = 0;
      return (await client.query(postgres.replace(/\?/g, () => `$${++n}`), params)).rows as Record<string, unknown>[];
    } finally {
      await client.end();
    }
  }
  const db = new DatabaseSync(path.join(s.dataDir, 'vellum.db'));
  try {
    const statement = db.prepare(sqlite);
    return /^\s*SELECT/i.test(sqlite) ? (statement.all(...params) as Record<string, unknown>[]) : (statement.run(...params), []);
  } finally {
    db.close();
  }
}

/** 32 random bytes in either dialect (PostgreSQL has no randomblob without pgcrypto). */
export const RANDOM_32: RawSql = { sqlite: 'randomblob(32)', postgres: "decode(md5(random()::text) || md5(random()::text), 'hex')" };
