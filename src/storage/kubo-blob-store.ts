/**
 * BlobStore on a Kubo node (or an IPFS Cluster proxy, or any Kubo-RPC server) through
 * `kubo-rpc-client` — the production alternative to the embedded SQLite block store
 * (`VELLUM_IPFS_URL`, e.g. `http://127.0.0.1:5001`).
 *
 * - **Same CIDs as the embedded store.** `put` adds with `cid-version=1`, `raw-leaves`,
 *   `chunker=size-262144` and pins, then asserts that the node answered exactly the CID that
 *   {@link cidForBytes} computes; any difference (e.g. a node configured with
 *   `Import.UnixFSFileMaxLinks` ≠ 174, or the `test-cid-v1-wide` profile) raises
 *   `VLM_BLOB_CID_MISMATCH` (fault) instead of storing an index entry under a CID that the
 *   rest of Vellum cannot recompute. The mismatching content stays on the node, pinned:
 *   the store never unpins what it did not prove to be its own.
 * - **Reads are verified.** `get` fetches with `cat` and recomputes the CID of the bytes;
 *   a difference is `VLM_BLOB_CORRUPT` (fault).
 * - **Presence means "pinned as a root".** `has`, and the not-found check in `get`, ask
 *   `pin ls --type=recursive <cid>`: Kubo answers from its pin set at once, for present and
 *   absent CIDs alike, without searching the network (a missing CID never hangs), and a blob
 *   that is merely cached (unpinned, so garbage-collectable) is not reported as stored. Every
 *   blob `put` or {@link publishBlocks publish}ed is pinned, so this is exact for Vellum's own
 *   data. Reads also pass Kubo's global `offline=true`, so a pinned root with missing children
 *   fails fast (`VLM_BLOB_CORRUPT` when the node says so) rather than fetching from the network.
 * - **Unreachable or failing node → `VLM_BLOB_UNAVAILABLE` (unavailable)**, so the FHIR layer
 *   answers 503; the repository puts blobs before committing the index, so nothing is
 *   committed. Every request has a deadline (`timeoutMs`, and `lookupTimeoutMs` for pin
 *   look-ups); hitting it is also `VLM_BLOB_UNAVAILABLE`. A caller's aborted signal is
 *   `VLM_BLOB_ABORTED`, a closed store `VLM_BLOB_CLOSED`.
 * - **`blocks()`** walks the node's recursive pins: each root and every block under it
 *   (`refs -r --unique`), each verified against its CID — so a whole node dedicated to Vellum
 *   can be replicated or exported. It includes blobs pinned by other users of the same node.
 * - **{@link publishBlocks}** copies every block of another BlobStore (the embedded default)
 *   into Kubo with `block put`, keeping each block's codec (raw / dag-pb) and CID, then pins
 *   every root (a block no other copied block links to) recursively.
 */
import * as dagPb from '@ipld/dag-pb';
import { create, type KuboRPCClient } from 'kubo-rpc-client';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import type { AbortOptions, BlobStore } from './blob-store.ts';
import { canonicalCid, cidForBytes, cidKey, verifyBlock, type Block } from './cid.ts';
import { isStorageError, StorageError, storageError } from './errors.ts';

/** Deadline of one request (add, cat, block get/put, pin add, refs) unless configured. */
export const DEFAULT_TIMEOUT_MS = 60_000;
/** Deadline of a pin look-up (has, and the not-found check of get) unless configured. */
export const DEFAULT_LOOKUP_TIMEOUT_MS = 10_000;
/** Requests in flight while publishing blocks. */
const PUBLISH_CONCURRENCY = 8;

/** Kubo's global `--offline` flag, sent as a query parameter (servers that do not know it ignore it). */
const OFFLINE = { offline: true } as const;

export interface KuboBlobStoreOptions {
  /** Kubo RPC API base URL (`VELLUM_IPFS_URL`), e.g. `http://127.0.0.1:5001`; `/api/v0` is implied. */
  url: string | URL;
  /** Aborts the connection check in `open`. */
  signal?: AbortSignal;
  /** Extra headers on every request (e.g. `Authorization` for a Kubo with `API.Authorizations`). */
  headers?: Record<string, string>;
  /** Deadline of each request, in ms (default {@link DEFAULT_TIMEOUT_MS}). */
  timeoutMs?: number;
  /** Deadline of each pin look-up, in ms (default {@link DEFAULT_LOOKUP_TIMEOUT_MS}). */
  lookupTimeoutMs?: number;
}

