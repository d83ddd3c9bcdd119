/**
 * The index on PostgreSQL (`VELLUM_DATABASE_URL=postgres://…`): the same IndexStore as the
 * embedded SQLite one (src/storage/sqlite/sqlite-index.ts) — versions, current pointers, search
 * rows, the anchor queue, data keys, export jobs and the subscription outbox — on the tables of
 * migration 3 (pg-schema.ts), for several Vellum nodes on one database.
 *
 * Commits are serialised by a transaction-level advisory lock (COMMIT_LOCK), taken before the
 * version check: `seq` is then assigned in commit order on every node, so a reader that saw seq n
 * has seen every version before it (history snapshots, `_since` exports and subscription events
 * rely on that), and two nodes updating one resource see each other's version (one gets
 * VLM_INDEX_VERSION_CONFLICT). Reads need no lock. A commit is durable when it returns.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { DataKeyStore } from '../cipher.ts';
import { isStorageError, storageError, type StorageError } from '../errors.ts';
import {
  ANCHOR_SELECT,
  VERSION_COLUMNS,
  filterDecision,
  filtersByType,
  toAnchorRecord,
  toEvent,
  toJob,
  toRecord,
  type AnchorRow,
  type EventRow,
  type ExportJobDbRow,
  type VersionRow,
} from '../index-rows.ts';
import type {
  AnchorRecord,
  BatchReceipt,
  CurrentResource,
  CurrentResourcesQuery,
  EventFilter,
  EventInteraction,
  ExportJobRow,
  ExportJobStore,
  HistoryQuery,
  IndexStore,
  IndexWrite,
  Page,
  PendingLeaf,
  PlannedBatch,
  SearchPage,
  SearchRowsReplacement,
  SnapshotQuery,
  SubscriptionEvent,
  SubscriptionState,
  SubscriptionStore,
  SubscriptionWatcher,
  VersionRecord,
} from '../index-store.ts';
import { SHARED_SCOPE } from '../keys.ts';
import type { IndexQuery } from '../search-types.ts';
import { PgSearch, type Queryable } from './pg-search.ts';
import { PgStore } from './pg-store.ts';

/** Versions written before the first statistics refresh (`#maybeAnalyze`). */
const ANALYZE_FIRST = 100;

/** The tables searches read. */
const ANALYZED_TABLES = ['resources', 'versions', ...['string', 'token', 'date', 'reference', 'number', 'quantity', 'uri', 'composite'].map((k) => `search_${k}`)];

/** Key of the advisory lock every commit holds ('vellum commit'). */
const COMMIT_LOCK = 0x76636f6d;

/** PostgreSQL SQLSTATEs and socket errors that mean the server cannot be reached now (→ 503). */
function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && (code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === '53300')) return true;
  if (typeof code === 'string' && /^E(CONNREFUSED|CONNRESET|PIPE|TIMEDOUT|HOSTUNREACH|NOTFOUND)$/.test(code)) return true;
  const message = (err as { message?: unknown } | undefined)?.message;
  return typeof message === 'string' && /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(message);
}

/** A PostgreSQL failure as a StorageError: unreachable → unavailable; anything else → fault with `code`. */
function dbError(err: unknown, code: string, message: string): StorageError {
  if (isStorageError(err)) return err;
  if (isUnavailable(err)) return storageError('VLM_DB_UNAVAILABLE', 'unavailable', 'PostgreSQL cannot be reached', err);
  return storageError(code, 'fault', message, err);
}

