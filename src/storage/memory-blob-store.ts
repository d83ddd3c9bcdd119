/**
 * In-memory BlobStore with the same addressing and verification as the SQLite store.
 * For unit tests of the layers above; nothing survives the process.
 */
import type { AbortOptions, BlobStore } from './blob-store.ts';
import { assembleBlob, cidForBytes, cidKey } from './cid.ts';
import { storageError } from './errors.ts';

/** A BlobStore holding its blocks in a Map (copies in, copies out). */
export class MemoryBlobStore implements BlobStore {
  readonly #blocks = new Map<string, Uint8Array>();
  #closed = false;

  /** Store `bytes` and return the root CID; storing the same bytes again is a no-op. */
  async put(bytes: Uint8Array, options?: AbortOptions): Promise<string> {
    this.#check(options);
    const { root, blocks } = await cidForBytes(bytes);
    this.#check(options);
    for (const block of blocks) {
      // Overwrite rather than skip: re-putting the same content heals a damaged copy.
      this.#blocks.set(block.cid, block.bytes.slice());
    }
    return root;
  }

  /** Read and verify a whole blob; raises `VLM_BLOB_NOT_FOUND` / `VLM_BLOB_CORRUPT`. */
  async get(cid: string, options?: AbortOptions): Promise<Uint8Array> {
    this.#check(options);
    // Copies, so a caller mutating the result cannot damage the stored block.
    return assembleBlob(cid, (c) => this.#blocks.get(c)?.slice(), options?.signal);
  }

  /** True when the blob's root block is present (`false` for strings that are not CIDs). */
  async has(cid: string, options?: AbortOptions): Promise<boolean> {
    this.#check(options);
    const key = cidKey(cid);
    if (key === undefined) return false;
    return this.#blocks.has(key);
  }

  /** Every stored block, in no particular order (a snapshot taken when iteration starts). */
  async *blocks(options?: AbortOptions): AsyncIterable<{ cid: string; bytes: Uint8Array }> {
    this.#check(options);
    for (const [cid, bytes] of [...this.#blocks]) {
      this.#check(options);
      yield { cid, bytes: bytes.slice() };
    }
  }

  /** Mark the store closed; later calls raise `VLM_BLOB_CLOSED`. */
  async close(): Promise<void> {
    this.#closed = true;
  }

  #check(options: AbortOptions | undefined): void {
    if (this.#closed) throw storageError('VLM_BLOB_CLOSED', 'unavailable', 'blob store is closed');
    const signal = options?.signal;
    if (signal?.aborted) throw storageError('VLM_BLOB_ABORTED', 'unavailable', 'blob store operation aborted', signal.reason);
  }
}