export interface PublishOptions extends AbortOptions {
  /**
   * Blob CIDs to pin recursively in addition to the computed roots — e.g. every CID the index
   * refers to. Needed only for a blob whose bytes equal one 256 KiB chunk of another blob: its
   * block is then linked from that blob, so it is not a computed root and would be pinned only
   * indirectly, which `has`/`get` do not count as stored.
   */
  roots?: Iterable<string>;
  /** Called after each block is stored, with the running totals. */
  onProgress?: (progress: { blocks: number; bytes: number }) => void;
}

export interface PublishResult {
  /** Distinct blocks stored in Kubo. */
  blocks: number;
  /** Their total size in bytes. */
  bytes: number;
  /** Root CIDs pinned recursively (blocks that no other published block links to, plus `options.roots`), sorted. */
  roots: string[];
}

/** How the server spells "store this block under codec X, CIDv1" in `block/put`. */
type BlockPutDialect = 'kubo' | 'js-ipfs';

/** A BlobStore whose blocks live in (and are pinned by) a Kubo node. */
export class KuboBlobStore implements BlobStore {
  readonly #client: KuboRPCClient;
  readonly #timeoutMs: number;
  readonly #lookupTimeoutMs: number;
  readonly #dialect: BlockPutDialect;
  /** Implementation and version reported by the node, e.g. `kubo 0.32.1` or `js-ipfs 0.18.1`. */
  readonly nodeVersion: string;
  /** The API URL the store talks to. */
  readonly url: string;
  #closed = false;

  private constructor(client: KuboRPCClient, url: string, nodeVersion: string, dialect: BlockPutDialect, timeoutMs: number, lookupTimeoutMs: number) {
    this.#client = client;
    this.url = url;
    this.nodeVersion = nodeVersion;
    this.#dialect = dialect;
    this.#timeoutMs = timeoutMs;
    this.#lookupTimeoutMs = lookupTimeoutMs;
  }

  /**
   * Connect to the Kubo RPC API at `url` and check that it answers (`version`). A malformed URL
   * raises `VLM_BLOB_OPEN` (invalid); an unreachable node `VLM_BLOB_UNAVAILABLE` (unavailable).
   */
  static async open(options: KuboBlobStoreOptions): Promise<KuboBlobStore> {
    let url: URL;
    try {
      url = new URL(options.url);
    } catch (err) {
      throw storageError('VLM_BLOB_OPEN', 'invalid', `IPFS API URL is not a URL: ${String(options.url)}`, err);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw storageError('VLM_BLOB_OPEN', 'invalid', `IPFS API URL must be http(s), not ${url.protocol}`);
    }
    if (url.username !== '' || url.password !== '') {
      throw storageError('VLM_BLOB_OPEN', 'invalid', 'IPFS API URL must not carry credentials; pass an Authorization header instead');
    }
    const timeoutMs = positive(options.timeoutMs, DEFAULT_TIMEOUT_MS, 'timeoutMs');
    const lookupTimeoutMs = positive(options.lookupTimeoutMs, DEFAULT_LOOKUP_TIMEOUT_MS, 'lookupTimeoutMs');
    const where = url.origin + (url.pathname === '/' ? '' : url.pathname.replace(/\/$/, ''));
    // A string, not the URL object: the client rewrites the pathname of a URL it is given.
    const client = create({ url: url.toString(), ...(options.headers ? { headers: options.headers } : {}) });
    const version = await request(`IPFS node at ${where}: version`, options, lookupTimeoutMs, (signal) => client.version({ signal }));
    // Kubo answers {Version, Commit, Repo, System, Golang}; js-ipfs adds {'ipfs-core', …} instead of Golang.
    const isJs = 'ipfs-core' in version;
    const nodeVersion = `${isJs ? 'js-ipfs' : 'kubo'} ${version.version}`;
    return new KuboBlobStore(client, where, nodeVersion, isJs ? 'js-ipfs' : 'kubo', timeoutMs, lookupTimeoutMs);
  }