function bytes(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

export class PgIndexStore extends PgStore implements IndexStore {
  readonly dataKeys: DataKeyStore;
  readonly exportJobs: ExportJobStore;
  readonly subscriptions: PgSubscriptions;
  #filtersByType = new Map<string, EventFilter[]>();
  readonly #search: PgSearch;
  readonly #batches = new Map<number, PlannedBatch>();
  /** Versions this node committed, and at how many it next refreshes the planner's statistics (see `#maybeAnalyze`). */
  #written = 0;
  #analyzeAt = ANALYZE_FIRST;
  #analyzing: Promise<void> | undefined;

  /** An index on a migrated pool (database.ts `openPostgres` + `migrate`); `ownsPool`: `close()` ends it. */
  constructor(pool: pg.Pool, options: { ownsPool?: boolean } = {}) {
    super(pool, options);
    this.#search = new PgSearch(pool);
    this.dataKeys = {
      getWrappedKey: async (scope) => {
        const { rows } = await this.#query('SELECT wrapped FROM data_keys WHERE scope = $1', [scope]);
        return rows[0] ? bytes((rows[0] as { wrapped: Buffer }).wrapped) : undefined;
      },
      putWrappedKeyIfAbsent: async (scope, wrapped) => {
        await this.#query('INSERT INTO data_keys (scope, wrapped) VALUES ($1, $2) ON CONFLICT (scope) DO NOTHING', [scope, Buffer.from(wrapped)]);
        const { rows } = await this.#query('SELECT wrapped FROM data_keys WHERE scope = $1', [scope]);
        return bytes((rows[0] as { wrapped: Buffer }).wrapped);
      },
      deleteWrappedKey: async (scope) => {
        await this.#query('DELETE FROM data_keys WHERE scope = $1', [scope]);
      },
    };
    this.exportJobs = new PgExportJobs((sql, params) => this.#query(sql, params));
    this.subscriptions = new PgSubscriptions(
      (sql, params) => this.#query(sql, params),
      (work) => this.#transaction(work),
      (filters) => {
        this.#filtersByType = filtersByType(filters);
      },
      (client, subscriptions, seq, at) => this.#events(client, subscriptions, seq, at),
      pool.options.connectionString,
    );
  }

  #check(): void {
    if (this.closed) throw storageError('VLM_INDEX_CLOSED', 'unavailable', 'the index is closed');
  }

  async #query(sql: string, params: unknown[] = [], db: Queryable = this.pool): Promise<pg.QueryResult> {
    this.#check();
    try {
      return await db.query(sql, params);
    } catch (err) {
      throw dbError(err, 'VLM_INDEX_QUERY', 'index query failed');
    }
  }

  /** Run `work` in one transaction (rolled back when it throws); `lock`: under the commit lock. */
  #transaction<T>(work: (client: pg.PoolClient) => Promise<T>, lock = false): Promise<T> {
    return this.#inTransaction(lock ? ['BEGIN', 'SELECT pg_advisory_xact_lock($1)'] : ['BEGIN'], work, 'VLM_INDEX_COMMIT', 'index commit failed');
  }

  /** Several reads from one snapshot (a read-only REPEATABLE READ transaction). */
  #snapshot<T>(work: (db: Queryable) => Promise<T>): Promise<T> {
    return this.#inTransaction(['BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY'], work, 'VLM_INDEX_QUERY', 'index query failed');
  }

  async #inTransaction<T>(begin: readonly string[], work: (client: pg.PoolClient) => Promise<T>, code: string, message: string): Promise<T> {
    this.#check();
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw dbError(err, code, message);
    }
    let broken = false;
    try {
      for (const statement of begin) await client.query(statement, statement.includes('$1') ? [COMMIT_LOCK] : []);
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {
        broken = true;
      });
      throw dbError(err, code, message);
    } finally {
      client.release(broken);
    }
  }

  async current(type: string, id: string): Promise<VersionRecord | undefined> {
    const { rows } = await this.#query(
      `SELECT ${VERSION_COLUMNS} FROM resources r JOIN versions v ON v.type = r.type AND v.id = r.id AND v.version = r.version
       WHERE r.type = $1 AND r.id = $2`,
      [type, id],
    );
    return rows[0] && toRecord(rows[0] as VersionRow);
  }

  async version(type: string, id: string, versionId: number): Promise<VersionRecord | undefined> {
    const { rows } = await this.#query(`SELECT ${VERSION_COLUMNS} FROM versions v WHERE v.type = $1 AND v.id = $2 AND v.version = $3`, [type, id, versionId]);
    return rows[0] && toRecord(rows[0] as VersionRow);
  }

  async lastSeq(): Promise<number> {
    const { rows } = await this.#query('SELECT COALESCE(MAX(seq), 0) AS seq FROM versions');
    return Number((rows[0] as { seq: number }).seq);
  }

  async history(query: HistoryQuery): Promise<Page<VersionRecord>> {
    const where: string[] = [];
    const params: unknown[] = [];
    const bind = (value: unknown) => `$${params.push(value)}`;
    if (query.type !== undefined) where.push(`v.type = ${bind(query.type)}`);
    if (query.id !== undefined) where.push(`v.id = ${bind(query.id)}`);
    for (const excluded of query.excludeTypes ?? []) where.push(`v.type <> ${bind(excluded)}`);
    if (query.since !== undefined) where.push(`v.last_updated >= ${bind(query.since)}`);
    if (query.maxSeq !== undefined) where.push(`v.seq <= ${bind(query.maxSeq)}`);
    if (query.keyScope !== undefined) {
      where.push(query.withDeletions ? `(v.key_scope = ${bind(query.keyScope)} OR v.deleted = 1)` : `v.key_scope = ${bind(query.keyScope)}`);
    }
    if (query.at !== undefined) {
      // Current at some point of [low, high]: written by `high`, and not superseded by `low`.
      where.push(
        `v.last_updated <= ${bind(query.at.high)} AND NOT EXISTS (SELECT 1 FROM versions n WHERE n.type = v.type AND n.id = v.id
         AND n.version > v.version AND n.last_updated <= ${bind(query.at.low)})`,
      );
    }
    const countParams = [...params];
    const clause = where.length ? `WHERE ${where.join(' AND ')}` : '';
    // Keyset paging (pages are newest first): after a page, older versions; before it, newer ones.
    const paged = [...where];
    if (query.olderThan !== undefined) paged.push(`v.seq < ${bind(query.olderThan)}`);
    if (query.newerThan !== undefined) paged.push(`v.seq > ${bind(query.newerThan)}`);
    const order = query.newerThan !== undefined ? 'ASC' : 'DESC';
    const sql =
      `SELECT ${VERSION_COLUMNS} FROM versions v ${paged.length ? `WHERE ${paged.join(' AND ')}` : ''} ` +
      `ORDER BY v.seq ${order} LIMIT ${bind(query.count)} OFFSET ${bind(query.offset)}`;
    // Page and total from one snapshot, so no commit lands between them.
    return this.#snapshot(async (db) => {
      const rows = (await this.#query(sql, params, db)).rows as VersionRow[];
      if (order === 'ASC') rows.reverse();
      const total = (await this.#query(`SELECT COUNT(*) AS n FROM versions v ${clause}`, countParams, db)).rows[0] as { n: number };
      return { records: rows.map(toRecord), total: Number(total.n) };
    });
  }

  async commit(writes: IndexWrite[]): Promise<VersionRecord[]> {
    const dirty: string[] = [];
    const changedSubscriptions: string[] = [];
    const records = await this.#transaction(async (client) => {
      const out: VersionRecord[] = [];
      const search = new PgSearch(client);
      // Subscriptions another node wrote since this node's filters were set: set them again first.
      await this.subscriptions.syncFilters(client);
      for (const w of writes) {
        const existing = (await client.query('SELECT rid, version, deleted FROM resources WHERE type = $1 AND id = $2', [w.type, w.id])).rows[0] as
          | { rid: number; version: number; deleted: number }
          | undefined;
        const created = !w.deleted && (!existing || Number(existing.deleted) === 1);
        const currentVersion = existing ? Number(existing.version) : 0;
        if (currentVersion !== w.expectedVersion || w.versionId !== currentVersion + 1) {
          throw storageError('VLM_INDEX_VERSION_CONFLICT', 'conflict', `${w.type} version ${currentVersion} is current, the write expected ${w.expectedVersion}`);
        }
        // Subscriptions: a deletion is an event for the filters the version it deletes matches (before it goes).
        const deletedMatches = w.deleted && existing && Number(existing.deleted) === 0 ? await this.#matching(search, w, 'delete') : [];
        let rid: number;
        if (existing) {
          rid = Number(existing.rid);
          await client.query('UPDATE resources SET version = $1, last_updated = $2, deleted = $3, cid = $4 WHERE rid = $5', [
            w.versionId,
            w.lastUpdated,
            w.deleted ? 1 : 0,
            w.deleted ? null : w.cid,
            rid,
          ]);
        } else {
          const inserted = await client.query(
            'INSERT INTO resources (type, id, version, last_updated, deleted, cid) VALUES ($1, $2, $3, $4, $5, $6) RETURNING rid',
            [w.type, w.id, w.versionId, w.lastUpdated, w.deleted ? 1 : 0, w.deleted ? null : w.cid],
          );
          rid = Number((inserted.rows[0] as { rid: number }).rid);
        }
        const version = await client.query(
          `INSERT INTO versions (rid, type, id, version, last_updated, deleted, created, method, cid, key_scope)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seq`,
          [rid, w.type, w.id, w.versionId, w.lastUpdated, w.deleted ? 1 : 0, created ? 1 : 0, w.method, w.cid, w.keyScope],
        );
        const seq = Number((version.rows[0] as { seq: number }).seq);
        if (w.anchor) {
          await client.query('INSERT INTO anchor_leaves (seq, leaf, salt, locator) VALUES ($1, $2, $3, $4)', [
            seq,
            Buffer.from(w.anchor.leaf),
            Buffer.from(w.anchor.salt),
            w.anchor.locator ?? null,
          ]);
        }
        await search.replaceRows(rid, w.deleted ? [] : w.searchRows, existing !== undefined);
        const matched = w.deleted ? deletedMatches : await this.#matching(search, w, created ? 'create' : 'update');
        await this.#events(client, matched, seq, w.lastUpdated);
        dirty.push(...matched);
        if (w.type === 'Subscription') {
          changedSubscriptions.push(w.id);
          this.subscriptions.own(seq);
        }
        out.push({
          seq,
          type: w.type,
          id: w.id,
          versionId: w.versionId,
          lastUpdated: w.lastUpdated,
          deleted: w.deleted,
          created,
          method: w.method,
          cid: w.cid,
          keyScope: w.keyScope,
        });
      }
      // Other nodes hear of it when this commits (LISTEN/NOTIFY: delivered at commit, dropped on rollback).
      await this.subscriptions.notify(client, dirty, changedSubscriptions);
      return out;
    }, true);
    for (const subscription of dirty) this.subscriptions.dirty.add(subscription);
    this.#written += records.length;
    this.#maybeAnalyze();
    return records;
  }

  /**
   * Refresh the planner's statistics each time this node's writes double (100, 200, 400, …
   * versions): autovacuum analyzes a table after a tenth of it changed and up to a minute later,
   * and until then a freshly loaded index is planned as the nearly empty one it was. Runs beside
   * requests (ANALYZE blocks neither reads nor writes), one at a time.
   */
  #maybeAnalyze(): void {
    if (this.#written < this.#analyzeAt || this.#analyzing || this.closed) return;
    this.#analyzeAt = this.#written * 2;
    this.#analyzing = this.pool
      .query(`ANALYZE ${ANALYZED_TABLES.join(', ')}`)
      .then(() => undefined, () => undefined)
      .finally(() => {
        this.#analyzing = undefined;
      });
  }

  override async close(): Promise<void> {
    await this.#analyzing;
    await this.subscriptions.unwatch();
    await super.close();
  }

  async flush(): Promise<void> {
    // Durable on commit.
  }

  /** Inside a commit: the subscriptions whose filters the current rows of `w` match (sqlite-index.ts `#matching`). */
  async #matching(search: PgSearch, w: IndexWrite, interaction: EventInteraction): Promise<string[]> {
    const out: string[] = [];
    const filters = this.#filtersByType.get(w.type);
    if (!filters) return out;
    for (const filter of filters) {
      const decision = filterDecision(filter, w, interaction);
      if (decision === true || (decision !== false && (await search.search(decision)).length > 0)) out.push(filter.subscription);
    }
    return out;
  }

  /** Inside a transaction: an event of version `seq` for each subscription, numbered in its own sequence. */
  async #events(client: pg.PoolClient, subscriptions: readonly string[], seq: number, at: number): Promise<void> {
    for (const subscription of subscriptions) {
      const { rows } = await client.query(
        `INSERT INTO subscription_state (id, events) VALUES ($1, 1)
         ON CONFLICT (id) DO UPDATE SET events = subscription_state.events + 1 RETURNING events`,
        [subscription],
      );
      const number = Number((rows[0] as { events: number }).events);
      await client.query('INSERT INTO subscription_events (subscription, number, seq, at) VALUES ($1, $2, $3, $4)', [subscription, number, seq, at]);
    }
  }

  async versionBySeq(seq: number): Promise<VersionRecord | undefined> {
    const { rows } = await this.#query(`SELECT ${VERSION_COLUMNS} FROM versions v WHERE v.seq = $1`, [seq]);
    return rows[0] && toRecord(rows[0] as VersionRow);
  }

  async search(query: IndexQuery): Promise<SearchPage> {
    const read = async (db: Queryable) => {
      const search = db === this.pool ? this.#search : new PgSearch(db);
      let hits;
      let total: number | undefined;
      try {
        hits = await search.search(query);
        total = query.wantTotal ? await search.count(query, query.totalLimit) : undefined;
      } catch (err) {
        throw dbError(err, 'VLM_INDEX_QUERY', 'index search failed');
      }
      if (hits.length === 0) return { records: [], total, keys: [] };
      // The hits' versions in one statement, matched back to the page's order.
      const { rows } = await this.#query(
        `SELECT ${VERSION_COLUMNS} FROM versions v JOIN unnest($1::text[], $2::text[], $3::int[]) AS h(type, id, version)
         ON v.type = h.type AND v.id = h.id AND v.version = h.version`,
        [hits.map((h) => h.type), hits.map((h) => h.id), hits.map((h) => h.version)],
        db,
      );
      const byKey = new Map((rows as VersionRow[]).map((row) => [`${row.type}/${row.id}/${row.version}`, toRecord(row)]));
      const records: VersionRecord[] = [];
      const keys: SearchPage['keys'] = [];
      for (const hit of hits) {
        const record = byKey.get(`${hit.type}/${hit.id}/${hit.version}`);
        if (record) {
          records.push(record);
          keys.push(hit.key);
        }
      }
      return { records, total, keys };
    };
    // Page and total from one snapshot, so no commit lands between them.
    return query.wantTotal ? this.#snapshot(read) : read(this.pool);
  }

  async snapshotVersions(query: SnapshotQuery): Promise<VersionRecord[]> {
    // A deletion carries no key scope: it is counted with the scope of the version it deleted.
    const scope = `CASE WHEN v.deleted = 1 THEN (SELECT p.key_scope FROM versions p WHERE p.type = v.type AND p.id = v.id AND p.version = v.version - 1) ELSE v.key_scope END`;
    const params: unknown[] = [];
    const bind = (value: unknown) => `$${params.push(value)}`;
    const where = [`v.type = ${bind(query.type)}`, `v.seq > ${bind(query.afterSeq)}`, `v.seq <= ${bind(query.maxSeq)}`];
    if (query.since !== undefined) where.push(`v.last_updated > ${bind(query.since)}`);
    if (!query.deletions) where.push('v.deleted = 0');
    where.push(`NOT EXISTS (SELECT 1 FROM versions w WHERE w.type = v.type AND w.id = v.id AND w.version > v.version AND w.seq <= ${bind(query.maxSeq)})`);
    if (query.keyScopes !== undefined) where.push(`${scope} = ANY(${bind(query.keyScopes)}::text[])`);
    if (query.patientScoped) where.push(`${scope} <> '${SHARED_SCOPE}'`);
    const { rows } = await this.#query(
      `SELECT ${VERSION_COLUMNS.replace('v.key_scope', `${scope} AS key_scope`)} FROM versions v WHERE ${where.join(' AND ')} ORDER BY v.seq LIMIT ${bind(query.limit)}`,
      params,
    );
    return (rows as VersionRow[]).map(toRecord);
  }

  async currentResources(query: CurrentResourcesQuery): Promise<CurrentResource[]> {
    const params: unknown[] = [query.afterRid];
    const types = query.types === undefined ? '' : `AND r.type = ANY($${params.push(query.types)}::text[])`;
    const { rows } = await this.#query(
      `SELECT r.rid, ${VERSION_COLUMNS} FROM resources r JOIN versions v ON v.type = r.type AND v.id = r.id AND v.version = r.version
       WHERE r.rid > $1 AND r.deleted = 0 ${types} ORDER BY r.rid LIMIT $${params.push(query.limit)}`,
      params,
    );
    return (rows as (VersionRow & { rid: number })[]).map((row) => ({ rid: Number(row.rid), record: toRecord(row) }));
  }

  async replaceSearchRows(entries: readonly SearchRowsReplacement[]): Promise<number> {
    return this.#transaction(async (client) => {
      const search = new PgSearch(client);
      let replaced = 0;
      for (const entry of entries) {
        const row = (await client.query('SELECT rid FROM resources WHERE type = $1 AND id = $2 AND deleted = 0', [entry.type, entry.id])).rows[0] as
          | { rid: number }
          | undefined;
        if (!row) continue;
        await search.replaceRows(Number(row.rid), entry.rows, true);
        replaced++;
      }
      return replaced;
    }, true);
  }

  async pendingLeaves(limit: number): Promise<PendingLeaf[]> {
    const { rows } = await this.#query(
      'SELECT l.seq, l.leaf, l.locator, v.cid FROM anchor_leaves l JOIN versions v ON v.seq = l.seq WHERE l.batch_id IS NULL ORDER BY l.seq LIMIT $1',
      [limit],
    );
    return (rows as { seq: number; leaf: Buffer; cid: string; locator: string | null }[]).map((r) => ({
      seq: Number(r.seq),
      leaf: bytes(r.leaf),
      cid: r.cid,
      ...(r.locator ? { locator: r.locator } : {}),
    }));
  }

  async planBatch(batch: Omit<PlannedBatch, 'id'>, proofs?: Uint8Array[][]): Promise<PlannedBatch> {
    const id = await this.#transaction(async (client) => {
      const inserted = await client.query("INSERT INTO anchor_batches (root, leaf_count, manifest_cid, status) VALUES ($1, $2, $3, 'planned') RETURNING id", [
        Buffer.from(batch.root),
        batch.leafCount,
        batch.manifestCid,
      ]);
      const id = Number((inserted.rows[0] as { id: number }).id);
      const result = await client.query(
        `UPDATE anchor_leaves l SET batch_id = $1, leaf_index = a.leaf_index, proof = a.proof
         FROM unnest($2::bigint[], $3::int[], $4::bytea[]) AS a(seq, leaf_index, proof)
         WHERE l.seq = a.seq AND l.batch_id IS NULL`,
        [id, batch.seqs, batch.seqs.map((_, i) => i), batch.seqs.map((_, i) => (proofs ? Buffer.concat(proofs[i] ?? []) : null))],
      );
      if (result.rowCount !== batch.seqs.length) throw storageError('VLM_ANCHOR_LEAF_TAKEN', 'conflict', 'a leaf is already in a batch');
      return id;
    });
    return { ...batch, id };
  }

  async plannedBatches(): Promise<PlannedBatch[]> {
    const { rows } = await this.#query("SELECT id FROM anchor_batches WHERE status = 'planned' ORDER BY id");
    const out: PlannedBatch[] = [];
    for (const r of rows as { id: number }[]) out.push(await this.#batch(Number(r.id)));
    return out;
  }

  /** A planned batch (it never changes once planned), the last few kept (see sqlite-index.ts `#batch`). */
  async #batch(id: number): Promise<PlannedBatch> {
    const cached = this.#batches.get(id);
    if (cached) return cached;
    const row = (await this.#query('SELECT id, root, leaf_count, manifest_cid FROM anchor_batches WHERE id = $1', [id])).rows[0] as {
      root: Buffer;
      leaf_count: number;
      manifest_cid: string;
    };
    const seqs = ((await this.#query('SELECT seq FROM anchor_leaves WHERE batch_id = $1 ORDER BY leaf_index', [id])).rows as { seq: number }[]).map((r) =>
      Number(r.seq),
    );
    const batch = { id, root: bytes(row.root), leafCount: Number(row.leaf_count), manifestCid: row.manifest_cid, seqs };
    this.#batches.set(id, batch);
    if (this.#batches.size > 16) this.#batches.delete(this.#batches.keys().next().value!);
    return batch;
  }

  async batchLeaves(batchId: number): Promise<Uint8Array[]> {
    const { rows } = await this.#query('SELECT leaf FROM anchor_leaves WHERE batch_id = $1 ORDER BY leaf_index', [batchId]);
    return (rows as { leaf: Buffer }[]).map((r) => bytes(r.leaf));
  }

  async recordAnchor(batchId: number, receipt: BatchReceipt): Promise<void> {
    await this.#query(
      `UPDATE anchor_batches SET status = 'anchored', chain_batch_id = $1, tx_hash = $2, block_number = $3, block_timestamp = $4,
       chain_id = $5, contract = $6 WHERE id = $7`,
      [receipt.chainBatchId, receipt.txHash, receipt.blockNumber, receipt.blockTimestamp, receipt.chainId, receipt.contract, batchId],
    );
  }

  async anchorOf(seq: number): Promise<AnchorRecord | undefined> {
    const { rows } = await this.#query(`${ANCHOR_SELECT} WHERE l.seq = $1`, [seq]);
    return rows[0] && this.#anchorRecord(rows[0] as AnchorRow);
  }

  async anchorsOf(seqs: readonly number[]): Promise<Map<number, AnchorRecord>> {
    const { rows } = await this.#query(`${ANCHOR_SELECT} WHERE l.seq = ANY($1::bigint[])`, [seqs]);
    const out = new Map<number, AnchorRecord>();
    for (const row of rows as AnchorRow[]) out.set(Number(row.seq), await this.#anchorRecord(row));
    return out;
  }

  async #anchorRecord(row: AnchorRow): Promise<AnchorRecord> {
    return toAnchorRecord(row, row.batch_id === null ? undefined : await this.#batch(Number(row.batch_id)));
  }

  async backlog(): Promise<number> {
    const { rows } = await this.#query(
      `SELECT COUNT(*) AS n FROM anchor_leaves l LEFT JOIN anchor_batches b ON b.id = l.batch_id
       WHERE l.batch_id IS NULL OR b.status = 'planned'`,
    );
    return Number((rows[0] as { n: number }).n);
  }

  async ping(): Promise<void> {
    await this.#query('SELECT 1');
  }
}

