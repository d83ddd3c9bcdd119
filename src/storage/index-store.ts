/**
 * The index: which versions exist, where their envelopes are (CIDs), and the search rows of
 * every current version. It is a cache of what the blob store and (later) the chain hold.
 */
import type { DataKeyStore } from './cipher.ts';
import type { IndexQuery, SearchRow } from './search-types.ts';

export type WriteMethod = 'create' | 'update' | 'patch' | 'delete';

/** One stored version of a resource. Times are milliseconds since the epoch. */
export interface VersionRecord {
  seq: number;
  type: string;
  id: string;
  versionId: number;
  lastUpdated: number;
  deleted: boolean;
  method: WriteMethod;
  cid: string;
  keyScope: string;
}

/** One version to commit. `expectedVersion` is the current version the writer saw (0 = none). */
export interface IndexWrite {
  type: string;
  id: string;
  versionId: number;
  expectedVersion: number;
  lastUpdated: number;
  deleted: boolean;
  method: WriteMethod;
  cid: string;
  keyScope: string;
  searchRows: SearchRow[];
}

export interface HistoryQuery {
  type?: string;
  id?: string;
  /** Only versions with lastUpdated >= since. */
  since?: number;
  /** Only versions that were current at some point in [low, high] (ms). */
  at?: { low: number; high: number };
  /** Snapshot: only versions with seq <= this (keeps pages stable while others write). */
  maxSeq?: number;
  count: number;
  offset: number;
}

export interface Page<T> {
  records: T[];
  total: number | undefined;
}

export interface IndexStore {
  readonly dataKeys: DataKeyStore;
  current(type: string, id: string): Promise<VersionRecord | undefined>;
  version(type: string, id: string, versionId: number): Promise<VersionRecord | undefined>;
  /** Versions newest first, with the total when it is cheap. */
  history(query: HistoryQuery): Promise<Page<VersionRecord>>;
  /** Highest committed seq (the snapshot marker for history paging). */
  lastSeq(): Promise<number>;
  /**
   * Commit versions atomically (all or none). Raises StorageError `VLM_INDEX_VERSION_CONFLICT`
   * (conflict) when a resource's current version is not the expected one.
   */
  commit(writes: IndexWrite[]): Promise<VersionRecord[]>;
  /**
   * Resolve once every commit made so far is durable. Backends whose commits are durable on
   * return resolve at once; the embedded SQLite index batches the fsyncs of concurrent writers.
   */
  flush(): Promise<void>;
  /** Current, non-deleted resources matching the query. */
  search(query: IndexQuery): Promise<Page<VersionRecord>>;
  /** Raises StorageError (unavailable) when the index cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
