/**
 * The anchor batcher (DESIGN.md, write path step 5). Pending leaves wait in the index, committed in
 * the same transaction as their versions. The batcher closes a batch on a time window or a size,
 * stores a public batch manifest (leaves and envelope CIDs, no ids) in IPFS, PERSISTS the planned
 * batch with every leaf's proof, and only then sends one anchor transaction. After a crash,
 * planned batches are resumed first — the ledger's `anchor` is idempotent per root — so a batch is
 * never anchored twice and every acknowledged write is anchored once the chain answers again.
 *
 * The batcher knows its collaborators only by the narrow shapes below (`src/chain` does not import
 * `src/storage`); the composition root passes the index, the block store and a ledger.
 */
import { buildTree, toHex } from './merkle.ts';

export interface QueuedLeaf {
  seq: number;
  leaf: Uint8Array;
  cid: string;
  /** Opaque sealed locator published beside the leaf (only the master key's holder can open it). */
  locator?: string;
}

export interface QueuedBatch {
  id: number;
  root: Uint8Array;
  leafCount: number;
  manifestCid: string;
  seqs: number[];
}

export interface RecordedAnchor {
  chainBatchId: number;
  txHash: string;
  blockNumber: number;
  blockTimestamp: number;
  chainId: number;
  contract: string;
}

/** The durable leaf queue (the index implements it). */
export interface LeafQueue {
  pendingLeaves(limit: number): Promise<QueuedLeaf[]>;
  /** Proofs are not passed: they are rebuilt from the batch's leaves when a version is verified. */
  planBatch(batch: Omit<QueuedBatch, 'id'>): Promise<QueuedBatch>;
  plannedBatches(): Promise<QueuedBatch[]>;
  recordAnchor(batchId: number, receipt: RecordedAnchor): Promise<void>;
  anchorOf(seq: number): Promise<{ status: 'pending' | 'planned' | 'anchored' } | undefined>;
  backlog(): Promise<number>;
}

/** Where manifests go (the IPFS block store). */
export interface ManifestStore {
  put(bytes: Uint8Array): Promise<string>;
  flush?(): Promise<void>;
}

/** The part of a ledger the batcher uses. */
export interface AnchoringLedger {
  anchor(
    root: Uint8Array,
    leafCount: number,
    manifestCid: string,
    options?: { signal?: AbortSignal },
  ): Promise<{ batchId: number; txHash: string; blockNumber: number; blockTimestamp: number; chainId: number; contract: string }>;
}

export interface BatcherOptions {
  queue: LeafQueue;
  manifests: ManifestStore;
  ledger: AnchoringLedger;
  /** Close a batch after this long (VELLUM_ANCHOR_INTERVAL_MS, default 1,000). */
  intervalMs: number;
  /** ...or as soon as this many leaves wait (VELLUM_ANCHOR_MAX_LEAVES, default 1,000). */
  maxLeaves: number;
  /** Called with every failed round (the chain may be down: the batcher retries with backoff). */
  onError?: (err: unknown) => void;
  /**
   * Several nodes on one index: only the holder of this lease batches and anchors (one batcher
   * at a time; src/storage/postgres/pg-lease.ts). The others settle their waiters from the index.
   */
  lease?: BatcherLease;
}

/** Who may batch now: `hold()` keeps (or takes) the lease and says whether this node has it. */
export interface BatcherLease {
  hold(): Promise<boolean>;
  release(): Promise<void>;
}

export const MANIFEST_TYPE = 'vellum.anchor.batch.v1';

/** One entry of a batch manifest, in leaf order. */
export interface ManifestEntry {
  leaf: string;
  cid: string;
  /** Sealed locator (opaque to everyone but the master key's holder). */
  loc?: string;
}

/** A batch manifest as stored in IPFS. */
export interface BatchManifest {
  type: typeof MANIFEST_TYPE;
  root: string;
  leaves: ManifestEntry[];
}

/**
 * The public manifest of a batch: enough for anyone to find every envelope and check the root,
 * and for the master key's holder to replay the batch into an index (`vellum rebuild`).
 */
export function manifestOf(root: Uint8Array, leaves: readonly QueuedLeaf[]): Uint8Array {
  const manifest: BatchManifest = {
    type: MANIFEST_TYPE,
    root: toHex(root),
    leaves: leaves.map((l) => ({ leaf: toHex(l.leaf), cid: l.cid, ...(l.locator ? { loc: l.locator } : {}) })),
  };
  return new TextEncoder().encode(JSON.stringify(manifest));
}