type Query = (sql: string, params: unknown[]) => Promise<pg.QueryResult>;

/** Export jobs (table `export_jobs`), as sqlite-index.ts keeps them. */
class PgExportJobs implements ExportJobStore {
  readonly #query: Query;
  constructor(query: Query) {
    this.#query = query;
  }

  async create(job: ExportJobRow): Promise<void> {
    await this.#query('INSERT INTO export_jobs (id, owner, status, created_at, expires_at, spec, progress) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
      job.id,
      job.owner,
      job.status,
      job.createdAt,
      job.expiresAt ?? null,
      JSON.stringify(job.spec),
      JSON.stringify(job.progress),
    ]);
  }

  async get(id: string): Promise<ExportJobRow | undefined> {
    const { rows } = await this.#query('SELECT * FROM export_jobs WHERE id = $1', [id]);
    return rows[0] && toJob(rows[0] as ExportJobDbRow);
  }

  async update(id: string, change: Partial<Pick<ExportJobRow, 'status' | 'progress' | 'expiresAt'>>): Promise<void> {
    await this.#query(
      // A cancelled job stays cancelled (the runner may finish a part, or the job, after the cancel).
      `UPDATE export_jobs SET status = CASE WHEN status = 'cancelled' THEN status ELSE COALESCE($1::text, status) END,
       progress = COALESCE($2::text, progress), expires_at = COALESCE($3::bigint, expires_at) WHERE id = $4`,
      [change.status ?? null, change.progress === undefined ? null : JSON.stringify(change.progress), change.expiresAt ?? null, id],
    );
  }

  async list(statuses: readonly ExportJobRow['status'][], owner?: string): Promise<ExportJobRow[]> {
    const { rows } = await this.#query(
      'SELECT * FROM export_jobs WHERE status = ANY($1::text[]) AND ($2::text IS NULL OR owner = $2::text) ORDER BY created_at, id',
      [statuses, owner ?? null],
    );
    return (rows as ExportJobDbRow[]).map(toJob);
  }

  async expired(now: number): Promise<ExportJobRow[]> {
    const { rows } = await this.#query('SELECT * FROM export_jobs WHERE expires_at IS NOT NULL AND expires_at <= $1', [now]);
    return (rows as ExportJobDbRow[]).map(toJob);
  }

  async remove(id: string): Promise<void> {
    await this.#query('DELETE FROM export_jobs WHERE id = $1', [id]);
  }
}

