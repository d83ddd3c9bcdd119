/**
 * Which engines hold the index and the blocks: the embedded SQLite file (default, zero services),
 * or PostgreSQL (`VELLUM_DATABASE_URL`) — and the blocks in Kubo/IPFS Cluster when
 * `VELLUM_IPFS_URL` is set, else beside the index. Every process that opens the stores (the
 * server, its audit and export threads, the CLIs) opens them here.
 */
import type pg from 'pg';
import type { BlobStore } from './blob-store.ts';
import type { IndexStore } from './index-store.ts';
import { KuboBlobStore } from './kubo-blob-store.ts';
import { migrate, openPostgres } from './postgres/database.ts';
import { PgBlobStore } from './postgres/pg-blob-store.ts';
import { PgIndexStore } from './postgres/pg-index.ts';
import { SqliteBlobStore } from './sqlite/sqlite-blob-store.ts';
import { SqliteIndexStore } from './sqlite/sqlite-index.ts';

export interface StorageLocation {
  /** The embedded SQLite file of index and blocks (used without `databaseUrl`). */
  databasePath: string;
  /** postgres://… : index (and blocks, without `ipfsUrl`) on PostgreSQL. */
  databaseUrl?: string;
  /** Most connections in this process's PostgreSQL pool. */
  databasePoolMax?: number;
  /** Kubo / IPFS Cluster RPC API for blocks. */
  ipfsUrl?: string;
}

export interface OpenedStorage {
  index: IndexStore;
  blobs: BlobStore;
  /** The PostgreSQL pool, when the index is there (other stores may share it; the index ends it on close). */
  pool?: pg.Pool;
  /** Copy the SQLite write-ahead log into the file (nothing to do on PostgreSQL). */
  checkpoint(): void;
}

/**
 * Open the index and block store. On PostgreSQL the schema migrations not yet applied are applied
 * first (under an advisory lock: safe with several nodes starting at once). SQLite options:
 * `autoCheckpoint` (0: another thread checkpoints) and `groupCommit` for the block store.
 */
export async function openStorage(location: StorageLocation, options: { autoCheckpoint?: number; groupCommit?: boolean } = {}): Promise<OpenedStorage> {
  if (location.databaseUrl) {
    const pool = await openPostgres({ url: location.databaseUrl, ...(location.databasePoolMax ? { maxConnections: location.databasePoolMax } : {}) });
    try {
      await migrate(pool);
      const index = new PgIndexStore(pool, { ownsPool: true });
      const blobs: BlobStore = location.ipfsUrl ? await KuboBlobStore.open({ url: location.ipfsUrl }) : new PgBlobStore(pool);
      return { index, blobs, pool, checkpoint: () => undefined };
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err;
    }
  }
  const checkpointOptions = options.autoCheckpoint !== undefined ? { autoCheckpoint: options.autoCheckpoint } : {};
  const index = SqliteIndexStore.open(location.databasePath, checkpointOptions);
  // Blocks and index share one SQLite file (one WAL): a block always reaches disk before the index
  // row that points at it, and one group fsync makes both durable.
  const blobs: BlobStore = location.ipfsUrl
    ? await KuboBlobStore.open({ url: location.ipfsUrl })
    : SqliteBlobStore.open(location.databasePath, { ...(options.groupCommit ? { groupCommit: true } : {}), ...checkpointOptions });
  return { index, blobs, checkpoint: () => index.checkpoint() };
}