export class AnchorBatcher {
  readonly #options: BatcherOptions;
  #running: Promise<void> | undefined;
  #stopped = true;
  #abort = new AbortController();
  #wake: (() => void) | undefined;
  #queuedSinceRound = 0;
  #waiters = new Map<number, { resolve: () => void; reject: (err: unknown) => void }[]>();
  #failures = 0;

  constructor(options: BatcherOptions) {
    this.#options = options;
  }

  /** Start the background loop. */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#abort = new AbortController();
    this.#running = this.#loop();
  }

  /** Stop after the current round; waiters are rejected. Pending leaves stay queued for the next start. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    this.#wake?.();
    await this.#running;
    await this.#options.lease?.release();
    for (const [, waiters] of this.#waiters) for (const w of waiters) w.reject(new Error('VLM_ANCHOR_STOPPED'));
    this.#waiters.clear();
  }

  /** Tell the batcher that `count` leaves were queued (a full batch starts at once). */
  notify(count = 1): void {
    this.#queuedSinceRound += count;
    if (this.#queuedSinceRound >= this.#options.maxLeaves) this.#wake?.();
  }

  /** Resolve once the leaf of version `seq` is in an anchored batch. */
  async waitFor(seq: number, signal?: AbortSignal): Promise<void> {
    const anchored = new Promise<void>((resolve, reject) => {
      const list = this.#waiters.get(seq) ?? [];
      list.push({ resolve, reject });
      this.#waiters.set(seq, list);
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
    const state = await this.#options.queue.anchorOf(seq);
    if (state?.status === 'anchored') this.#settle([seq]);
    // No early wake-up: waiting clients must not shrink batches (each batch costs a transaction).
    return anchored;
  }

  /** One round: resume planned batches, then batch and anchor up to `maxLeaves` pending leaves. Returns leaves anchored. */
  async runOnce(signal?: AbortSignal): Promise<number> {
    const { queue, manifests, maxLeaves, lease } = this.#options;
    if (lease && !(await lease.hold())) {
      // Another node anchors: settle the writes waiting here once their leaves are anchored.
      for (const seq of [...this.#waiters.keys()]) if ((await queue.anchorOf(seq))?.status === 'anchored') this.#settle([seq]);
      return 0;
    }
    let anchored = 0;
    for (const batch of await queue.plannedBatches()) anchored += await this.#send(batch, signal);
    this.#queuedSinceRound = 0;
    const leaves = await queue.pendingLeaves(maxLeaves);
    if (leaves.length === 0) return anchored;
    const tree = buildTree(leaves.map((l) => l.leaf));
    const manifestCid = await manifests.put(manifestOf(tree.root, leaves));
    await manifests.flush?.();
    const batch = await queue.planBatch({ root: tree.root, leafCount: leaves.length, manifestCid, seqs: leaves.map((l) => l.seq) });
    return anchored + (await this.#send(batch, signal));
  }

  async #send(batch: QueuedBatch, signal?: AbortSignal): Promise<number> {
    const receipt = await this.#options.ledger.anchor(batch.root, batch.leafCount, batch.manifestCid, { signal });
    await this.#options.queue.recordAnchor(batch.id, {
      chainBatchId: receipt.batchId,
      txHash: receipt.txHash,
      blockNumber: receipt.blockNumber,
      blockTimestamp: receipt.blockTimestamp,
      chainId: receipt.chainId,
      contract: receipt.contract,
    });
    this.#settle(batch.seqs);
    return batch.leafCount;
  }

  #settle(seqs: readonly number[]): void {
    for (const seq of seqs) {
      const waiters = this.#waiters.get(seq);
      if (!waiters) continue;
      this.#waiters.delete(seq);
      for (const w of waiters) w.resolve();
    }
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      let delay = this.#options.intervalMs;
      try {
        const anchored = await this.runOnce(this.#abort.signal);
        this.#failures = 0;
        if (anchored >= this.#options.maxLeaves) delay = 0; // more may be waiting
      } catch (err) {
        if (this.#stopped) break;
        this.#failures++;
        this.#options.onError?.(err);
        // Back off while the chain (or IPFS) is unavailable: 1×, 2×, 4× … the window, at most 30 s.
        delay = Math.min(30_000, this.#options.intervalMs * 2 ** Math.min(this.#failures, 5));
      }
      if (this.#stopped) break;
      if (delay > 0) await this.#sleep(delay);
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = () => {
        this.#wake = undefined;
        done();
      };
    });
  }

  /** Leaves written but not yet anchored (for /ready and metrics). */
  backlog(): Promise<number> {
    return this.#options.queue.backlog();
  }
}
