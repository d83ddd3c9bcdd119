/**
 * BlobStore on PostgreSQL: IPFS blocks in a `blocks(cid, bytes)` table (migration 1), keyed by
 * their CIDv1 string — the same blocks, CIDs and verification as the SQLite store
 * (sqlite/sqlite-blob-store.ts). A put's blocks go in one transaction, durable on commit.
 */
import type pg from 'pg';
import type { AbortOptions, BlobStore } from '../blob-store.ts';
import { assembleBlob, cidForBytes, cidKey } from '../cid.ts';
import { storageError } from '../errors.ts';
import { PgStore } from './pg-store.ts';

/** Blocks fetched per query while iterating `blocks()`. */
const PAGE_SIZE = 64;

const UPSERT = `INSERT INTO blocks (cid, bytes) SELECT * FROM unnest($1::text[], $2::bytea[])
  ON CONFLICT (cid) DO UPDATE SET bytes = excluded.bytes WHERE blocks.bytes IS DISTINCT FROM excluded.bytes`;

export class PgBlobStore extends PgStore implements BlobStore {
  async put(bytes: Uint8Array, options?: AbortOptions): Promise<string> {
    return (await this.putMany([bytes], options))[0]!;
  }

  /** Several blobs' blocks in one transaction; their root CIDs, in order (idempotent). */
  async putMany(blobs: readonly Uint8Array[], options?: AbortOptions): Promise<string[]> {
    this.#check(options);
    const all: { root: string; blocks: { cid: string; bytes: Uint8Array }[] }[] = [];
    for (const bytes of blobs) all.push(await cidForBytes(bytes));
    this.#check(options);
    const cids: string[] = [];
    const contents: Buffer[] = [];
    const seen = new Set<string>();
    for (const { blocks } of all) {
      for (const block of blocks) {
        if (seen.has(block.cid)) continue; // one row per CID per statement (ON CONFLICT cannot touch a row twice)
        seen.add(block.cid);
        cids.push(block.cid);
        contents.push(Buffer.from(block.bytes.buffer, block.bytes.byteOffset, block.bytes.byteLength));
      }
    }
    try {
      await this.pool.query(UPSERT, [cids, contents]);
    } catch (err) {
      throw storageError('VLM_BLOB_WRITE', 'unavailable', `cannot store ${blobs.length} blob(s)`, err);
    }
    return all.map((b) => b.root);
  }

  async get(cid: string, options?: AbortOptions): Promise<Uint8Array> {
    this.#check(options);
    return assembleBlob(cid, (c) => this.#readBlock(c), options?.signal);
  }

  async has(cid: string, options?: AbortOptions): Promise<boolean> {
    this.#check(options);
    const key = cidKey(cid);
    if (key === undefined) return false;
    const result = await this.#query('SELECT 1 FROM blocks WHERE cid = $1', [key]);
    return result.rowCount !== 0;
  }

  async *blocks(options?: AbortOptions): AsyncIterable<{ cid: string; bytes: Uint8Array }> {
    let after = '';
    for (;;) {
      this.#check(options);
      const { rows } = await this.#query('SELECT cid, bytes FROM blocks WHERE cid > $1 ORDER BY cid LIMIT $2', [after, PAGE_SIZE]);
      for (const row of rows as { cid: string; bytes: Buffer }[]) {
        after = row.cid;
        yield { cid: row.cid, bytes: new Uint8Array(row.bytes.buffer, row.bytes.byteOffset, row.bytes.byteLength) };
      }
      if (rows.length < PAGE_SIZE) return;
    }
  }

  async flush(): Promise<void> {
    // Durable on commit.
  }

  async #readBlock(cid: string): Promise<Uint8Array | undefined> {
    const { rows } = await this.#query('SELECT bytes FROM blocks WHERE cid = $1', [cid]);
    const bytes = (rows[0] as { bytes?: Buffer } | undefined)?.bytes;
    return bytes === undefined ? undefined : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  async #query(sql: string, params: unknown[]): Promise<pg.QueryResult> {
    try {
      return await this.pool.query(sql, params);
    } catch (err) {
      throw storageError('VLM_BLOB_READ', 'unavailable', 'cannot read blocks from PostgreSQL', err);
    }
  }

  #check(options: AbortOptions | undefined): void {
    if (this.closed) throw storageError('VLM_BLOB_CLOSED', 'unavailable', 'blob store is closed');
    const signal = options?.signal;
    if (signal?.aborted) throw storageError('VLM_BLOB_ABORTED', 'unavailable', 'blob store operation aborted', signal.reason);
  }
}