  /**
   * Add `bytes` (CIDv1, raw leaves, 256 KiB chunks, pinned) and return the root CID, which is
   * checked to equal {@link cidForBytes}; raises `VLM_BLOB_CID_MISMATCH` (fault) otherwise.
   * Durable on return: Kubo has written and pinned the blocks before it answers.
   */
  async put(bytes: Uint8Array, options?: AbortOptions): Promise<string> {
    this.#check(options);
    const expected = (await cidForBytes(bytes)).root;
    this.#check(options);
    const added = await this.#request(`add ${expected}`, options, this.#timeoutMs, (signal) =>
      this.#client.add(bytes, { cidVersion: 1, rawLeaves: true, chunker: 'size-262144', hashAlg: 'sha2-256', pin: true, signal }),
    );
    const actual = added.cid.toString();
    if (actual !== expected) {
      throw storageError(
        'VLM_BLOB_CID_MISMATCH',
        'fault',
        `IPFS node (${this.nodeVersion}) added the blob as ${actual}, but Vellum addresses it as ${expected}: ` +
          'check the node\'s Import.* settings (Vellum needs 256 KiB chunks, raw leaves and 174 links per node)',
      );
    }
    return actual;
  }

  /**
   * Fetch a whole blob (`cat`, offline) and verify that its bytes hash to `cid`. A CID that is not
   * pinned on the node → `VLM_BLOB_NOT_FOUND` (not-found); bytes that do not match, or a pinned
   * root whose blocks the node has lost → `VLM_BLOB_CORRUPT` (fault).
   */
  async get(cid: string, options?: AbortOptions): Promise<Uint8Array> {
    this.#check(options);
    const key = canonicalCid(cid);
    if (!(await this.#pinned(key, options))) throw storageError('VLM_BLOB_NOT_FOUND', 'not-found', `blob ${key} not found`);
    let bytes: Uint8Array;
    try {
      bytes = await this.#request(`cat ${key}`, options, this.#timeoutMs, async (signal) => {
        const chunks: Uint8Array[] = [];
        for await (const chunk of this.#client.cat(key, { ...OFFLINE, signal })) chunks.push(chunk);
        return concat(chunks);
      });
    } catch (err) {
      if (isStorageError(err, 'VLM_BLOB_UNAVAILABLE') && isNotFoundReply(err.cause)) {
        throw storageError('VLM_BLOB_CORRUPT', 'fault', `blob ${key} is pinned but the node lacks some of its blocks`, err.cause);
      }
      throw err;
    }
    const { root } = await cidForBytes(bytes);
    if (root !== key) {
      throw storageError('VLM_BLOB_CORRUPT', 'fault', `blob ${key}: the node returned ${bytes.byteLength} bytes that hash to ${root}`);
    }
    return bytes;
  }

  /** True when `cid` is pinned (recursively) on the node; false for strings that are not CIDs. */
  async has(cid: string, options?: AbortOptions): Promise<boolean> {
    this.#check(options);
    const key = cidKey(cid);
    if (key === undefined) return false;
    return this.#pinned(key, options);
  }

  /**
   * Every block of every recursively pinned root (the root, then `refs -r --unique` below it),
   * each fetched offline and verified against its CID; a block shared by several roots is
   * yielded once. Missing or damaged blocks raise `VLM_BLOB_CORRUPT` (fault).
   */
  async *blocks(options?: AbortOptions): AsyncIterable<{ cid: string; bytes: Uint8Array }> {
    this.#check(options);
    const roots = await this.#request('pin ls --type=recursive', options, this.#timeoutMs, async (signal) => {
      const out: string[] = [];
      for await (const pin of this.#client.pin.ls({ type: 'recursive', signal })) out.push(pin.cid.toV1().toString());
      return out;
    });
    const seen = new Set<string>();
    for (const root of roots.sort()) {
      this.#check(options);
      const below = await this.#lostBlocksAreCorrupt(root, () =>
        this.#request(`refs -r ${root}`, options, this.#timeoutMs, async (signal) => {
          const out: string[] = [];
          for await (const ref of this.#client.refs(root, { recursive: true, unique: true, ...OFFLINE, signal })) {
            if (ref.err != null) throw new KuboReplyError(String(ref.err));
            out.push(canonicalCid(ref.ref));
          }
          return out;
        }),
      );
      for (const cid of [root, ...below]) {
        if (seen.has(cid)) continue;
        seen.add(cid);
        this.#check(options);
        const bytes = await this.#lostBlocksAreCorrupt(root, () =>
          this.#request(`block get ${cid}`, options, this.#timeoutMs, (signal) =>
            this.#client.block.get(CID.parse(cid), { ...OFFLINE, signal }),
          ),
        );
        if (!verifyBlock(cid, bytes)) throw storageError('VLM_BLOB_CORRUPT', 'fault', `block ${cid}: bytes returned by the node do not match the CID`);
        yield { cid, bytes };
      }
    }
  }

  /**
   * Store `source`'s blocks with `block put` (each under its own CID and codec, checked) and pin
   * every root recursively. Raw and dag-pb blocks only (`VLM_BLOB_UNSUPPORTED` otherwise); a block
   * whose bytes do not match its CID is refused (`VLM_BLOB_CORRUPT`) before anything is sent.
   */
  async publish(source: AsyncIterable<Block> | Iterable<Block>, options: PublishOptions = {}): Promise<PublishResult> {
    this.#check(options);
    const stored = new Set<string>();
    const linked = new Set<string>();
    let bytes = 0;
    await pool(source, PUBLISH_CONCURRENCY, options, async (block) => {
      const cid = canonicalCid(block.cid);
      if (stored.has(cid)) return;
      stored.add(cid);
      for (const child of this.#checkBlock(cid, block.bytes)) linked.add(child);
      await this.#putBlock(cid, block.bytes, options);
      bytes += block.bytes.byteLength;
      options.onProgress?.({ blocks: stored.size, bytes });
    });
    const roots = new Set([...stored].filter((cid) => !linked.has(cid)));
    for (const cid of options.roots ?? []) roots.add(canonicalCid(cid));
    await pool(roots, PUBLISH_CONCURRENCY, options, async (root) => {
      try {
        await this.#request(`pin add ${root}`, options, this.#timeoutMs, async (signal) => {
          await this.#client.pin.add(root, { recursive: true, ...OFFLINE, signal });
        });
      } catch (err) {
        if (isStorageError(err, 'VLM_BLOB_UNAVAILABLE') && isNotFoundReply(err.cause)) {
          throw storageError('VLM_BLOB_NOT_FOUND', 'not-found', `cannot pin ${root}: it or a block under it is in neither store`, err.cause);
        }
        throw err;
      }
    });
    return { blocks: stored.size, bytes, roots: [...roots].sort() };
  }

  /** Mark the store closed (idempotent); later calls raise `VLM_BLOB_CLOSED`. Nothing on the node changes. */
  async close(): Promise<void> {
    this.#closed = true;
  }

  /** Verify a block before sending it; return the CIDs it links to (dag-pb). */
  #checkBlock(cid: string, bytes: Uint8Array): string[] {
    if (!verifyBlock(cid, bytes)) throw storageError('VLM_BLOB_CORRUPT', 'fault', `block ${cid}: bytes do not match the CID; not published`);
    const parsed = CID.parse(cid);
    if (parsed.code === raw.code) return [];
    if (parsed.code !== dagPb.code) {
      throw storageError('VLM_BLOB_UNSUPPORTED', 'invalid', `block ${cid} has codec 0x${parsed.code.toString(16)}; only raw and dag-pb are published`);
    }
    try {
      return dagPb.decode(bytes).Links.map((link) => link.Hash.toV1().toString());
    } catch (err) {
      throw storageError('VLM_BLOB_CORRUPT', 'fault', `block ${cid}: undecodable dag-pb node; not published`, err);
    }
  }

  async #putBlock(cid: string, bytes: Uint8Array, options: AbortOptions): Promise<void> {
    const codec = CID.parse(cid).code === raw.code ? 'raw' : 'dag-pb';
    // Kubo ≥ 0.13 takes `cid-codec` (and reads `format` as a deprecated alias that may yield
    // CIDv0); js-ipfs only knows `format` + `version`. The CID check below catches any drift.
    const codecOptions = this.#dialect === 'kubo' ? { cidCodec: codec } : { format: codec, version: 1 as const };
    const actual = await this.#request(`block put ${cid}`, options, this.#timeoutMs, (signal) =>
      this.#client.block.put(bytes, { ...codecOptions, mhtype: 'sha2-256', pin: false, signal }),
    );
    if (actual.toString() !== cid) {
      throw storageError('VLM_BLOB_CID_MISMATCH', 'fault', `IPFS node (${this.nodeVersion}) stored block ${cid} as ${actual.toString()}`);
    }
  }

  /** True when `key` (a canonical CID string) is a recursive pin. Never searches the network. */
  async #pinned(key: string, options: AbortOptions | undefined): Promise<boolean> {
    try {
      return await this.#request(`pin ls ${key}`, options, this.#lookupTimeoutMs, async (signal) => {
        for await (const pin of this.#client.pin.ls({ paths: [key], type: 'recursive', ...OFFLINE, signal })) {
          if (pin.cid.toV1().toString() === key) return true;
        }
        return false;
      });
    } catch (err) {
      // Kubo and js-ipfs answer "path '…' is not pinned" (HTTP 500) for a CID outside the pin set.
      if (isStorageError(err, 'VLM_BLOB_UNAVAILABLE') && isNotFoundReply(err.cause)) return false;
      throw err;
    }
  }

  /** Blocks missing under a pinned root are damage on the node, not unavailability. */
  async #lostBlocksAreCorrupt<T>(root: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (isStorageError(err, 'VLM_BLOB_UNAVAILABLE') && isNotFoundReply(err.cause)) {
        throw storageError('VLM_BLOB_CORRUPT', 'fault', `pinned root ${root}: the node lacks some of its blocks`, err.cause);
      }
      throw err;
    }
  }

  #request<T>(what: string, options: AbortOptions | undefined, timeoutMs: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return request(`IPFS node at ${this.url}: ${what}`, options, timeoutMs, fn);
  }

  #check(options: AbortOptions | undefined): void {
    if (this.#closed) throw storageError('VLM_BLOB_CLOSED', 'unavailable', 'blob store is closed');
    const signal = options?.signal;
    if (signal?.aborted) throw storageError('VLM_BLOB_ABORTED', 'unavailable', 'blob store operation aborted', signal.reason);
  }
}

