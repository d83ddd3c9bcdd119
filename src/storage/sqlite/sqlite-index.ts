/**
 * The embedded index: SQLite through `node:sqlite`, WAL mode, synchronous=FULL so that a
 * committed version survives power loss. Every commit (versions, current pointers, search
 * rows) is one transaction.
 */
import { DatabaseSync, type StatementSync, type SQLInputValue } from 'node:sqlite';
import type { DataKeyStore } from '../cipher.ts';
import { storageError } from '../errors.ts';
import { SHARED_SCOPE } from '../keys.ts';
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
  VersionRecord,
} from '../index-store.ts';
import type { IndexQuery } from '../search-types.ts';
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
import { WalSync, autoCheckpointPages } from './wal-sync.ts';
import { SEARCH_DDL, SearchSql } from './search-sql.ts';

const CORE_DDL = `
CREATE TABLE IF NOT EXISTS resources (
  rid INTEGER PRIMARY KEY,
  type TEXT NOT NULL,
  id TEXT NOT NULL,
  version INTEGER NOT NULL,
  last_updated INTEGER NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0,
  cid TEXT,
  UNIQUE (type, id)
);
CREATE INDEX IF NOT EXISTS resources_type_updated ON resources (type, last_updated);
CREATE TABLE IF NOT EXISTS versions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  rid INTEGER NOT NULL REFERENCES resources (rid),
  type TEXT NOT NULL,
  id TEXT NOT NULL,
  version INTEGER NOT NULL,
  last_updated INTEGER NOT NULL,
  deleted INTEGER NOT NULL,
  created INTEGER NOT NULL,
  method TEXT NOT NULL,
  cid TEXT NOT NULL,
  key_scope TEXT NOT NULL,
  UNIQUE (type, id, version)
);
CREATE INDEX IF NOT EXISTS versions_type_seq ON versions (type, seq);
CREATE INDEX IF NOT EXISTS versions_updated ON versions (last_updated);
CREATE TABLE IF NOT EXISTS anchor_batches (
  id INTEGER PRIMARY KEY,
  root BLOB NOT NULL UNIQUE,
  leaf_count INTEGER NOT NULL,
  manifest_cid TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('planned', 'anchored')),
  chain_batch_id INTEGER,
  tx_hash TEXT,
  block_number INTEGER,
  block_timestamp INTEGER,
  chain_id INTEGER,
  contract TEXT
);
CREATE TABLE IF NOT EXISTS anchor_leaves (
  seq INTEGER PRIMARY KEY REFERENCES versions (seq),
  leaf BLOB NOT NULL,
  salt BLOB NOT NULL,
  batch_id INTEGER REFERENCES anchor_batches (id),
  leaf_index INTEGER,
  proof BLOB,
  locator TEXT
);
CREATE INDEX IF NOT EXISTS anchor_leaves_batch ON anchor_leaves (batch_id, seq);
CREATE TABLE IF NOT EXISTS data_keys (
  scope TEXT PRIMARY KEY,
  wrapped BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS export_jobs (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  spec TEXT NOT NULL,
  progress TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscription_events (
  subscription TEXT NOT NULL,
  number INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  at INTEGER NOT NULL,
  notified INTEGER,
  PRIMARY KEY (subscription, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscription_state (
  id TEXT PRIMARY KEY,
  events INTEGER NOT NULL DEFAULT 0,
  owner TEXT,
  delivered INTEGER NOT NULL DEFAULT 0,
  failures INTEGER NOT NULL DEFAULT 0,
  retry_at INTEGER NOT NULL DEFAULT 0,
  handshake INTEGER NOT NULL DEFAULT 0,
  notified INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
`;

const SCHEMA_VERSION = '1';

export class SqliteIndexStore implements IndexStore {
  readonly dataKeys: DataKeyStore;
  readonly exportJobs: ExportJobStore;
  readonly subscriptions: SubscriptionStore;
  #filtersByType = new Map<string, EventFilter[]>();
  #db: DatabaseSync;
  #statements = new Map<string, StatementSync>();
  #closed = false;
  #wal: WalSync | undefined;
  #search: SearchSql;
  #batches = new Map<number, PlannedBatch>();

