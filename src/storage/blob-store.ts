/**
 * Content-addressed block storage. Every blob is stored under its IPFS CID
 * (CIDv1, raw codec / dag-pb root, sha2-256), exactly as `ipfs add --cid-version=1 --raw-leaves`
 * with Kubo's 256 KiB chunker would address it, so the blocks can be published to Kubo as-is.
 */

export interface AbortOptions {
  signal?: AbortSignal;
}

export interface BlobStore {
  /**
   * Store `bytes` (chunked into IPFS blocks when over 256 KiB) and return the root CID string.
   * Durable on return, or — for a store opened for group commit — once `flush()` resolves.
   */
  put(bytes: Uint8Array, options?: AbortOptions): Promise<string>;
  /**
   * Store several blobs at once (e.g. in one transaction) and return their root CIDs, in order:
   * the same CIDs and the same durability as `put` of each. Optional: callers fall back to `put`.
   */
  putMany?(blobs: readonly Uint8Array[], options?: AbortOptions): Promise<string[]>;
  /** Read the whole blob back, verifying every block against its CID. Raises StorageError `VLM_BLOB_NOT_FOUND` (not-found). */
  get(cid: string, options?: AbortOptions): Promise<Uint8Array>;
  has(cid: string, options?: AbortOptions): Promise<boolean>;
  /** Every raw block (CID string, bytes) — used to publish to Kubo or replicate. */
  blocks(options?: AbortOptions): AsyncIterable<{ cid: string; bytes: Uint8Array }>;
  /** Resolve once every put so far is durable (at once for stores whose puts are durable on return). */
  flush?(): Promise<void>;
  close(): Promise<void>;
}