/**
 * Copy every block of `from` (e.g. the embedded SqliteBlobStore) into the Kubo node behind `to`,
 * with identical CIDs, and pin the roots: after it resolves, every blob of `from` is readable
 * through `to`. Idempotent; safe to re-run after an interruption.
 */
export function publishBlocks(from: BlobStore, to: KuboBlobStore, options: PublishOptions = {}): Promise<PublishResult> {
  return to.publish(from.blocks(options), options);
}

/** An error line inside a streamed reply (e.g. `refs`), kept apart from transport errors. */
class KuboReplyError extends Error {
  override readonly name = 'KuboReplyError';
}

/**
 * Run one RPC call under a deadline and the caller's signal, turning every failure into a
 * StorageError: caller abort → `VLM_BLOB_ABORTED`; anything else (connection refused, deadline,
 * an error answer) → `VLM_BLOB_UNAVAILABLE` with the original error as `cause`.
 */
async function request<T>(what: string, options: AbortOptions | undefined, timeoutMs: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = AbortSignal.timeout(timeoutMs);
  const caller = options?.signal;
  const signal = caller ? AbortSignal.any([caller, deadline]) : deadline;
  try {
    return await fn(signal);
  } catch (err) {
    if (err instanceof StorageError) throw err;
    if (caller?.aborted) throw storageError('VLM_BLOB_ABORTED', 'unavailable', `${what}: aborted`, caller.reason);
    if (deadline.aborted) throw storageError('VLM_BLOB_UNAVAILABLE', 'unavailable', `${what}: no answer within ${timeoutMs} ms`, err);
    throw storageError('VLM_BLOB_UNAVAILABLE', 'unavailable', `${what}: ${describe(err)}`, err);
  }
}