  private constructor(db: DatabaseSync, wal: WalSync | undefined) {
    this.#db = db;
    this.#wal = wal;
    this.#search = new SearchSql(db);
    const stmt = (sql: string) => this.#prepare(sql);
    this.dataKeys = {
      getWrappedKey: (scope) => {
        const row = stmt('SELECT wrapped FROM data_keys WHERE scope = ?').get(scope) as { wrapped: Uint8Array } | undefined;
        return row?.wrapped;
      },
      putWrappedKeyIfAbsent: (scope, wrapped) => {
        stmt('INSERT OR IGNORE INTO data_keys (scope, wrapped) VALUES (?, ?)').run(scope, wrapped);
        return (stmt('SELECT wrapped FROM data_keys WHERE scope = ?').get(scope) as { wrapped: Uint8Array }).wrapped;
      },
      deleteWrappedKey: (scope) => {
        stmt('DELETE FROM data_keys WHERE scope = ?').run(scope);
      },
    };
    this.exportJobs = new SqliteExportJobs((sql) => {
      this.#check();
      return stmt(sql);
    });
    this.subscriptions = new SqliteSubscriptions(
      (sql) => {
        this.#check();
        return stmt(sql);
      },
      (filters) => {
        this.#filtersByType = filtersByType(filters);
      },
      (work) => {
        this.#check();
        this.#db.exec('BEGIN IMMEDIATE');
        try {
          work();
          this.#db.exec('COMMIT');
        } catch (err) {
          if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
          throw err;
        }
      },
      (subscriptions, seq, at) => this.#events(subscriptions, seq, at),
    );
  }

