/**
 * src/chain/rpc-chain.ts against `hardhat node` running as a SEPARATE PROCESS on 127.0.0.1 —
 * the way a user points Vellum at Besu or Geth: deploy on first start, reopen by address,
 * anchor, confirmations 1 and 2, wrong chain id, missing contract, an account without the
 * anchorer role, and an outage (node stopped → 'unavailable'; node restarted with a fresh
 * chain → the ledger reports the registry missing).
 *
 * `hardhat node` automines: one block per transaction, and no block otherwise. With
 * confirmations = 2 an anchor therefore waits until some later block exists; the test mines
 * one with `evm_mine` (on a live chain, blocks keep coming).
 */
import t from 'tap';
import { buildTree } from '../../src/chain/merkle.ts';
import { openRpcLedger, type RpcLedger } from '../../src/chain/rpc-chain.ts';
import type { RetryPolicy } from '../../src/chain/rpc.ts';
import { HARDHAT_KEYS, freePort, jsonRpc, manifestCid, randomRoot, rejectsCode, startHardhatNode } from './chain-helpers.ts';

const port = await freePort();
let node = await startHardhatNode(port);
t.teardown(() => node.stop());
const RETRY: RetryPolicy = { attempts: 3, baseDelayMs: 20, maxDelayMs: 100 };
const base = { rpcUrl: node.url, privateKey: HARDHAT_KEYS[0], chainId: 31337, confirmations: 1, pollIntervalMs: 20, retry: RETRY };

const ledgers: RpcLedger[] = [];
async function open(options: Partial<Parameters<typeof openRpcLedger>[0]>): Promise<RpcLedger> {
  const ledger = await openRpcLedger({ ...base, ...options });
  ledgers.push(ledger);
  return ledger;
}
t.teardown(async () => {
  for (const l of ledgers) await l.close();
});

const ledger = await open({ deploy: true });

t.test('deploy on first start, then reopen by address', async (t) => {
  t.equal(ledger.kind, 'rpc');
  t.equal(ledger.chainId, 31337);
  t.ok(ledger.deployed, 'reports that it deployed');
  t.match(ledger.contract, /^0x[0-9a-fA-F]{40}$/);
  const again = await open({ contract: ledger.contract });
  t.equal(again.deployed, undefined, 'no deployment when the address is given');
  t.equal(again.contract, ledger.contract);
  await again.ping();
});

t.test('anchor over HTTP: receipt, anchoredAt and verifyLeaf from the contract, idempotent', async (t) => {
  const leaves = Array.from({ length: 3 }, randomRoot);
  const tree = buildTree(leaves);
  const receipt = await ledger.anchor(tree.root, 3, manifestCid('http'));
  t.match(receipt, { batchId: 1, leafCount: 3, manifestCid: manifestCid('http'), chainId: 31337, contract: ledger.contract });
  t.same(await ledger.anchoredAt(tree.root), { batchId: 1, timestamp: receipt.blockTimestamp, blockNumber: receipt.blockNumber });
  t.equal(await ledger.verifyLeaf(tree.root, leaves[2]!, tree.proof(2)), true);
  t.equal(await ledger.verifyLeaf(tree.root, leaves[2]!, tree.proof(1)), false);
  const head = await jsonRpc<string>(node.url, 'eth_blockNumber');
  t.same(await ledger.anchor(tree.root, 3, manifestCid('http')), receipt, 'a duplicate root returns the existing receipt');
  t.equal(await jsonRpc<string>(node.url, 'eth_blockNumber'), head, 'without a transaction');
});

t.test('throughput over HTTP (printed)', async (t) => {
  const n = 200;
  const started = performance.now();
  const receipts = await Promise.all(Array.from({ length: n }, (_, i) => ledger.anchor(randomRoot(), 1, manifestCid(`h${i}`))));
  const ms = performance.now() - started;
  t.comment(`rpc (hardhat node over HTTP): ${n} concurrent anchors in ${ms.toFixed(0)} ms = ${((n / ms) * 1000).toFixed(0)} anchors/s`);
  t.same(receipts.map((r) => r.batchId).sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i + 2), 'sequential batch ids');
  const seqStart = performance.now();
  for (let i = 0; i < 20; i++) await ledger.anchor(randomRoot(), 1, manifestCid(`s${i}`));
  t.comment(`rpc: one at a time, ${((20 / (performance.now() - seqStart)) * 1000).toFixed(0)} anchors/s`);
  t.equal((await ledger.batches()).length, n + 21, 'batches() lists them all');
});

