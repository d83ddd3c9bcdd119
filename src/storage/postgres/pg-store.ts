/**
 * What the PostgreSQL stores share: a pool (migrated), and whether `close()` ends it.
 */
import type pg from 'pg';

export abstract class PgStore {
  protected readonly pool: pg.Pool;
  readonly #ownsPool: boolean;
  protected closed = false;

  /** A store on `pool`; `ownsPool`: `close()` ends the pool too. */
  constructor(pool: pg.Pool, options: { ownsPool?: boolean } = {}) {
    this.pool = pool;
    this.#ownsPool = options.ownsPool ?? false;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.#ownsPool) await this.pool.end();
  }
}