  /**
   * Open (creating when absent) the index database at `path` (':memory:' for tests). Commits are
   * written with synchronous=NORMAL and made durable in groups by `flush()` (see wal-sync.ts).
   */
  static open(path: string, options: { autoCheckpoint?: number } = {}): SqliteIndexStore {
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(path);
      // Checkpoints run inside the commit that passes the threshold and fsync on its thread: let the
      // WAL grow to ~64 MiB between them — or none at all here (0) when another thread checkpoints.
      db.exec(
        `PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = ${autoCheckpointPages(options.autoCheckpoint)};`,
      );
      // IMMEDIATE: the DDL's back-fill writes, and a deferred transaction that read first cannot
      // wait for the write lock (SQLITE_BUSY at once when another connection — the audit
      // converter's or the request thread's — committed meanwhile); this one waits (busy_timeout).
      db.exec('BEGIN IMMEDIATE');
      db.exec(CORE_DDL);
      db.exec(SEARCH_DDL);
      // Databases made before manifest locators existed gain the column (NULL: no locator).
      const leafColumns = db.prepare('PRAGMA table_info(anchor_leaves)').all() as { name: string }[];
      if (!leafColumns.some((c) => c.name === 'locator')) db.exec('ALTER TABLE anchor_leaves ADD COLUMN locator TEXT');
      // Databases made before notified numbers existed gain them (events delivered then: none).
      const eventColumns = db.prepare('PRAGMA table_info(subscription_events)').all() as { name: string }[];
      if (!eventColumns.some((c) => c.name === 'notified')) {
        db.exec('ALTER TABLE subscription_events ADD COLUMN notified INTEGER');
        db.exec('ALTER TABLE subscription_state ADD COLUMN notified INTEGER NOT NULL DEFAULT 0');
      }
      db.exec('CREATE INDEX IF NOT EXISTS subscription_events_notified ON subscription_events (subscription, notified) WHERE notified IS NOT NULL');
      const row = db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string } | undefined;
      if (!row) db.prepare("INSERT INTO meta (key, value) VALUES ('schema_version', ?)").run(SCHEMA_VERSION);
      else if (row.value !== SCHEMA_VERSION) {
        if (db.isTransaction) db.exec('ROLLBACK');
        throw storageError('VLM_INDEX_SCHEMA', 'fault', `index schema version ${row.value} is not ${SCHEMA_VERSION}`);
      }
      db.exec('COMMIT');
    } catch (err) {
      if ((err as { name?: string }).name === 'StorageError') throw err;
      throw storageError('VLM_INDEX_OPEN', 'unavailable', 'cannot open the index database', err);
    }
    return new SqliteIndexStore(db, path === ':memory:' ? undefined : new WalSync(path));
  }

  #prepare(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #check(): void {
    if (this.#closed) throw storageError('VLM_INDEX_CLOSED', 'unavailable', 'the index is closed');
  }

  async current(type: string, id: string): Promise<VersionRecord | undefined> {
    this.#check();
    const row = this.#prepare(
      `SELECT ${VERSION_COLUMNS} FROM resources r JOIN versions v ON v.type = r.type AND v.id = r.id AND v.version = r.version
       WHERE r.type = ? AND r.id = ?`,
    ).get(type, id) as VersionRow | undefined;
    return row && toRecord(row);
  }

  async version(type: string, id: string, versionId: number): Promise<VersionRecord | undefined> {
    this.#check();
    const row = this.#prepare(`SELECT ${VERSION_COLUMNS} FROM versions v WHERE v.type = ? AND v.id = ? AND v.version = ?`).get(
      type,
      id,
      versionId,
    ) as VersionRow | undefined;
    return row && toRecord(row);
  }

  async lastSeq(): Promise<number> {
    this.#check();
    const row = this.#prepare('SELECT COALESCE(MAX(seq), 0) AS seq FROM versions').get() as { seq: number };
    return Number(row.seq);
  }

  async history(query: HistoryQuery): Promise<Page<VersionRecord>> {
    this.#check();
    const where: string[] = [];
    const params: SQLInputValue[] = [];
    if (query.type !== undefined) {
      where.push('v.type = ?');
      params.push(query.type);
    }
    if (query.id !== undefined) {
      where.push('v.id = ?');
      params.push(query.id);
    }
    for (const excluded of query.excludeTypes ?? []) {
      where.push('v.type <> ?');
      params.push(excluded);
    }
    if (query.since !== undefined) {
      where.push('v.last_updated >= ?');
      params.push(query.since);
    }
    // One resource's history: its few versions from the (type, id, version) index, then sorted.
    // On `v.seq` itself SQLite walks the type's (type, seq) index instead — every version of the
    // type (measured: instance history 917 → 97/s from 500 to 8,000 patients); `+` stops it.
    const seq = query.id !== undefined ? '+v.seq' : 'v.seq';
    if (query.maxSeq !== undefined) {
      where.push(`${seq} <= ?`);
      params.push(query.maxSeq);
    }
    // Keyset paging (pages are newest first): after a page, older versions; before it, newer ones.
    const page: string[] = [];
    const pageParams: SQLInputValue[] = [];
    if (query.olderThan !== undefined) {
      page.push(`${seq} < ?`);
      pageParams.push(query.olderThan);
    }
    if (query.newerThan !== undefined) {
      page.push(`${seq} > ?`);
      pageParams.push(query.newerThan);
    }
    if (query.keyScope !== undefined) {
      where.push(query.withDeletions ? '(v.key_scope = ? OR v.deleted = 1)' : 'v.key_scope = ?');
      params.push(query.keyScope);
    }
    if (query.at !== undefined) {
      // Current at some point of [low, high]: written by `high`, and not superseded by `low`.
      where.push(
        `v.last_updated <= ? AND NOT EXISTS (SELECT 1 FROM versions n WHERE n.type = v.type AND n.id = v.id
         AND n.version > v.version AND n.last_updated <= ?)`,
      );
      params.push(query.at.high, query.at.low);
    }
    const clause = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const paged = [...where, ...page];
    // The page before a position: the nearest newer versions (ascending), then newest first again.
    const order = query.newerThan !== undefined ? 'ASC' : 'DESC';
    const rows = this.#prepare(
      `SELECT ${VERSION_COLUMNS} FROM versions v ${paged.length ? `WHERE ${paged.join(' AND ')}` : ''} ORDER BY ${seq} ${order} LIMIT ? OFFSET ?`,
    ).all(...params, ...pageParams, query.count, query.offset) as unknown as VersionRow[];
    if (order === 'ASC') rows.reverse();
    const total = this.#prepare(`SELECT COUNT(*) AS n FROM versions v ${clause}`).get(...params) as { n: number };
    return { records: rows.map(toRecord), total: Number(total.n) };
  }

  async commit(writes: IndexWrite[]): Promise<VersionRecord[]> {
    this.#check();
    const db = this.#db;
    const records: VersionRecord[] = [];
    db.exec('BEGIN IMMEDIATE');
    try {
      for (const w of writes) {
        const existing = this.#prepare('SELECT rid, version, deleted FROM resources WHERE type = ? AND id = ?').get(w.type, w.id) as
          | { rid: number; version: number; deleted: number }
          | undefined;
        const created = !w.deleted && (!existing || existing.deleted === 1);
        const currentVersion = existing ? Number(existing.version) : 0;
        if (currentVersion !== w.expectedVersion || w.versionId !== currentVersion + 1) {
          throw storageError(
            'VLM_INDEX_VERSION_CONFLICT',
            'conflict',
            `${w.type} version ${currentVersion} is current, the write expected ${w.expectedVersion}`,
          );
        }
        // Subscriptions: a deletion is an event for the filters the version it deletes matches (before it goes).
        const deletedMatches = w.deleted && existing && existing.deleted === 0 ? this.#matching(w, 'delete') : [];
        let rid: number;
        if (existing) {
          rid = Number(existing.rid);
          this.#prepare('UPDATE resources SET version = ?, last_updated = ?, deleted = ?, cid = ? WHERE rid = ?').run(
            w.versionId,
            w.lastUpdated,
            w.deleted ? 1 : 0,
            w.deleted ? null : w.cid,
            rid,
          );
        } else {
          const result = this.#prepare(
            'INSERT INTO resources (type, id, version, last_updated, deleted, cid) VALUES (?, ?, ?, ?, ?, ?)',
          ).run(w.type, w.id, w.versionId, w.lastUpdated, w.deleted ? 1 : 0, w.deleted ? null : w.cid);
          rid = Number(result.lastInsertRowid);
        }
        const inserted = this.#prepare(
          `INSERT INTO versions (rid, type, id, version, last_updated, deleted, created, method, cid, key_scope)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(rid, w.type, w.id, w.versionId, w.lastUpdated, w.deleted ? 1 : 0, created ? 1 : 0, w.method, w.cid, w.keyScope);
        if (w.anchor) {
          this.#prepare('INSERT INTO anchor_leaves (seq, leaf, salt, locator) VALUES (?, ?, ?, ?)').run(
            Number(inserted.lastInsertRowid),
            w.anchor.leaf,
            w.anchor.salt,
            w.anchor.locator ?? null,
          );
        }
        const seq = Number(inserted.lastInsertRowid);
        if (existing) this.#search.deleteRows(rid);
        if (!w.deleted) this.#search.insertRows(rid, w.searchRows);
        this.#events(w.deleted ? deletedMatches : this.#matching(w, created ? 'create' : 'update'), seq, w.lastUpdated);
        records.push({
          seq: Number(inserted.lastInsertRowid),
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
      db.exec('COMMIT');
    } catch (err) {
      if (db.isTransaction) db.exec('ROLLBACK');
      if ((err as { name?: string }).name === 'StorageError') throw err;
      throw storageError('VLM_INDEX_COMMIT', 'fault', 'index commit failed', err);
    }
    return records;
  }

  async flush(): Promise<void> {
    await this.#wal?.sync();
  }

  /**
   * Inside a commit: the subscriptions whose filters the current rows of `w` match (for a
   * deletion: the rows of the version it deletes, still in place). What the rows just written
   * decide on their own (tokens, references, ids: `decideByRows`) costs no query.
   */
  #matching(w: IndexWrite, interaction: EventInteraction): string[] {
    const out: string[] = [];
    const filters = this.#filtersByType.get(w.type);
    if (!filters) return out;
    for (const filter of filters) {
      const decision = filterDecision(filter, w, interaction);
      if (decision === true || (decision !== false && this.#search.search(decision).length > 0)) out.push(filter.subscription);
    }
    return out;
  }

  /** Inside a commit: an event of version `seq` for each subscription, numbered in its own sequence. */
  #events(subscriptions: readonly string[], seq: number, at: number): void {
    for (const subscription of subscriptions) {
      const { events } = this.#prepare(
        'INSERT INTO subscription_state (id, events) VALUES (?, 1) ON CONFLICT (id) DO UPDATE SET events = events + 1 RETURNING events',
      ).get(subscription) as { events: number };
      this.#prepare('INSERT INTO subscription_events (subscription, number, seq, at) VALUES (?, ?, ?, ?)').run(subscription, events, seq, at);
      (this.subscriptions as SqliteSubscriptions).dirty.add(subscription);
    }
  }

  async versionBySeq(seq: number): Promise<VersionRecord | undefined> {
    this.#check();
    const row = this.#prepare(`SELECT ${VERSION_COLUMNS} FROM versions v WHERE v.seq = ?`).get(seq) as VersionRow | undefined;
    return row && toRecord(row);
  }

  /**
   * Copy the write-ahead log into the database without blocking writers (`PASSIVE`); for the thread
   * that checkpoints on behalf of connections opened with `autoCheckpoint: 0`.
   */
  checkpoint(): void {
    this.#check();
    this.#db.exec('PRAGMA wal_checkpoint(PASSIVE)');
  }

  async search(query: IndexQuery): Promise<SearchPage> {
    this.#check();
    // SearchSql raises VLM_INDEX_QUERY_TOO_COMPLEX ('invalid': 400) for a search beyond SQLite's
    // limits on one statement; any other error (busy, corrupt, schema) propagates as it was.
    // Page and total are read in one synchronous step, so no commit lands between them.
    const hits = this.#search.search(query);
    const total = query.wantTotal ? this.#search.count(query, query.totalLimit) : undefined;
    const records: VersionRecord[] = [];
    const keys: SearchPage['keys'] = [];
    for (const hit of hits) {
      const record = await this.version(hit.type, hit.id, Number(hit.version));
      if (record) {
        records.push(record);
        keys.push(hit.key);
      }
    }
    return { records, total, keys };
  }

  async snapshotVersions(query: SnapshotQuery): Promise<VersionRecord[]> {
    this.#check();
    // A deletion carries no key scope: it is counted with the scope of the version it deleted.
    const scope = `CASE WHEN v.deleted = 1 THEN (SELECT p.key_scope FROM versions p WHERE p.type = v.type AND p.id = v.id AND p.version = v.version - 1) ELSE v.key_scope END`;
    const scopes = query.keyScopes === undefined ? null : JSON.stringify(query.keyScopes);
    const rows = this.#prepare(
      `SELECT ${VERSION_COLUMNS.replace('v.key_scope', `${scope} AS key_scope`)} FROM versions v
       WHERE v.type = ? AND v.seq > ? AND v.seq <= ?
         AND (? IS NULL OR v.last_updated > ?)
         AND (? = 1 OR v.deleted = 0)
         AND NOT EXISTS (SELECT 1 FROM versions w WHERE w.type = v.type AND w.id = v.id AND w.version > v.version AND w.seq <= ?)
         AND (? IS NULL OR ${scope} IN (SELECT j.value FROM json_each(?) j))
         AND (? = 0 OR ${scope} <> '${SHARED_SCOPE}')
       ORDER BY v.seq LIMIT ?`,
    ).all(
      query.type,
      query.afterSeq,
      query.maxSeq,
      query.since ?? null,
      query.since ?? null,
      query.deletions ? 1 : 0,
      query.maxSeq,
      scopes,
      scopes,
      query.patientScoped ? 1 : 0,
      query.limit,
    ) as unknown as VersionRow[];
    return rows.map(toRecord);
  }

  async currentResources(query: CurrentResourcesQuery): Promise<CurrentResource[]> {
    this.#check();
    // Types as one bound JSON array, so any list is one statement (the rid primary key drives).
    const types = query.types === undefined ? null : JSON.stringify(query.types);
    const rows = this.#prepare(
      `SELECT r.rid, ${VERSION_COLUMNS} FROM resources r JOIN versions v ON v.type = r.type AND v.id = r.id AND v.version = r.version
       WHERE r.rid > ? AND r.deleted = 0 AND (? IS NULL OR r.type IN (SELECT j.value FROM json_each(?) j))
       ORDER BY r.rid LIMIT ?`,
    ).all(query.afterRid, types, types, query.limit) as unknown as (VersionRow & { rid: number })[];
    return rows.map((row) => ({ rid: Number(row.rid), record: toRecord(row) }));
  }

  async replaceSearchRows(entries: readonly SearchRowsReplacement[]): Promise<number> {
    this.#check();
    const db = this.#db;
    let replaced = 0;
    db.exec('BEGIN IMMEDIATE');
    try {
      for (const entry of entries) {
        const row = this.#prepare('SELECT rid FROM resources WHERE type = ? AND id = ? AND deleted = 0').get(entry.type, entry.id) as
          | { rid: number }
          | undefined;
        if (!row) continue;
        const rid = Number(row.rid);
        this.#search.deleteRows(rid);
        this.#search.insertRows(rid, entry.rows);
        replaced++;
      }
      db.exec('COMMIT');
    } catch (err) {
      if (db.isTransaction) db.exec('ROLLBACK');
      throw storageError('VLM_INDEX_COMMIT', 'fault', 'search rows replacement failed', err);
    }
    return replaced;
  }

  async pendingLeaves(limit: number): Promise<PendingLeaf[]> {
    this.#check();
    const rows = this.#prepare(
      'SELECT l.seq, l.leaf, l.locator, v.cid FROM anchor_leaves l JOIN versions v ON v.seq = l.seq WHERE l.batch_id IS NULL ORDER BY l.seq LIMIT ?',
    ).all(limit) as { seq: number; leaf: Uint8Array; cid: string; locator: string | null }[];
    return rows.map((r) => ({ seq: Number(r.seq), leaf: r.leaf, cid: r.cid, ...(r.locator ? { locator: r.locator } : {}) }));
  }

  async planBatch(batch: Omit<PlannedBatch, 'id'>, proofs?: Uint8Array[][]): Promise<PlannedBatch> {
    this.#check();
    const db = this.#db;
    db.exec('BEGIN IMMEDIATE');
    try {
      const inserted = this.#prepare(
        "INSERT INTO anchor_batches (root, leaf_count, manifest_cid, status) VALUES (?, ?, ?, 'planned')",
      ).run(batch.root, batch.leafCount, batch.manifestCid);
      const id = Number(inserted.lastInsertRowid);
      const assign = this.#prepare('UPDATE anchor_leaves SET batch_id = ?, leaf_index = ?, proof = ? WHERE seq = ? AND batch_id IS NULL');
      batch.seqs.forEach((seq, i) => {
        const result = assign.run(id, i, proofs ? Buffer.concat(proofs[i] ?? []) : null, seq);
        if (Number(result.changes) !== 1) throw storageError('VLM_ANCHOR_LEAF_TAKEN', 'conflict', 'a leaf is already in a batch');
      });
      db.exec('COMMIT');
      return { ...batch, id };
    } catch (err) {
      if (db.isTransaction) db.exec('ROLLBACK');
      throw err;
    }
  }

  async plannedBatches(): Promise<PlannedBatch[]> {
    this.#check();
    const rows = this.#prepare("SELECT id FROM anchor_batches WHERE status = 'planned' ORDER BY id").all() as { id: number }[];
    return rows.map((r) => this.#batch(Number(r.id)));
  }

  /**
   * A planned batch (root, size, manifest and leaf order never change once planned), the last few
   * kept: bulk readers (an export's proofs, a $verify sweep) ask for the same batch's leaves one
   * after another, and its 1,000 seqs cost more to read than the leaf itself.
   */
  #batch(id: number): PlannedBatch {
    const cached = this.#batches.get(id);
    if (cached) return cached;
    const batch = this.#readBatch(id);
    this.#batches.set(id, batch);
    if (this.#batches.size > 16) this.#batches.delete(this.#batches.keys().next().value!);
    return batch;
  }

  #readBatch(id: number): PlannedBatch {
    const row = this.#prepare('SELECT id, root, leaf_count, manifest_cid FROM anchor_batches WHERE id = ?').get(id) as {
      id: number;
      root: Uint8Array;
      leaf_count: number;
      manifest_cid: string;
    };
    const seqs = (this.#prepare('SELECT seq FROM anchor_leaves WHERE batch_id = ? ORDER BY leaf_index').all(id) as { seq: number }[]).map(
      (r) => Number(r.seq),
    );
    return { id, root: row.root, leafCount: Number(row.leaf_count), manifestCid: row.manifest_cid, seqs };
  }

  async batchLeaves(batchId: number): Promise<Uint8Array[]> {
    this.#check();
    const rows = this.#prepare('SELECT leaf FROM anchor_leaves WHERE batch_id = ? ORDER BY leaf_index').all(batchId) as { leaf: Uint8Array }[];
    return rows.map((r) => r.leaf);
  }

  async recordAnchor(batchId: number, receipt: BatchReceipt): Promise<void> {
    this.#check();
    this.#prepare(
      `UPDATE anchor_batches SET status = 'anchored', chain_batch_id = ?, tx_hash = ?, block_number = ?, block_timestamp = ?,
       chain_id = ?, contract = ? WHERE id = ?`,
    ).run(receipt.chainBatchId, receipt.txHash, receipt.blockNumber, receipt.blockTimestamp, receipt.chainId, receipt.contract, batchId);
  }

  async anchorOf(seq: number): Promise<AnchorRecord | undefined> {
    this.#check();
    const row = this.#prepare(`${ANCHOR_SELECT} WHERE l.seq = ?`).get(seq) as AnchorRow | undefined;
    return row && this.#anchorRecord(row);
  }

  async anchorsOf(seqs: readonly number[]): Promise<Map<number, AnchorRecord>> {
    this.#check();
    const rows = this.#prepare(`${ANCHOR_SELECT} WHERE l.seq IN (SELECT j.value FROM json_each(?) j)`).all(JSON.stringify(seqs)) as unknown as AnchorRow[];
    return new Map(rows.map((row) => [Number(row.seq), this.#anchorRecord(row)]));
  }

  #anchorRecord(row: AnchorRow): AnchorRecord {
    return toAnchorRecord(row, row.batch_id === null ? undefined : this.#batch(Number(row.batch_id)));
  }

  async backlog(): Promise<number> {
    this.#check();
    const row = this.#prepare(
      `SELECT COUNT(*) AS n FROM anchor_leaves l LEFT JOIN anchor_batches b ON b.id = l.batch_id
       WHERE l.batch_id IS NULL OR b.status = 'planned'`,
    ).get() as { n: number };
    return Number(row.n);
  }

  async ping(): Promise<void> {
    this.#check();
    this.#prepare('SELECT 1').get();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#wal?.sync();
    await this.#wal?.close();
    this.#statements.clear();
    this.#db.close();
  }
}

/** Export jobs in the index database (table `export_jobs`). */
class SqliteExportJobs implements ExportJobStore {
  readonly #stmt: (sql: string) => StatementSync;
  constructor(stmt: (sql: string) => StatementSync) {
    this.#stmt = stmt;
  }

  async create(job: ExportJobRow): Promise<void> {
    this.#stmt('INSERT INTO export_jobs (id, owner, status, created_at, expires_at, spec, progress) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
      job.id,
      job.owner,
      job.status,
      job.createdAt,
      job.expiresAt ?? null,
      JSON.stringify(job.spec),
      JSON.stringify(job.progress),
    );
  }

  async get(id: string): Promise<ExportJobRow | undefined> {
    const row = this.#stmt('SELECT * FROM export_jobs WHERE id = ?').get(id) as ExportJobDbRow | undefined;
    return row && toJob(row);
  }

  async update(id: string, change: Partial<Pick<ExportJobRow, 'status' | 'progress' | 'expiresAt'>>): Promise<void> {
    this.#stmt(
      // A cancelled job stays cancelled (the runner may finish a part, or the job, after the cancel).
      `UPDATE export_jobs SET status = CASE WHEN status = 'cancelled' THEN status ELSE COALESCE(?, status) END, progress = COALESCE(?, progress), expires_at = COALESCE(?, expires_at) WHERE id = ?`,
    ).run(change.status ?? null, change.progress === undefined ? null : JSON.stringify(change.progress), change.expiresAt ?? null, id);
  }

  async list(statuses: readonly ExportJobRow['status'][], owner?: string): Promise<ExportJobRow[]> {
    const rows = this.#stmt(
      'SELECT * FROM export_jobs WHERE status IN (SELECT j.value FROM json_each(?) j) AND (? IS NULL OR owner = ?) ORDER BY created_at, id',
    ).all(JSON.stringify(statuses), owner ?? null, owner ?? null) as unknown as ExportJobDbRow[];
    return rows.map(toJob);
  }

  async expired(now: number): Promise<ExportJobRow[]> {
    const rows = this.#stmt('SELECT * FROM export_jobs WHERE expires_at IS NOT NULL AND expires_at <= ?').all(now) as unknown as ExportJobDbRow[];
    return rows.map(toJob);
  }

  async remove(id: string): Promise<void> {
    this.#stmt('DELETE FROM export_jobs WHERE id = ?').run(id);
  }
}

/** Subscription events and delivery state (tables `subscription_events`, `subscription_state`). */
class SqliteSubscriptions implements SubscriptionStore {
  readonly #stmt: (sql: string) => StatementSync;
  readonly #setFilters: (filters: readonly EventFilter[]) => void;
  readonly #transaction: (work: () => void) => void;
  readonly #events: (subscriptions: readonly string[], seq: number, at: number) => void;
  constructor(
    stmt: (sql: string) => StatementSync,
    setFilters: (filters: readonly EventFilter[]) => void,
    transaction: (work: () => void) => void,
    events: (subscriptions: readonly string[], seq: number, at: number) => void,
  ) {
    this.#stmt = stmt;
    this.#setFilters = setFilters;
    this.#transaction = transaction;
    this.#events = events;
  }

  setFilters(filters: readonly EventFilter[]): void {
    this.#setFilters([...filters]);
  }

  /** Filled by every event written (inside commits and `emit`); a rolled-back one leaves a harmless extra. */
  readonly dirty = new Set<string>();

  takeDirty(): Set<string> {
    const taken = new Set(this.dirty);
    this.dirty.clear();
    return taken;
  }

  async events(subscription: string, afterNumber: number, limit: number): Promise<SubscriptionEvent[]> {
    const rows = this.#stmt('SELECT number, seq, at, notified FROM subscription_events WHERE subscription = ? AND number > ? ORDER BY number LIMIT ?').all(
      subscription,
      afterNumber,
      limit,
    ) as unknown as EventRow[];
    return rows.map(toEvent);
  }

  async notifiedEvents(subscription: string, from: number, to: number, limit: number): Promise<SubscriptionEvent[]> {
    const rows = this.#stmt(
      'SELECT number, seq, at, notified FROM subscription_events WHERE subscription = ? AND notified BETWEEN ? AND ? ORDER BY notified LIMIT ?',
    ).all(subscription, from, to, limit) as unknown as EventRow[];
    return rows.map(toEvent);
  }

  async eventCount(subscription: string): Promise<number> {
    const row = this.#stmt('SELECT events FROM subscription_state WHERE id = ?').get(subscription) as { events: number } | undefined;
    return Number(row?.events ?? 0);
  }

  async state(subscription: string): Promise<SubscriptionState | undefined> {
    const row = this.#stmt('SELECT id, owner, delivered, failures, retry_at, handshake, notified FROM subscription_state WHERE id = ?').get(subscription) as
      | { id: string; owner: string | null; delivered: number; failures: number; retry_at: number; handshake: number; notified: number }
      | undefined;
    if (!row) return undefined;
    return {
      id: row.id,
      owner: row.owner === null ? undefined : JSON.parse(row.owner),
      delivered: Number(row.delivered),
      failures: Number(row.failures),
      retryAt: Number(row.retry_at),
      handshake: row.handshake === 1,
      notified: Number(row.notified),
    };
  }

  async putState(state: SubscriptionState, notified: readonly { number: number; notified: number }[] = []): Promise<void> {
    this.#transaction(() => {
      this.#stmt(
        `INSERT INTO subscription_state (id, owner, delivered, failures, retry_at, handshake, notified) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, delivered = excluded.delivered, failures = excluded.failures,
         retry_at = excluded.retry_at, handshake = excluded.handshake, notified = excluded.notified`,
      ).run(state.id, state.owner === undefined ? null : JSON.stringify(state.owner), state.delivered, state.failures, state.retryAt, state.handshake ? 1 : 0, state.notified);
      // Runs of events numbered alike (none passed over between them: notified = number − offset) in one statement each.
      for (let i = 0; i < notified.length; ) {
        const offset = notified[i]!.number - notified[i]!.notified;
        let j = i + 1;
        while (j < notified.length && notified[j]!.number === notified[j - 1]!.number + 1 && notified[j]!.number - notified[j]!.notified === offset) j++;
        this.#stmt('UPDATE subscription_events SET notified = number - ? WHERE subscription = ? AND number BETWEEN ? AND ?').run(
          offset,
          state.id,
          notified[i]!.number,
          notified[j - 1]!.number,
        );
        i = j;
      }
    });
  }

  async emit(subscriptions: readonly string[], seq: number, at: number): Promise<void> {
    if (subscriptions.length) this.#transaction(() => this.#events(subscriptions, seq, at));
  }

  async owners(): Promise<Map<string, unknown>> {
    const rows = this.#stmt('SELECT id, owner FROM subscription_state WHERE owner IS NOT NULL').all() as { id: string; owner: string }[];
    return new Map(rows.map((r) => [r.id, JSON.parse(r.owner) as unknown]));
  }

  async remove(subscription: string): Promise<void> {
    this.#transaction(() => {
      this.#stmt('DELETE FROM subscription_events WHERE subscription = ?').run(subscription);
      this.#stmt(
        'UPDATE subscription_state SET events = 0, delivered = 0, failures = 0, retry_at = 0, handshake = 0, notified = 0 WHERE id = ?',
      ).run(subscription);
    });
  }
}