/** The channel on which nodes tell each other of events and Subscription writes. */
const WATCH_CHANNEL = 'vellum_subscriptions';
/** NOTIFY payloads must stay below 8,000 bytes: ids are sent in chunks. */
const NOTIFY_IDS = 60;
/** How long a broken watch waits before it connects again. */
const WATCH_RETRY_MS = 1_000;

interface Watch {
  client: pg.Client | undefined;
  watcher: SubscriptionWatcher;
  closed: boolean;
  retry?: NodeJS.Timeout;
}

interface WatchMessage {
  node: string;
  events: string[];
  subscriptions: string[];
}

/** Subscription events and delivery state (tables `subscription_events`, `subscription_state`), as sqlite-index.ts keeps them. */
class PgSubscriptions implements SubscriptionStore {
  readonly #query: Query;
  readonly #transaction: <T>(work: (client: pg.PoolClient) => Promise<T>) => Promise<T>;
  readonly #setFilters: (filters: readonly EventFilter[]) => void;
  readonly #events: (client: pg.PoolClient, subscriptions: readonly string[], seq: number, at: number) => Promise<void>;

  /** Filled by the events this node writes (a hint for the dispatcher; other nodes' events are found by its sweep). */
  readonly dirty = new Set<string>();

  readonly #url: string | undefined;
  /** Who this store is, so that it ignores its own notifications. */
  readonly #node = randomUUID();
  #watch: Watch | undefined;