t.test('confirmations = 2: resolves only once a later block exists', async (t) => {
  const confirming = await open({ contract: ledger.contract, confirmations: 2 });
  const root = randomRoot();
  let resolved = false;
  const pending = confirming.anchor(root, 1, manifestCid('conf')).then((r) => ((resolved = true), r));
  while ((await ledger.anchoredAt(root)) === undefined) await new Promise((r) => setTimeout(r, 10));
  // Mined, but its block is the head: still one confirmation short. Give the poller a few rounds.
  await new Promise((r) => setTimeout(r, 200));
  t.equal(resolved, false, 'not resolved with one confirmation');
  await jsonRpc(node.url, 'evm_mine');
  const receipt = await pending;
  t.equal(receipt.blockNumber + 1, Number.parseInt(await jsonRpc<string>(node.url, 'eth_blockNumber'), 16), 'resolved at depth 2');
});

t.test('configuration checks', async (t) => {
  await rejectsCode(t, open({ contract: ledger.contract, chainId: 1 }), 'VLM_CHAIN_WRONG_CHAIN', 'invalid');
  await rejectsCode(t, open({ contract: '0x000000000000000000000000000000000000dEaD' }), 'VLM_CHAIN_CONTRACT_MISSING', 'fault');
  await rejectsCode(t, open({ contract: ledger.contract, privateKey: HARDHAT_KEYS[1] }), 'VLM_CHAIN_NOT_ANCHORER', 'fault');
  await rejectsCode(t, open({}), 'VLM_CHAIN_BAD_OPTION', 'invalid');
  await rejectsCode(t, open({ deploy: true, rpcUrl: 'ws://127.0.0.1:1' }), 'VLM_CHAIN_BAD_OPTION', 'invalid');
  await rejectsCode(t, open({ deploy: true, privateKey: '0x12' }), 'VLM_CHAIN_BAD_OPTION', 'invalid');
  await rejectsCode(t, open({ deploy: true, rpcUrl: `http://127.0.0.1:${await freePort()}` }), 'VLM_CHAIN_UNAVAILABLE', 'unavailable');
});

t.test('outage: node stopped → unavailable; restarted with a fresh chain → registry missing', async (t) => {
  await node.stop();
  await rejectsCode(t, ledger.anchor(randomRoot(), 1, manifestCid('outage')), 'VLM_CHAIN_UNAVAILABLE', 'unavailable');
  await rejectsCode(t, ledger.ping(), 'VLM_CHAIN_UNAVAILABLE', 'unavailable');
  await rejectsCode(t, ledger.anchoredAt(randomRoot()), 'VLM_CHAIN_UNAVAILABLE', 'unavailable');

  // An abort ends a retrying anchor at once.
  const controller = new AbortController();
  const aborted = ledger.anchor(randomRoot(), 1, manifestCid('abort'), { signal: controller.signal });
  controller.abort();
  await rejectsCode(t, aborted, 'VLM_CHAIN_ABORTED', 'unavailable');

  node = await startHardhatNode(port);
  await rejectsCode(t, ledger.ping(), 'VLM_CHAIN_CONTRACT_MISSING', 'fault');
  await rejectsCode(t, ledger.anchoredAt(randomRoot()), 'VLM_CHAIN_CONTRACT_MISSING', 'fault');
  await rejectsCode(t, ledger.anchor(randomRoot(), 1, manifestCid('reset')), 'VLM_CHAIN_CONTRACT_MISSING', 'fault');
  t.equal(await jsonRpc<string>(node.url, 'eth_blockNumber'), '0x0', 'and sent nothing to the fresh chain');
});
