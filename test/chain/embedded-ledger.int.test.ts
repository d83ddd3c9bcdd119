/**
 * src/chain/embedded-chain.ts: the in-process chain deploys the registry, anchors, answers
 * from the contract, takes 200 concurrent anchors in nonce order, and survives restarts by
 * replaying its transaction log — including a transaction logged but never sent (crash between
 * log and send) — and refuses to start from a log that does not replay. Start times with 0,
 * 100 and 1,000 logged anchors are printed (no timing asserts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { Transaction, Wallet } from 'ethers';
import { ANCHORER_LABEL, derivePrivateKey, openEmbeddedLedger, type EmbeddedLedger } from '../../src/chain/embedded-chain.ts';
import type { AnchorReceipt } from '../../src/chain/ledger.ts';
import { buildTree, toHex } from '../../src/chain/merkle.ts';
import { encodeAnchor } from '../../src/chain/registry.ts';
import { manifestCid, randomRoot, rejectsCode } from './chain-helpers.ts';

function tempDir(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-embedded-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const logFile = (dataDir: string): string => path.join(dataDir, 'chain', 'transactions.log');
const logLines = (dataDir: string): { hash: string; block: number; timestamp: number; raw: string }[] =>
  fs.readFileSync(logFile(dataDir), 'utf8').trim().split('\n').map((l) => JSON.parse(l));

async function timedOpen(t: Test, dataDir: string, what: string): Promise<EmbeddedLedger> {
  const started = performance.now();
  const ledger = await openEmbeddedLedger({ dataDir });
  t.comment(`start with ${what}: ${(performance.now() - started).toFixed(0)} ms (${ledger.replayed} transactions replayed)`);
  return ledger;
}

const dataDir = tempDir(t);
let ledger = await timedOpen(t, dataDir, '0 logged anchors (first start, deploys)');
t.teardown(() => ledger.close());
const receipts: AnchorReceipt[] = [];

t.test('first start: private key file, registry deployed, ping', async (t) => {
  t.equal(fs.statSync(path.join(dataDir, 'chain', 'anchorer.key')).mode & 0o777, 0o600, 'anchorer.key is mode 0600');
  t.equal(ledger.kind, 'embedded');
  t.equal(ledger.chainId, 31337);
  t.match(ledger.contract, /^0x[0-9a-fA-F]{40}$/);
  t.equal(ledger.replayed, 0);
  t.equal(logLines(dataDir).length, 2, 'both deployments (anchor and consent registries) are logged');
  await ledger.ping();
});

t.test('anchor → anchoredAt and verifyLeaf answered by the contract', async (t) => {
  const leaves = Array.from({ length: 5 }, randomRoot);
  const tree = buildTree(leaves);
  const receipt = await ledger.anchor(tree.root, leaves.length, manifestCid('batch-1'));
  receipts.push(receipt);
  t.match(receipt, { batchId: 1, root: toHex(tree.root), leafCount: 5, manifestCid: manifestCid('batch-1'), chainId: 31337, contract: ledger.contract });
  t.match(receipt.txHash, /^0x[0-9a-f]{64}$/);
  t.same(await ledger.anchoredAt(tree.root), { batchId: 1, timestamp: receipt.blockTimestamp, blockNumber: receipt.blockNumber });
  t.equal(await ledger.anchoredAt(randomRoot()), undefined, 'an unknown root is not anchored');
  for (let i = 0; i < leaves.length; i++) t.equal(await ledger.verifyLeaf(tree.root, leaves[i]!, tree.proof(i)), true, `leaf ${i} verifies`);
  t.equal(await ledger.verifyLeaf(tree.root, randomRoot(), tree.proof(0)), false, 'a foreign leaf does not');
  const unanchored = buildTree(leaves.slice(0, 4));
  t.equal(await ledger.verifyLeaf(unanchored.root, leaves[0]!, unanchored.proof(0)), false, 'a valid proof to an unanchored root does not');
});

t.test('duplicate root → the same receipt, no second transaction', async (t) => {
  const before = logLines(dataDir).length;
  const again = await ledger.anchor(fromHexRoot(receipts[0]!.root), 5, manifestCid('batch-1'));
  t.same(again, receipts[0], 'same receipt');
  t.equal(logLines(dataDir).length, before, 'nothing sent');
});

t.test('200 concurrent anchors: sequential batch ids, nonces in order, never colliding', async (t) => {
  const roots = Array.from({ length: 200 }, randomRoot);
  const started = performance.now();
  const batch = await Promise.all(roots.map((root, i) => ledger.anchor(root, i + 1, manifestCid(`c${i}`))));
  const ms = performance.now() - started;
  t.comment(`embedded: 200 concurrent anchors in ${ms.toFixed(0)} ms = ${((200 / ms) * 1000).toFixed(0)} anchors/s`);
  receipts.push(...batch);
  t.same(batch.map((r) => r.batchId).sort((a, b) => a - b), Array.from({ length: 200 }, (_, i) => i + 2), 'batch ids 2..201, each once');
  t.equal(new Set(batch.map((r) => r.txHash)).size, 200, '200 distinct transactions');
  batch.forEach((r, i) => t.equal(r.root, toHex(roots[i]!), `receipt ${i} is for its own root`) || undefined);
  const nonces = logLines(dataDir).map((l) => Transaction.from(l.raw).nonce);
  t.same(nonces, nonces.map((_, i) => i), 'logged transactions carry nonces 0, 1, 2… in order');
});

t.test('batches() returns every BatchAnchored event in order', async (t) => {
  const all = await ledger.batches();
  t.same(all, [...receipts].sort((a, b) => a.batchId - b.batchId), 'one per anchor, same receipts');
  const later = await ledger.batches(receipts[100]!.blockNumber);
  t.ok(later.every((r) => r.blockNumber >= receipts[100]!.blockNumber) && later.length < all.length, 'fromBlock filters');
});

t.test('restart: the log replays into the same chain, and anchoring continues', async (t) => {
  const before = await ledger.batches();
  const contract = ledger.contract;
  await ledger.close();
  await rejectsCode(t, ledger.ping(), 'VLM_CHAIN_CLOSED');
  ledger = await timedOpen(t, dataDir, `${receipts.length} logged anchors`);
  t.equal(ledger.contract, contract, 'same registry address');
  for (const r of receipts) {
    const at = await ledger.anchoredAt(fromHexRoot(r.root));
    if (!at || at.batchId !== r.batchId || at.blockNumber !== r.blockNumber || at.timestamp !== r.blockTimestamp) {
      t.fail(`root of batch ${r.batchId} does not answer as before`);
    }
  }
  t.pass('every earlier root still anchoredAt with the same batch id, block number and timestamp');
  t.same(await ledger.batches(), before, 'the same events, transaction hashes included');
  const next = await ledger.anchor(randomRoot(), 1, manifestCid('after restart'));
  t.equal(next.batchId, receipts.length + 1, 'new anchors continue the sequence');
  receipts.push(next);
});

t.test('a transaction logged but never sent (crash between log and send) is sent by the replay', async (t) => {
  await ledger.close();
  const lines = logLines(dataDir);
  const last = lines[lines.length - 1]!;
  const template = Transaction.from(last.raw);
  const secret = new Uint8Array(Buffer.from(fs.readFileSync(path.join(dataDir, 'chain', 'anchorer.key'), 'utf8').trim(), 'hex'));
  const wallet = new Wallet(derivePrivateKey(secret, ANCHORER_LABEL));
  const root = randomRoot();
  const raw = await wallet.signTransaction({
    type: 2,
    chainId: 31337,
    nonce: template.nonce + 1,
    to: template.to,
    data: encodeAnchor(toHex(root), 7, manifestCid('crash')),
    gasLimit: template.gasLimit,
    maxFeePerGas: template.maxFeePerGas,
    maxPriorityFeePerGas: template.maxPriorityFeePerGas,
  });
  const hash = Transaction.from(raw).hash!;
  fs.appendFileSync(logFile(dataDir), `${JSON.stringify({ v: 1, hash, block: last.block + 1, timestamp: last.timestamp, raw })}\n`);

  ledger = await openEmbeddedLedger({ dataDir });
  t.equal(ledger.replayed, lines.length + 1, 'the extra line was replayed');
  const at = await ledger.anchoredAt(root);
  t.match(at, { batchId: receipts.length + 1, blockNumber: last.block + 1 }, 'its batch is on chain');
  const count = logLines(dataDir).length;
  const receipt = await ledger.anchor(root, 7, manifestCid('crash'));
  t.equal(receipt.txHash, hash, 'anchor() of that root returns the replayed transaction');
  t.equal(logLines(dataDir).length, count, 'and sends nothing');
  receipts.push(receipt);
});

t.test('a log that does not replay stops the start with VLM_CHAIN_REPLAY_MISMATCH', async (t) => {
  await ledger.close();
  const lines = fs.readFileSync(logFile(dataDir), 'utf8').trim().split('\n');
  const variants: [string, (lines: string[]) => string[]][] = [
    ['one byte of a transaction changed', (ls) => ls.map((l, i) => (i === 3 ? l.replace(/"raw":"0x(.{80})(.)/, (_m, a: string, c: string) => `"raw":"0x${a}${c === '0' ? '1' : '0'}`) : l))],
    [
      'a transaction changed and its hash recomputed',
      (ls) =>
        ls.map((l, i) => {
          if (i !== 3) return l;
          const rec = JSON.parse(l) as { raw: string; hash: string };
          const tx = Transaction.from(rec.raw);
          const changed = tx.data.slice(0, -2) + (tx.data.endsWith('00') ? '01' : '00');
          const forged = Transaction.from({ ...tx.toJSON(), data: changed, signature: tx.signature }).serialized;
          return JSON.stringify({ ...rec, raw: forged, hash: Transaction.from(forged).hash });
        }),
    ],
    ['two transactions swapped', (ls) => ls.map((l, i) => (i === 3 ? ls[4]! : i === 4 ? ls[3]! : l))],
  ];
  for (const [name, corrupt] of variants) {
    const copy = tempDir(t);
    fs.cpSync(path.join(dataDir, 'chain'), path.join(copy, 'chain'), { recursive: true });
    fs.writeFileSync(logFile(copy), `${corrupt(lines).join('\n')}\n`);
    await rejectsCode(t, openEmbeddedLedger({ dataDir: copy }), 'VLM_CHAIN_REPLAY_MISMATCH', 'fault');
    t.pass(name);
  }
  ledger = await openEmbeddedLedger({ dataDir });
  t.equal(ledger.replayed, lines.length, 'the intact log still replays');
});

t.test('anchorer.key readable by others → VLM_CHAIN_BAD_KEY', async (t) => {
  const dir = tempDir(t);
  fs.mkdirSync(path.join(dir, 'chain'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'chain', 'anchorer.key'), `${'ab'.repeat(32)}\n`, { mode: 0o644 });
  fs.chmodSync(path.join(dir, 'chain', 'anchorer.key'), 0o644);
  await rejectsCode(t, openEmbeddedLedger({ dataDir: dir }), 'VLM_CHAIN_BAD_KEY', 'fault');
});

t.test('start time with 100 and 1,000 logged anchors', async (t) => {
  const dir = tempDir(t);
  let l = await openEmbeddedLedger({ dataDir: dir });
  let anchored = 0;
  for (const target of [100, 1_000]) {
    const n = target - anchored;
    const started = performance.now();
    await Promise.all(Array.from({ length: n }, (_, i) => l.anchor(randomRoot(), 1, manifestCid(`s${anchored + i}`))));
    const ms = performance.now() - started;
    t.comment(`embedded: ${n} concurrent anchors in ${ms.toFixed(0)} ms = ${((n / ms) * 1000).toFixed(0)} anchors/s`);
    anchored = target;
    await l.close();
    l = await timedOpen(t, dir, `${target} logged anchors`);
    t.equal(l.replayed, target + 2, `${target} anchors + both deployments replayed`);
  }
  const next = await l.anchor(randomRoot(), 1, manifestCid('next'));
  t.equal(next.batchId, 1_001, 'anchoring continues');
  await l.close();
});

function fromHexRoot(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex.slice(2), 'hex'));
}