/** True for an answer of the node (not a transport failure) saying that a CID or block is absent. */
function isNotFoundReply(err: unknown): boolean {
  if (!(err instanceof Error) || (err.name !== 'HTTPError' && err.name !== 'KuboReplyError')) return false;
  return /is not pinned|not found|could not find|no link named/i.test(err.message);
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause;
  const code = cause !== null && typeof cause === 'object' && 'code' in cause ? ` (${String(cause.code)})` : '';
  return `${err.message}${code}`;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw storageError('VLM_BLOB_OPEN', 'invalid', `${name} must be a positive number of ms`);
  return value;
}

/** Run `fn` over `items` with at most `limit` calls in flight; the first failure stops the intake and is rethrown. */
async function pool<T>(items: AsyncIterable<T> | Iterable<T>, limit: number, options: AbortOptions, fn: (item: T) => Promise<void>): Promise<void> {
  const inflight = new Set<Promise<void>>();
  let failure: { err: unknown } | undefined;
  for await (const item of items) {
    if (failure) break;
    if (options.signal?.aborted) {
      failure ??= { err: storageError('VLM_BLOB_ABORTED', 'unavailable', 'publish aborted', options.signal.reason) };
      break;
    }
    const p: Promise<void> = fn(item)
      .catch((err: unknown) => {
        failure ??= { err };
      })
      .finally(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= limit) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  if (failure) throw failure.err;
}
