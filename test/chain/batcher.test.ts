import t from 'tap';
import { AnchorBatcher, MANIFEST_TYPE, type LeafQueue, type QueuedBatch, type QueuedLeaf } from '../../src/chain/batcher.ts';
import { buildTree, fromHex, toHex, verifyProof } from '../../src/chain/merkle.ts';
import { keccak_256 } from '@noble/hashes/sha3.js';

/** An in-memory leaf queue with the index's semantics (unit test of the batcher only). */
class MemoryQueue implements LeafQueue {
  leaves: (QueuedLeaf & { batch?: number; leafIndex?: number })[] = [];
  batches: (QueuedBatch & { anchored?: boolean })[] = [];
  add(n: number): number[] {
    const seqs: number[] = [];
    for (let i = 0; i < n; i++) {
      const seq = this.leaves.length + 1;
      this.leaves.push({ seq, leaf: keccak_256(new TextEncoder().encode(`leaf-${seq}`)), cid: `bafk-test-${seq}` });
      seqs.push(seq);
    }
    return seqs;
  }
  async pendingLeaves(limit: number) {
    return this.leaves.filter((l) => l.batch === undefined).slice(0, limit);
  }
  async planBatch(batch: Omit<QueuedBatch, 'id'>) {
    const planned = { ...batch, id: this.batches.length + 1 };
    this.batches.push(planned);
    batch.seqs.forEach((seq, i) => Object.assign(this.leaves[seq - 1]!, { batch: planned.id, leafIndex: i }));
    return planned;
  }
  async plannedBatches() {
    return this.batches.filter((b) => !b.anchored);
  }
  async recordAnchor(id: number) {
    this.batches[id - 1]!.anchored = true;
  }
  async anchorOf(seq: number) {
    const leaf = this.leaves[seq - 1];
    if (!leaf) return undefined;
    if (leaf.batch === undefined) return { status: 'pending' as const };
    return { status: this.batches[leaf.batch - 1]!.anchored ? ('anchored' as const) : ('planned' as const) };
  }
  async backlog() {
    return this.leaves.filter((l) => l.batch === undefined || !this.batches[l.batch - 1]!.anchored).length;
  }
}

function fakeLedger() {
  const anchored = new Map<string, number>();
  let failNext = 0;
  return {
    calls: [] as string[],
    anchored,
    failTimes(n: number) {
      failNext = n;
    },
    async anchor(root: Uint8Array, leafCount: number, manifestCid: string) {
      const key = toHex(root);
      this.calls.push(key);
      if (failNext > 0) {
        failNext--;
        throw Object.assign(new Error('chain down'), { code: 'VLM_CHAIN_UNAVAILABLE' });
      }
      if (!anchored.has(key)) anchored.set(key, anchored.size + 1);
      void leafCount;
      void manifestCid;
      return { batchId: anchored.get(key)!, txHash: '0xabc', blockNumber: anchored.get(key)!, blockTimestamp: 1, chainId: 31337, contract: '0xc0' };
    },
  };
}

function manifestStore() {
  const stored = new Map<string, Uint8Array>();
  return {
    stored,
    async put(bytes: Uint8Array) {
      const cid = `bafk-manifest-${stored.size + 1}`;
      stored.set(cid, bytes);
      return cid;
    },
  };
}

t.test('a round batches pending leaves, stores a manifest, plans, anchors, and proofs verify', async (t) => {
  const queue = new MemoryQueue();
  const ledger = fakeLedger();
  const manifests = manifestStore();
  const batcher = new AnchorBatcher({ queue, ledger, manifests, intervalMs: 1000, maxLeaves: 4 });
  queue.add(6);
  t.equal(await batcher.runOnce(), 4, 'at most maxLeaves per batch');
  t.equal(await batcher.runOnce(), 2);
  t.equal(await batcher.runOnce(), 0, 'nothing left');
  t.equal(ledger.calls.length, 2, 'one transaction per batch');
  t.equal(await batcher.backlog(), 0);
  const [cid, bytes] = [...manifests.stored][0]!;
  const manifest = JSON.parse(new TextDecoder().decode(bytes));
  t.equal(manifest.type, MANIFEST_TYPE);
  t.same(manifest.leaves.map((l: { cid: string }) => l.cid), ['bafk-test-1', 'bafk-test-2', 'bafk-test-3', 'bafk-test-4']);
  t.equal(queue.batches[0]!.manifestCid, cid);
  // Proofs are rebuilt from a batch's leaves in leaf order (what $verify does): they lead to the planned root.
  for (const leaf of queue.leaves) {
    const batch = queue.batches[leaf.batch! - 1]!;
    const inBatch = queue.leaves.filter((l) => l.batch === leaf.batch).sort((a, b) => a.leafIndex! - b.leafIndex!);
    t.same(buildTree(inBatch.map((l) => l.leaf)).root, batch.root, `batch ${batch.id}'s leaves in leaf order give its root`);
    t.ok(verifyProof(batch.root, leaf.leaf, buildTree(inBatch.map((l) => l.leaf)).proof(leaf.leafIndex!)), `proof of leaf ${leaf.seq} verifies against its root`);
  }
  t.same(fromHex(manifest.root), queue.batches[0]!.root);
});

t.test('a failed send leaves the batch planned; the next round resends the SAME root, not a new batch', async (t) => {
  const queue = new MemoryQueue();
  const ledger = fakeLedger();
  const batcher = new AnchorBatcher({ queue, ledger, manifests: manifestStore(), intervalMs: 1000, maxLeaves: 10 });
  queue.add(3);
  ledger.failTimes(1);
  await t.rejects(batcher.runOnce(), { code: 'VLM_CHAIN_UNAVAILABLE' });
  t.equal(queue.batches.length, 1, 'the batch is persisted before sending');
  t.equal(await batcher.backlog(), 3, 'its leaves are still backlog');
  queue.add(2); // new writes while the chain is down
  t.equal(await batcher.runOnce(), 5, 'resumed batch (3) then a new one (2)');
  t.equal(ledger.calls[0], ledger.calls[1], 'the resumed batch resent the same root');
  t.equal(ledger.anchored.size, 2, 'two distinct batches anchored, none twice');
  t.equal(await batcher.backlog(), 0);
});

t.test('waitFor resolves when the leaf is anchored, including leaves anchored before the call', async (t) => {
  const queue = new MemoryQueue();
  const batcher = new AnchorBatcher({ queue, ledger: fakeLedger(), manifests: manifestStore(), intervalMs: 1000, maxLeaves: 10 });
  const [first] = queue.add(1);
  await batcher.runOnce();
  await batcher.waitFor(first!); // already anchored
  const [second] = queue.add(1);
  let resolved = false;
  const waiting = batcher.waitFor(second!).then(() => (resolved = true));
  await new Promise((r) => setImmediate(r));
  t.notOk(resolved, 'not before its batch is anchored');
  await batcher.runOnce();
  await waiting;
  t.ok(resolved);
});

t.test('the background loop anchors on the window and retries after failures', async (t) => {
  const queue = new MemoryQueue();
  const ledger = fakeLedger();
  const errors: unknown[] = [];
  const batcher = new AnchorBatcher({ queue, ledger, manifests: manifestStore(), intervalMs: 5, maxLeaves: 100, onError: (e) => errors.push(e) });
  ledger.failTimes(2);
  const [seq] = queue.add(1);
  batcher.start();
  await batcher.waitFor(seq!);
  await batcher.stop();
  t.equal(errors.length, 2, 'two failed rounds reported');
  t.equal(ledger.anchored.size, 1, 'then anchored once');
});
