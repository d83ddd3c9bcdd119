/**
 * src/chain/sender.ts against an in-process EDR chain, through a wrapper that can make the
 * chain unreachable or lose answers: nonce handling, retries, replacement of stuck
 * transactions (including the race where the original is mined first), orphan adoption after
 * an outage, abort, close, and a duplicate-root race between two senders.
 */
import t, { type Test } from 'tap';
import { Interface, Transaction, Wallet, type BaseWallet } from 'ethers';
import { createContractLedger, deployRegistry } from '../../src/chain/contract-ledger.ts';
import { ANCHOR_REGISTRY_ABI } from '../../src/chain/generated/anchor-registry.ts';
import { ANCHORER_ROLE } from '../../src/chain/registry.ts';
import type { RetryPolicy } from '../../src/chain/rpc.ts';
import { Sender, type SenderEvent, type SignedTransaction } from '../../src/chain/sender.ts';
import { manifestCid, randomRoot, rejectsCode, startEdr } from './chain-helpers.ts';

const RETRY: RetryPolicy = { attempts: 4, baseDelayMs: 5, maxDelayMs: 20 };

/** Resolves once `predicate` holds (polling); fails the test after 10 s. */
async function until(t: Test, predicate: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await predicate())) {
    if (Date.now() > deadline) {
      t.fail(`timed out waiting for ${what}`);
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface SetupOptions {
  automine?: boolean;
  replaceAfterMs?: number;
  retry?: RetryPolicy;
}

async function setup(t: Test, options: SetupOptions = {}) {
  const chain = await startEdr(t);
  const wallet: BaseWallet = Wallet.createRandom();
  await chain.fund(wallet.address);
  const events: SenderEvent[] = [];
  const journaled: SignedTransaction[] = [];
  const refused: SignedTransaction[] = [];
  const hooks: { before?: (tx: SignedTransaction) => Promise<void> } = {};
  const retry = options.retry ?? RETRY;
  const makeSender = (w: BaseWallet): Sender =>
    new Sender({
      rpc: chain.rpc,
      wallet: w,
      chainId: 31337,
      confirmations: 1,
      pollIntervalMs: 5,
      replaceAfterMs: options.replaceAfterMs ?? 60_000,
      retry,
      journal: {
        async beforeBroadcast(tx) {
          journaled.push(tx);
          await hooks.before?.(tx);
        },
        async refused(tx) {
          refused.push(tx);
        },
      },
      onEvent: (e) => events.push(e),
    });
  const sender = makeSender(wallet);
  const { address: contract } = await deployRegistry(sender, wallet.address);
  const ledger = createContractLedger({ kind: 'rpc', rpc: chain.rpc, sender, chainId: 31337, contract, retry });
  t.teardown(() => ledger.close());
  if (options.automine === false) await chain.direct.request('evm_setAutomine', [false]);
  return { chain, wallet, sender, ledger, contract, events, journaled, refused, hooks, makeSender };
}

const sentEvents = (events: SenderEvent[]) => events.filter((e) => e.type === 'sent');

t.test('sends in nonce order and anchors once per root', async (t) => {
  const s = await setup(t);
  const root = randomRoot();
  const [a, b] = await Promise.all([s.ledger.anchor(root, 2, manifestCid('a')), s.ledger.anchor(root, 2, manifestCid('a'))]);
  t.same(a, b, 'concurrent anchors of one root share one run');
  t.equal(sentEvents(s.events).length, 2, 'deployment + one anchor transaction');
  t.same(s.journaled.map((tx) => tx.nonce), [0, 1], 'nonces 0 (deploy) and 1');
});

t.test('"nonce too low": the pending nonce is fetched again and the job re-signed', async (t) => {
  const s = await setup(t);
  await s.ledger.anchor(randomRoot(), 1, manifestCid('first'));
  // Someone else uses the same key behind the sender's back.
  const nonce = await s.chain.direct.nonce(s.wallet.address, 'pending');
  const foreign = await s.wallet.signTransaction({ type: 2, chainId: 31337, nonce, to: s.wallet.address, value: 0n, gasLimit: 21_000n, maxFeePerGas: 10n ** 10n, maxPriorityFeePerGas: 1n });
  await s.chain.direct.request('eth_sendRawTransaction', [foreign]);

  const receipt = await s.ledger.anchor(randomRoot(), 1, manifestCid('second'));
  t.equal(receipt.batchId, 2, 'anchored');
  t.ok(s.events.some((e) => e.type === 'nonce-reset' && e.code === 'VLM_CHAIN_NONCE_TOO_LOW'), 'the stale nonce was detected');
  t.ok(s.refused.some((tx) => tx.nonce === nonce), 'the refused transaction was reported to the journal');
});

t.test('transient errors: retried with backoff; a lost answer is not sent twice', async (t) => {
  const s = await setup(t);
  s.chain.faults.failBefore.set('eth_sendRawTransaction', 2);
  const first = await s.ledger.anchor(randomRoot(), 1, manifestCid('x'));
  t.equal(s.events.filter((e) => e.type === 'retry').length, 2, 'two retries');
  t.equal(first.batchId, 1);

  // The node gets the transaction (automine: it is mined) but the answer is lost: the resend
  // meets "nonce too low" for a transaction the node knows, which counts as sent.
  s.chain.faults.failAfter.set('eth_sendRawTransaction', 1);
  const root = randomRoot();
  const second = await s.ledger.anchor(root, 1, manifestCid('y'));
  t.equal(second.batchId, 2, 'anchored once');
  t.equal(s.refused.length, 0, 'nothing refused');
  t.equal((await s.ledger.batches()).length, 2, 'two batches on chain');
  t.equal(await s.chain.direct.nonce(s.wallet.address, 'latest'), 3, 'three transactions in all (deploy + 2)');
});

t.test('outage: VLM_CHAIN_UNAVAILABLE after the retries, then the same root anchors once', async (t) => {
  const s = await setup(t, { retry: { attempts: 3, baseDelayMs: 5, maxDelayMs: 10 } });
  const root = randomRoot();
  s.chain.faults.down = true;
  await rejectsCode(t, s.ledger.anchor(root, 1, manifestCid('down')), 'VLM_CHAIN_UNAVAILABLE', 'unavailable');
  await rejectsCode(t, s.ledger.ping(), 'VLM_CHAIN_UNAVAILABLE', 'unavailable');
  s.chain.faults.down = false;
  await s.ledger.ping();
  const receipt = await s.ledger.anchor(root, 1, manifestCid('down'));
  t.equal(receipt.batchId, 1);
});

t.test('outage after broadcast: the orphaned transaction is adopted, not re-signed', async (t) => {
  const s = await setup(t, { automine: false, retry: { attempts: 3, baseDelayMs: 5, maxDelayMs: 10 } });
  const root = randomRoot();
  const first = s.ledger.anchor(root, 1, manifestCid('orphan'));
  await until(t, () => sentEvents(s.events).length === 2, 'the anchor to be broadcast');
  s.chain.faults.down = true;
  await rejectsCode(t, first, 'VLM_CHAIN_UNAVAILABLE', 'unavailable');
  s.chain.faults.down = false;

  const again = s.ledger.anchor(root, 1, manifestCid('orphan'));
  await until(t, async () => (s.chain.faults.calls.get('eth_getTransactionByHash') ?? 0) > 0, 'the orphan to be looked up');
  await s.chain.direct.request('evm_mine', []);
  const receipt = await again;
  t.equal(receipt.txHash, s.journaled[1]!.hash, 'resolved to the transaction broadcast before the outage');
  t.equal(sentEvents(s.events).length, 2, 'no second anchor transaction was signed');
});

t.test('a stuck transaction is replaced with fees ≥ 12.5 % higher', async (t) => {
  const s = await setup(t, { automine: false, replaceAfterMs: 100 });
  const root = randomRoot();
  const pending = s.ledger.anchor(root, 1, manifestCid('stuck'));
  await until(t, () => s.events.some((e) => e.type === 'replaced'), 'a replacement');
  const replacements = s.events.filter((e) => e.type === 'replaced');
  await s.chain.direct.request('evm_mine', []);
  const receipt = await pending;

  const [original, replacement] = s.journaled.slice(1).map((tx) => Transaction.from(tx.raw));
  t.equal(replacement!.nonce, original!.nonce, 'same nonce');
  t.ok(replacement!.maxPriorityFeePerGas! * 1000n >= original!.maxPriorityFeePerGas! * 1125n, 'tip +12.5 % or more');
  t.ok(replacement!.maxFeePerGas! * 1000n >= original!.maxFeePerGas! * 1125n, 'fee cap +12.5 % or more');
  t.equal(receipt.txHash, replacements[replacements.length - 1]!.hash, 'the replacement was mined');
  t.equal(await s.chain.direct.receipt(original!.hash!), null, 'the original never was');
  t.same(await s.ledger.anchoredAt(root), { batchId: receipt.batchId, timestamp: receipt.blockTimestamp, blockNumber: receipt.blockNumber });
});

t.test('replacement race: the original is mined first → resolves to the original, no second anchor', async (t) => {
  const s = await setup(t, { automine: false, replaceAfterMs: 100 });
  const seen = new Set<number>();
  s.hooks.before = async (tx) => {
    // Just before the replacement goes out, the original gets mined.
    if (seen.has(tx.nonce)) await s.chain.direct.request('evm_mine', []);
    seen.add(tx.nonce);
  };
  const root = randomRoot();
  const receipt = await s.ledger.anchor(root, 1, manifestCid('race'));
  const original = s.journaled[1]!;
  t.equal(receipt.txHash, original.hash, 'the original transaction is the result');
  t.equal(s.refused.length, 1, 'the replacement was refused by the chain');
  t.equal(s.refused[0]!.nonce, original.nonce, 'it had the same nonce');
  t.notOk(s.events.some((e) => e.type === 'replaced'), 'no replacement was ever in flight');
  t.equal((await s.ledger.batches()).length, 1, 'one batch');
});

t.test('two senders race for one root: the loser resolves to the winner\'s receipt', async (t) => {
  const s = await setup(t);
  const other = Wallet.createRandom();
  await s.chain.fund(other.address);
  const registry = new Interface(ANCHOR_REGISTRY_ABI);
  await s.sender.send({
    key: 'grant',
    to: s.contract,
    data: registry.encodeFunctionData('grantRole', [ANCHORER_ROLE, other.address]),
    lookup: async () => undefined,
    fromReceipt: async () => true,
  });
  const otherLedger = createContractLedger({ kind: 'rpc', rpc: s.chain.rpc, sender: s.makeSender(other), chainId: 31337, contract: s.contract, retry: RETRY });
  t.teardown(() => otherLedger.close());

  await s.chain.direct.request('evm_setAutomine', [false]);
  const root = randomRoot();
  const a = s.ledger.anchor(root, 1, manifestCid('race'));
  const b = otherLedger.anchor(root, 1, manifestCid('race'));
  await until(t, () => sentEvents(s.events).length === 4, 'both anchors to be broadcast');
  await s.chain.direct.request('evm_mine', []);
  const [ra, rb] = await Promise.all([a, b]);
  t.same(ra, rb, 'both callers get the same receipt');
  t.ok(s.events.some((e) => e.type === 'mined' && e.status === 0), 'the loser\'s transaction reverted');
  t.equal((await s.ledger.batches()).length, 1, 'one batch');
});

t.test('abort: a waiting anchor is never signed; an aborted signal rejects at once', async (t) => {
  const s = await setup(t);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  s.hooks.before = () => gate;
  const a = s.ledger.anchor(randomRoot(), 1, manifestCid('a'));
  await until(t, () => s.journaled.length === 2, 'the first anchor to hold the lock');
  const controller = new AbortController();
  const rootB = randomRoot();
  const b = s.ledger.anchor(rootB, 1, manifestCid('b'), { signal: controller.signal });
  await until(t, async () => (s.chain.faults.calls.get('eth_estimateGas') ?? 0) >= 3, 'the second anchor to wait for the lock');
  controller.abort();
  await rejectsCode(t, b, 'VLM_CHAIN_ABORTED', 'unavailable');
  s.hooks.before = undefined;
  release();
  await a;
  await s.ledger.anchor(randomRoot(), 1, manifestCid('c'));
  t.equal(s.journaled.length, 3, 'deploy, a and c were signed; the aborted b never was');
  t.equal(await s.ledger.anchoredAt(rootB), undefined, 'b was not anchored');

  await rejectsCode(t, s.ledger.anchor(randomRoot(), 1, manifestCid('d'), { signal: AbortSignal.abort() }), 'VLM_CHAIN_ABORTED');
});

t.test('close: pending anchors reject with VLM_CHAIN_CLOSED, later calls too', async (t) => {
  const s = await setup(t, { automine: false });
  const pending = s.ledger.anchor(randomRoot(), 1, manifestCid('pending'));
  await until(t, () => sentEvents(s.events).length === 2, 'the anchor to be broadcast');
  await s.ledger.close();
  await rejectsCode(t, pending, 'VLM_CHAIN_CLOSED');
  await rejectsCode(t, s.ledger.anchor(randomRoot(), 1, manifestCid('late')), 'VLM_CHAIN_CLOSED');
  await rejectsCode(t, s.ledger.ping(), 'VLM_CHAIN_CLOSED');
});

t.test('an account without ANCHORER_ROLE: VLM_CHAIN_NOT_ANCHORER, nothing sent', async (t) => {
  const s = await setup(t);
  const outsider = Wallet.createRandom();
  await s.chain.fund(outsider.address);
  const events: SenderEvent[] = [];
  const sender = new Sender({ rpc: s.chain.rpc, wallet: outsider, chainId: 31337, confirmations: 1, pollIntervalMs: 5, replaceAfterMs: 60_000, retry: RETRY, onEvent: (e) => events.push(e) });
  const ledger = createContractLedger({ kind: 'rpc', rpc: s.chain.rpc, sender, chainId: 31337, contract: s.contract, retry: RETRY });
  t.teardown(() => ledger.close());
  await rejectsCode(t, ledger.anchor(randomRoot(), 1, manifestCid('x')), 'VLM_CHAIN_NOT_ANCHORER', 'fault');
  t.equal(events.length, 0, 'no transaction');
});

t.test('argument checks', async (t) => {
  const s = await setup(t);
  await rejectsCode(t, s.ledger.anchor(new Uint8Array(31), 1, 'c'), 'VLM_CHAIN_ANCHOR_BAD_ROOT', 'invalid');
  await rejectsCode(t, s.ledger.anchor(new Uint8Array(32), 1, 'c'), 'VLM_CHAIN_ANCHOR_BAD_ROOT', 'invalid');
  await rejectsCode(t, s.ledger.anchor(randomRoot(), 0, 'c'), 'VLM_CHAIN_ANCHOR_BAD_LEAF_COUNT', 'invalid');
  await rejectsCode(t, s.ledger.anchor(randomRoot(), 2 ** 32, 'c'), 'VLM_CHAIN_ANCHOR_BAD_LEAF_COUNT', 'invalid');
  await rejectsCode(t, s.ledger.anchor(randomRoot(), 1, ''), 'VLM_CHAIN_ANCHOR_BAD_MANIFEST', 'invalid');
  await rejectsCode(t, s.ledger.verifyLeaf(randomRoot(), new Uint8Array(3), []), 'VLM_CHAIN_MERKLE_BAD_NODE', 'invalid');
  await rejectsCode(t, s.ledger.anchoredAt(new Uint8Array(2)), 'VLM_CHAIN_ANCHOR_BAD_ROOT', 'invalid');
  t.equal(sentEvents(s.events).length, 1, 'only the deployment was sent');
});