  constructor(
    query: Query,
    transaction: <T>(work: (client: pg.PoolClient) => Promise<T>) => Promise<T>,
    setFilters: (filters: readonly EventFilter[]) => void,
    events: (client: pg.PoolClient, subscriptions: readonly string[], seq: number, at: number) => Promise<void>,
    url: string | undefined,
  ) {
    this.#query = query;
    this.#transaction = transaction;
    this.#setFilters = setFilters;
    this.#events = events;
    this.#url = url;
  }

  /** Subscription versions up to this seq are reflected in the filters (see `syncFilters`); undefined: not watching. */
  #filtersSeq: number | undefined;
  /** This node's own Subscription versions above `#filtersSeq` (its filters follow them already). */
  readonly #ownSeqs = new Set<number>();

  /** A Subscription version this node is committing. */
  own(seq: number): void {
    if (this.#filtersSeq !== undefined) this.#ownSeqs.add(seq);
  }

  /**
   * Inside a commit, under the commit lock: the Subscriptions other nodes committed since the
   * filters were last set are read again (the watcher's `subscriptions`, awaited) before this
   * commit matches its versions — so a write made after a Subscription was created on any node is
   * an event of it, as on one node.
   */
  async syncFilters(client: pg.PoolClient): Promise<void> {
    const watcher = this.#watch?.watcher;
    if (!watcher || this.#filtersSeq === undefined) return;
    const { rows } = await client.query("SELECT id, seq FROM versions WHERE type = 'Subscription' AND seq > $1 ORDER BY seq", [this.#filtersSeq]);
    if (rows.length === 0) return;
    const foreign = (rows as { id: string; seq: number }[]).filter((r) => !this.#ownSeqs.delete(Number(r.seq))).map((r) => r.id);
    if (foreign.length) await watcher.subscriptions([...new Set(foreign)]);
    this.#filtersSeq = Number((rows[rows.length - 1] as { seq: number }).seq);
  }

  /** Inside a transaction: tell the other nodes (at commit) which subscriptions got events and which were written. */
  async notify(client: pg.PoolClient, events: readonly string[], subscriptions: readonly string[]): Promise<void> {
    const ids = [...new Set(events)];
    const written = [...new Set(subscriptions)];
    for (let i = 0; i < Math.max(ids.length, written.length); i += NOTIFY_IDS) {
      const message: WatchMessage = { node: this.#node, events: ids.slice(i, i + NOTIFY_IDS), subscriptions: written.slice(i, i + NOTIFY_IDS) };
      await client.query('SELECT pg_notify($1, $2)', [WATCH_CHANNEL, JSON.stringify(message)]);
    }
  }

  /**
   * Listen for other nodes' events and Subscription writes on a connection of its own; a broken
   * connection is opened again (after WATCH_RETRY_MS) and the watcher told to look at everything.
   */
  async watch(watcher: SubscriptionWatcher): Promise<void> {
    if (!this.#url || this.#watch) return;
    const watch: Watch = { client: undefined, watcher, closed: false };
    this.#watch = watch;
    // The filters the watcher set reflect every Subscription committed so far.
    const { rows } = await this.#query("SELECT COALESCE(MAX(seq), 0) AS seq FROM versions WHERE type = 'Subscription'", []);
    this.#filtersSeq = Number((rows[0] as { seq: number }).seq);
    const connect = async (again: boolean): Promise<void> => {
      if (watch.closed) return;
      const client = new pg.Client({ connectionString: this.#url, keepAlive: true, application_name: 'vellum subscription watch' });
      const retry = () => {
        if (watch.client !== client) return;
        watch.client = undefined;
        client.end().catch(() => undefined);
        if (!watch.closed) watch.retry = setTimeout(() => void connect(true), WATCH_RETRY_MS).unref();
      };
      client.on('error', retry);
      client.on('end', retry);
      client.on('notification', (n) => {
        let message: WatchMessage;
        try {
          message = JSON.parse(n.payload ?? '') as WatchMessage;
        } catch {
          return;
        }
        if (message.node === this.#node) return;
        for (const id of message.events) this.dirty.add(id);
        if (message.subscriptions.length) watch.watcher.subscriptions(message.subscriptions).catch(() => undefined);
        if (message.events.length) watch.watcher.events(message.events);
      });
      watch.client = client;
      try {
        await client.connect();
        await client.query(`LISTEN ${WATCH_CHANNEL}`);
        if (again) watch.watcher.resync();
      } catch {
        retry();
      }
    };
    void connect(false);
  }

  async unwatch(): Promise<void> {
    const watch = this.#watch;
    if (!watch) return;
    watch.closed = true;
    if (watch.retry) clearTimeout(watch.retry);
    const client = watch.client;
    watch.client = undefined;
    await client?.end().catch(() => undefined);
  }

  setFilters(filters: readonly EventFilter[]): void {
    this.#setFilters([...filters]);
  }

  takeDirty(): Set<string> {
    const taken = new Set(this.dirty);
    this.dirty.clear();
    return taken;
  }

  async events(subscription: string, afterNumber: number, limit: number): Promise<SubscriptionEvent[]> {
    const { rows } = await this.#query(
      'SELECT number, seq, at, notified FROM subscription_events WHERE subscription = $1 AND number > $2 ORDER BY number LIMIT $3',
      [subscription, afterNumber, limit],
    );
    return (rows as EventRow[]).map(toEvent);
  }

  async notifiedEvents(subscription: string, from: number, to: number, limit: number): Promise<SubscriptionEvent[]> {
    const { rows } = await this.#query(
      'SELECT number, seq, at, notified FROM subscription_events WHERE subscription = $1 AND notified BETWEEN $2 AND $3 ORDER BY notified LIMIT $4',
      [subscription, from, to, limit],
    );
    return (rows as EventRow[]).map(toEvent);
  }

  async eventCount(subscription: string): Promise<number> {
    const { rows } = await this.#query('SELECT events FROM subscription_state WHERE id = $1', [subscription]);
    return Number((rows[0] as { events?: number } | undefined)?.events ?? 0);
  }

  async state(subscription: string): Promise<SubscriptionState | undefined> {
    const { rows } = await this.#query('SELECT id, owner, delivered, failures, retry_at, handshake, notified FROM subscription_state WHERE id = $1', [
      subscription,
    ]);
    const row = rows[0] as
      | { id: string; owner: string | null; delivered: number; failures: number; retry_at: number; handshake: number; notified: number }
      | undefined;
    if (!row) return undefined;
    return {
      id: row.id,
      owner: row.owner === null ? undefined : JSON.parse(row.owner),
      delivered: Number(row.delivered),
      failures: Number(row.failures),
      retryAt: Number(row.retry_at),
      handshake: Number(row.handshake) === 1,
      notified: Number(row.notified),
    };
  }

  async putState(state: SubscriptionState, notified: readonly { number: number; notified: number }[] = []): Promise<void> {
    await this.#transaction(async (client) => {
      await client.query(
        `INSERT INTO subscription_state (id, owner, delivered, failures, retry_at, handshake, notified) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, delivered = excluded.delivered, failures = excluded.failures,
         retry_at = excluded.retry_at, handshake = excluded.handshake, notified = excluded.notified`,
        [state.id, state.owner === undefined ? null : JSON.stringify(state.owner), state.delivered, state.failures, state.retryAt, state.handshake ? 1 : 0, state.notified],
      );
      if (notified.length) {
        await client.query(
          `UPDATE subscription_events e SET notified = n.notified FROM unnest($2::bigint[], $3::bigint[]) AS n(number, notified)
           WHERE e.subscription = $1 AND e.number = n.number`,
          [state.id, notified.map((n) => n.number), notified.map((n) => n.notified)],
        );
      }
    });
  }

  async emit(subscriptions: readonly string[], seq: number, at: number): Promise<void> {
    if (subscriptions.length === 0) return;
    await this.#transaction(async (client) => {
      await this.#events(client, subscriptions, seq, at);
      await this.notify(client, subscriptions, []);
    });
    for (const subscription of subscriptions) this.dirty.add(subscription);
  }

  async owners(): Promise<Map<string, unknown>> {
    const { rows } = await this.#query('SELECT id, owner FROM subscription_state WHERE owner IS NOT NULL', []);
    return new Map((rows as { id: string; owner: string }[]).map((r) => [r.id, JSON.parse(r.owner) as unknown]));
  }

  async remove(subscription: string): Promise<void> {
    await this.#transaction(async (client) => {
      await client.query('DELETE FROM subscription_events WHERE subscription = $1', [subscription]);
      await client.query(
        'UPDATE subscription_state SET events = 0, delivered = 0, failures = 0, retry_at = 0, handshake = 0, notified = 0 WHERE id = $1',
        [subscription],
      );
    });
  }
}
