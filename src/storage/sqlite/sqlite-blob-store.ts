/**
 * The embedded default BlobStore: IPFS blocks in one SQLite file (node:sqlite), keyed by their
 * CIDv1 string. WAL journal with `synchronous=FULL`, so a put is on disk when it returns — or,
 * opened with `groupCommit`, `synchronous=NORMAL` with durability from `flush()` (see wal-sync.ts).
 * The server opens it on the index's own database file, so a block always reaches the WAL before
 * any index row that points at it.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type { AbortOptions, BlobStore } from '../blob-store.ts';
import { assembleBlob, cidForBytes, cidKey } from '../cid.ts';
import { storageError } from '../errors.ts';
import { WalSync, autoCheckpointPages } from './wal-sync.ts';

/** Blocks fetched per query while iterating `blocks()` (each block is at most ~256 KiB). */
const PAGE_SIZE = 64;

/** BlobStore over a SQLite file with a single `blocks(cid, bytes)` table. */
export class SqliteBlobStore implements BlobStore {
  readonly #db: DatabaseSync;
  readonly #put: StatementSync;
  readonly #get: StatementSync;
  readonly #has: StatementSync;
  readonly #page: StatementSync;
  #closed = false;
  readonly #wal: WalSync | undefined;

  private constructor(db: DatabaseSync, wal: WalSync | undefined, autoCheckpoint: number) {
    this.#db = db;
    this.#wal = wal;
    // The blocks share the index's file and log: the same checkpoint threshold as its connections
    // (SQLite's default, 1,000 pages, made nearly every put on the request thread a checkpoint).
    db.exec(`
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = ${wal ? 'NORMAL' : 'FULL'};
      PRAGMA busy_timeout = 5000;
      PRAGMA wal_autocheckpoint = ${autoCheckpoint};
      CREATE TABLE IF NOT EXISTS blocks (
        cid   TEXT PRIMARY KEY NOT NULL,
        bytes BLOB NOT NULL
      ) STRICT;
    `);
    // Same CID → same bytes, so a conflict is normally a no-op; if the stored copy differs
    // (damaged on disk), re-putting the content repairs it.
    this.#put = db.prepare(
      `INSERT INTO blocks (cid, bytes) VALUES (?, ?)
       ON CONFLICT (cid) DO UPDATE SET bytes = excluded.bytes WHERE blocks.bytes IS NOT excluded.bytes`,
    );
    this.#get = db.prepare('SELECT bytes FROM blocks WHERE cid = ?');
    this.#has = db.prepare('SELECT 1 AS present FROM blocks WHERE cid = ?');
    this.#page = db.prepare('SELECT cid, bytes FROM blocks WHERE cid > ? ORDER BY cid LIMIT ?');
  }

  /**
   * Open (creating if needed, with its parent directory) the block database at `path`. With
   * `groupCommit`, puts are durable once `flush()` resolves rather than on return.
   */
  static open(path: string, options: { groupCommit?: boolean; autoCheckpoint?: number } = {}): SqliteBlobStore {
    let db: DatabaseSync | undefined;
    try {
      if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
      db = new DatabaseSync(path);
      return new SqliteBlobStore(db, options.groupCommit && path !== ':memory:' ? new WalSync(path) : undefined, autoCheckpointPages(options.autoCheckpoint));
    } catch (err) {
      try {
        db?.close();
      } catch {
        // already failing; keep the original error
      }
      throw storageError('VLM_BLOB_OPEN', 'unavailable', `cannot open blob database ${path}`, err);
    }
  }

  /** Store all blocks of `bytes` in one durable transaction and return the root CID (idempotent). */
  async put(bytes: Uint8Array, options?: AbortOptions): Promise<string> {
    this.#check(options);
    const { root, blocks } = await cidForBytes(bytes);
    this.#check(options);
    const db = this.#db;
    try {
      db.exec('BEGIN IMMEDIATE');
      try {
        for (const block of blocks) this.#put.run(block.cid, block.bytes);
        db.exec('COMMIT');
      } catch (err) {
        if (db.isTransaction) db.exec('ROLLBACK');
        throw err;
      }
    } catch (err) {
      throw storageError('VLM_BLOB_WRITE', 'unavailable', `cannot store blob ${root}`, err);
    }
    return root;
  }

  /**
   * Store several blobs in ONE transaction (one WAL commit instead of one per blob) and return
   * their root CIDs, in order (idempotent, like `put`).
   */
  async putMany(blobs: readonly Uint8Array[], options?: AbortOptions): Promise<string[]> {
    this.#check(options);
    const all: { root: string; blocks: { cid: string; bytes: Uint8Array }[] }[] = [];
    for (const bytes of blobs) all.push(await cidForBytes(bytes));
    this.#check(options);
    const db = this.#db;
    try {
      db.exec('BEGIN IMMEDIATE');
      try {
        for (const { blocks } of all) for (const block of blocks) this.#put.run(block.cid, block.bytes);
        db.exec('COMMIT');
      } catch (err) {
        if (db.isTransaction) db.exec('ROLLBACK');
        throw err;
      }
    } catch (err) {
      throw storageError('VLM_BLOB_WRITE', 'unavailable', `cannot store ${blobs.length} blobs`, err);
    }
    return all.map((b) => b.root);
  }

  /** Read a whole blob, verifying every block; raises `VLM_BLOB_NOT_FOUND` (not-found) / `VLM_BLOB_CORRUPT` (fault). */
  async get(cid: string, options?: AbortOptions): Promise<Uint8Array> {
    this.#check(options);
    return assembleBlob(cid, (c) => this.#readBlock(c), options?.signal);
  }

  /** True when the blob's root block is stored (`false` for strings that are not CIDs). */
  async has(cid: string, options?: AbortOptions): Promise<boolean> {
    this.#check(options);
    const key = cidKey(cid);
    if (key === undefined) return false;
    return this.#has.get(key) !== undefined;
  }

  /** Every stored block in CID order, read page by page (no cursor is held between pages). */
  async *blocks(options?: AbortOptions): AsyncIterable<{ cid: string; bytes: Uint8Array }> {
    let after = '';
    for (;;) {
      this.#check(options);
      const rows = this.#page.all(after, PAGE_SIZE);
      for (const row of rows) {
        const cid = row.cid;
        const bytes = row.bytes;
        if (typeof cid !== 'string' || !(bytes instanceof Uint8Array)) {
          throw storageError('VLM_BLOB_CORRUPT', 'fault', 'malformed row in blocks table');
        }
        after = cid;
        yield { cid, bytes };
      }
      if (rows.length < PAGE_SIZE) return;
    }
  }

  /** Close the database (idempotent); later calls raise `VLM_BLOB_CLOSED`. */
  async flush(): Promise<void> {
    await this.#wal?.sync();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#wal?.sync();
    await this.#wal?.close();
    this.#db.close();
  }

  #readBlock(cid: string): Uint8Array | undefined {
    const row = this.#get.get(cid);
    if (row === undefined) return undefined;
    const bytes = row.bytes;
    if (!(bytes instanceof Uint8Array)) {
      throw storageError('VLM_BLOB_CORRUPT', 'fault', `block ${cid} is not stored as a BLOB`);
    }
    return bytes;
  }

  #check(options: AbortOptions | undefined): void {
    if (this.#closed) throw storageError('VLM_BLOB_CLOSED', 'unavailable', 'blob store is closed');
    const signal = options?.signal;
    if (signal?.aborted) throw storageError('VLM_BLOB_ABORTED', 'unavailable', 'blob store operation aborted', signal.reason);
  }
}
