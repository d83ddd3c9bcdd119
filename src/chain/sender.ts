/**
 * The sender: the only code that sends transactions from an account. There is exactly one
 * Sender per account, and it owns the account's nonce.
 *
 * Why not ethers' `contract.fn()`: it asks the node for a nonce per transaction, so concurrent
 * sends race for the same nonce, and with automine a transaction that arrives ahead of its nonce
 * is rejected outright. Here transactions are **signed locally** (ethers `Wallet`) with nonces
 * handed out one by one under a FIFO lock and broadcast with `eth_sendRawTransaction` in nonce
 * order; waiting for receipts happens outside the lock, so many transactions can be in flight.
 *
 * What a send does (`send(job)`):
 *
 * 1. `job.lookup()` — has the job's effect already happened on chain (for an anchor: is the root
 *    anchored, asked of the contract)? Then its existing result is returned and nothing is sent.
 *    This is what makes a job idempotent across retries, restarts and replacement races.
 *    Concurrent sends of the same `job.key` share one run.
 * 2. `eth_estimateGas` (a revert here is mapped by `job.revertError`, after a second lookup in
 *    case someone else just did the same thing), fee data, then under the lock: nonce, sign,
 *    `journal.beforeBroadcast` (the embedded chain's durable log), broadcast.
 * 3. Broadcast failures: `VLM_CHAIN_UNAVAILABLE` is retried with exponential backoff (the same raw
 *    transaction, so a retry that reaches a node which already has it is harmless: "already
 *    known", or "nonce too low" with our own hash mined); "nonce too low/too high" or
 *    "underpriced" for a new transaction mean the cached nonce is stale: the pending nonce is
 *    fetched again, the job looked up again, and the transaction re-signed.
 * 4. Waiting: receipts of every transaction sent for the job are polled. One not mined within
 *    `replaceAfterMs` is **replaced**: same nonce, fees bumped by ≥ 12.5 % (the minimum Geth's
 *    and Besu's pools accept is 10 %), after another lookup. Whichever of the original and its
 *    replacements is mined is the result — if the original wins the race, the replacement is
 *    refused ("nonce too low") and the original's receipt is found. If the nonce was used by a
 *    transaction that is not ours, the job starts again from step 1.
 * 5. Confirmations: the result is returned once the head is `confirmations − 1` blocks past the
 *    receipt's block and the receipt is still in the same block (else it was reorganised away,
 *    and the job goes back to waiting).
 *
 * A reverted transaction (status 0) is looked up once more (an identical anchor by another
 * sender wins the race, and its receipt is returned) and otherwise raises VLM_CHAIN_REVERTED.
 *
 * Abort: each caller's `signal` rejects that caller's promise (VLM_CHAIN_ABORTED). A job whose
 * callers have all gone is dropped if it has not been signed yet; once broadcast it is followed
 * to the end so the nonce bookkeeping stays right (its result is then discarded, and a later
 * send of the same key finds it by lookup). If the chain stays unreachable past the retry
 * policy, the caller gets VLM_CHAIN_UNAVAILABLE; transactions already broadcast are remembered
 * per key, and a later send of the same key adopts them instead of signing a new one.
 */
import { keccak256, type BaseWallet, type TransactionRequest } from 'ethers';
import { ChainError, chainError, isChainError } from './errors.ts';
import {
  abortable,
  quantity,
  retrying,
  revertDataOf,
  sleep,
  type RetryPolicy,
  type Rpc,
  type RpcReceipt,
} from './rpc.ts';

/** A signed transaction, as the journal sees it. */
export interface SignedTransaction {
  raw: string;
  hash: string;
  nonce: number;
  /** The job's key (`deploy`, or the root for an anchor). */
  key: string;
}

/**
 * Where signed transactions are recorded before they are broadcast (the embedded chain's
 * transaction log). Calls are never concurrent and come in broadcast order.
 */
export interface SenderJournal {
  /** `tx` is about to be broadcast; resolve once it is durably recorded. */
  beforeBroadcast(tx: SignedTransaction): Promise<void>;
  /**
   * The node refused `tx` outright (it will never be mined). Not called when the node could
   * not be reached, since the transaction may then have arrived.
   */
  refused(tx: SignedTransaction): Promise<void>;
}

/** What the sender did, for logs and metrics. */
export type SenderEvent =
  | { type: 'sent'; key: string; hash: string; nonce: number }
  | { type: 'replaced'; key: string; hash: string; replaced: string; nonce: number }
  | { type: 'mined'; key: string; hash: string; blockNumber: number; status: number }
  | { type: 'retry'; attempt: number; code: string }
  | { type: 'nonce-reset'; key: string; code: string };

export interface SenderOptions {
  rpc: Rpc;
  /** The account's key; signs every transaction locally. */
  wallet: BaseWallet;
  chainId: number;
  /** Blocks a receipt must have (1 = mined). */
  confirmations: number;
  /** How often receipts and the head are polled. */
  pollIntervalMs: number;
  /** A transaction not mined after this long is replaced with higher fees. */
  replaceAfterMs: number;
  retry: RetryPolicy;
  /** Never offer more than this per gas (wei); replacements stop at it. */
  maxFeePerGas?: bigint;
  journal?: SenderJournal;
  onEvent?: (event: SenderEvent) => void;
}

/** Where a job's effect landed on chain. */
export interface Landed<R> {
  result: R;
  txHash: string;
  blockNumber: number;
  blockHash: string;
}

/** One thing to do by transaction. */
export interface SendJob<R> {
  /** Identity of the effect: concurrent sends with the same key share one run. */
  key: string;
  /** Recipient; null deploys `data`. */
  to: string | null;
  data: string;
  /** The effect, if it is already on chain (checked before every send and replacement). */
  lookup(): Promise<Landed<R> | undefined>;
  /** The result of a successful (status 1) receipt. */
  fromReceipt(receipt: RpcReceipt): Promise<R>;
  /** The error for revert data met while estimating gas, if the job knows it. */
  revertError?(data: string | undefined, cause: unknown): ChainError | undefined;
}

type Fees = { type: 2; maxFeePerGas: bigint; maxPriorityFeePerGas: bigint } | { type: 0; gasPrice: bigint };

interface Attempt {
  raw: string;
  hash: string;
  fees: Fees;
}

interface InFlight {
  nonce: number;
  gasLimit: bigint;
  /** Every transaction broadcast for this nonce, oldest first. */
  sends: Attempt[];
  /** The highest fees offered, broadcast or refused (the floor of the next bump). */
  lastFees: Fees;
  sentAt: number;
}

interface Run {
  waiters: number;
}

type Outcome = { kind: 'mined'; receipt: RpcReceipt } | { kind: 'stuck' } | { kind: 'lost' };

/** Fee bump for replacements: +12.5 %, rounded up. */
const bump = (value: bigint): bigint => (value * 1125n + 999n) / 1000n;
const maxOf = (a: bigint, b: bigint): bigint => (a > b ? a : b);
const minOf = (a: bigint, b: bigint): bigint => (a < b ? a : b);
const sameFees = (a: Fees, b: Fees): boolean =>
  a.type === 0 && b.type === 0
    ? a.gasPrice === b.gasPrice
    : a.type === 2 && b.type === 2 && a.maxFeePerGas === b.maxFeePerGas && a.maxPriorityFeePerGas === b.maxPriorityFeePerGas;
/** Gas limit = estimate × 1.25: headroom for state that changes between estimate and inclusion. */
const GAS_HEADROOM_PERCENT = 125n;
/** Fee data is reused this long (one fetch per burst, not per transaction). */
const FEE_TTL_MS = 1_000;
/** How often one send re-signs after nonce conflicts before giving up. */
const MAX_NONCE_CONFLICTS = 5;

export class Sender {
  readonly address: string;
  readonly #o: SenderOptions;
  readonly #closing = new AbortController();
  /** FIFO lock around nonce → sign → journal → broadcast. */
  #tail: Promise<unknown> = Promise.resolve();
  /** The next nonce to use; undefined = ask the node (`pending`). */
  #nonce: number | undefined;
  #fees: { at: number; fees: Promise<Fees> } | undefined;
  readonly #runs = new Map<string, { run: Run; promise: Promise<unknown> }>();
  /** Broadcast transactions whose job gave up (chain unreachable), by key. */
  readonly #orphans = new Map<string, InFlight>();

  constructor(options: SenderOptions) {
    if (!Number.isInteger(options.confirmations) || options.confirmations < 1) {
      throw chainError('VLM_CHAIN_BAD_OPTION', 'invalid', 'confirmations must be a whole number ≥ 1');
    }
    this.#o = options;
    this.address = options.wallet.address;
  }

  /**
   * Performs `job` once (see the module comment) and resolves with its result after the
   * configured confirmations. Raises VLM_CHAIN_ABORTED (signal), VLM_CHAIN_CLOSED (sender
   * closed), VLM_CHAIN_UNAVAILABLE (chain unreachable after retries), VLM_CHAIN_REVERTED,
   * VLM_CHAIN_INSUFFICIENT_FUNDS, or the job's own revert errors.
   */
  send<R>(job: SendJob<R>, options: { signal?: AbortSignal } = {}): Promise<R> {
    if (this.#closing.signal.aborted) return Promise.reject(this.#closedError());
    let entry = this.#runs.get(job.key);
    if (!entry) {
      const run: Run = { waiters: 0 };
      const promise = this.#drive(job, run).finally(() => this.#runs.delete(job.key));
      promise.catch(() => {}); // observed by the waiters; a run nobody waits for must not crash the process
      entry = { run, promise };
      this.#runs.set(job.key, entry);
    }
    const { run, promise } = entry;
    run.waiters++;
    const signal = options.signal ? AbortSignal.any([options.signal, this.#closing.signal]) : this.#closing.signal;
    return abortable(promise as Promise<R>, signal)
      .catch((err: unknown) => {
        throw this.#closing.signal.aborted && isChainError(err, 'VLM_CHAIN_ABORTED') ? this.#closedError() : err;
      })
      .finally(() => {
        run.waiters--;
      });
  }

  /** Stops: pending sends reject with VLM_CHAIN_CLOSED; resolves once no broadcast is under way. */
  async close(): Promise<void> {
    if (!this.#closing.signal.aborted) this.#closing.abort(this.#closedError());
    await this.#tail.catch(() => {});
  }

  #closedError(): ChainError {
    return chainError('VLM_CHAIN_CLOSED', 'unavailable', 'the ledger is closed');
  }

  #emit(event: SenderEvent): void {
    try {
      this.#o.onEvent?.(event);
    } catch {
      // an observer's failure is not the sender's
    }
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(() => {
      if (this.#closing.signal.aborted) throw this.#closedError();
      return fn();
    });
    this.#tail = result.catch(() => {});
    return result;
  }

  #retrying<T>(fn: () => Promise<T>): Promise<T> {
    return retrying(this.#o.retry, fn, this.#closing.signal);
  }

  async #drive<R>(job: SendJob<R>, run: Run): Promise<R> {
    let inflight: InFlight | undefined;
    for (;;) {
      let landed: Landed<R> | undefined;
      if (!inflight) {
        const step = await this.#start(job, run);
        if ('landed' in step) landed = step.landed;
        else inflight = step.inflight;
      }
      while (!landed && inflight) {
        const current: InFlight = inflight;
        let step: Landed<R> | 'lost' | undefined;
        try {
          step = await this.#follow(job, current);
        } catch (err) {
          // Broadcast, then lost sight of: remember it, so the next send of this key adopts it.
          if (isChainError(err, 'VLM_CHAIN_UNAVAILABLE')) this.#orphans.set(job.key, current);
          throw err;
        }
        if (step === 'lost') inflight = undefined; // our nonce went to someone else's transaction: start over
        else landed = step;
      }
      if (!landed) continue;
      if (await this.#confirmed(landed)) return landed.result;
      // The block was reorganised away: wait for the transaction again (or start over).
    }
  }

  /**
   * One round of following `inflight`: wait for a receipt (→ where the job landed), or replace
   * the transaction when stuck (→ undefined, or where the job landed meanwhile), or report that
   * its nonce went to a transaction that is not ours (→ 'lost').
   */
  async #follow<R>(job: SendJob<R>, inflight: InFlight): Promise<Landed<R> | 'lost' | undefined> {
    const outcome = await this.#awaitMining(inflight);
    if (outcome.kind === 'stuck') return this.#exclusive(() => this.#replace(job, inflight));
    if (outcome.kind === 'lost') return 'lost';
    const receipt = outcome.receipt;
    const status = receipt.status === undefined ? 1 : quantity(receipt.status);
    this.#emit({ type: 'mined', key: job.key, hash: receipt.transactionHash, blockNumber: quantity(receipt.blockNumber), status });
    if (status === 1) {
      return {
        result: await this.#retrying(() => job.fromReceipt(receipt)),
        txHash: receipt.transactionHash,
        blockNumber: quantity(receipt.blockNumber),
        blockHash: receipt.blockHash,
      };
    }
    // Reverted: an identical effect by someone else may have won the race.
    const landed = await this.#retrying(() => job.lookup());
    if (!landed) throw chainError('VLM_CHAIN_REVERTED', 'fault', `transaction ${receipt.transactionHash} reverted`);
    return landed;
  }

  /** Lookup, estimate, then (locked) sign and broadcast a new transaction for `job`. */
  async #start<R>(job: SendJob<R>, run: Run): Promise<{ landed: Landed<R> } | { inflight: InFlight }> {
    const orphan = this.#orphans.get(job.key);
    if (orphan) {
      this.#orphans.delete(job.key);
      const known = await Promise.all(
        orphan.sends.map((a) => this.#retrying(() => this.#o.rpc.request<unknown>('eth_getTransactionByHash', [a.hash]))),
      );
      if (known.some((tx) => tx !== null)) return { inflight: { ...orphan, sentAt: Date.now() } };
    }

    const landed = await this.#retrying(() => job.lookup());
    if (landed) return { landed };
    if (run.waiters === 0) throw chainError('VLM_CHAIN_ABORTED', 'unavailable', 'every caller gave up before the transaction was signed');

    let gasLimit: bigint;
    try {
      gasLimit = await this.#estimate(job);
    } catch (err) {
      if (!isChainError(err, 'VLM_CHAIN_REVERTED')) throw err;
      const after = await this.#retrying(() => job.lookup());
      if (after) return { landed: after };
      throw job.revertError?.(revertDataOf(err), err) ?? err;
    }
    const fees = await this.#currentFees(false);

    return this.#exclusive(async () => {
      for (let conflicts = 0; ; conflicts++) {
        if (run.waiters === 0) throw chainError('VLM_CHAIN_ABORTED', 'unavailable', 'every caller gave up before the transaction was signed');
        this.#nonce ??= await this.#retrying(() => this.#o.rpc.nonce(this.address, 'pending'));
        const nonce = this.#nonce;
        const attempt = await this.#sign(job, nonce, gasLimit, fees);
        try {
          await this.#broadcast(job.key, nonce, attempt);
        } catch (err) {
          this.#nonce = undefined;
          const conflict = isChainError(err) && err.category === 'conflict';
          if (conflict) {
            this.#emit({ type: 'nonce-reset', key: job.key, code: (err as ChainError).code });
            if (conflicts < MAX_NONCE_CONFLICTS) {
              const now = await this.#retrying(() => job.lookup());
              if (now) return { landed: now };
              continue;
            }
          }
          if (!isChainError(err, 'VLM_CHAIN_UNAVAILABLE')) throw err;
          this.#orphans.set(job.key, { nonce, gasLimit, sends: [attempt], lastFees: fees, sentAt: Date.now() });
          throw err;
        }
        this.#nonce = nonce + 1;
        this.#emit({ type: 'sent', key: job.key, hash: attempt.hash, nonce });
        return { inflight: { nonce, gasLimit, sends: [attempt], lastFees: fees, sentAt: Date.now() } };
      }
    });
  }

  async #estimate(job: SendJob<unknown>): Promise<bigint> {
    const request: Record<string, string> = { from: this.address, data: job.data };
    if (job.to !== null) request.to = job.to;
    // Against the latest block, not the pending one (EDR's default): a transaction of someone
    // else's still in the pool must not make ours fail here; if both are mined, ours reverts and
    // the lookup that follows returns theirs.
    const estimate = BigInt(await this.#retrying(() => this.#o.rpc.request<string>('eth_estimateGas', [request, 'latest'])));
    return (estimate * GAS_HEADROOM_PERCENT + 99n) / 100n;
  }

  /** Current fee data, fetched at most once per FEE_TTL_MS (concurrent callers share one fetch). */
  #currentFees(fresh: boolean): Promise<Fees> {
    if (!fresh && this.#fees && Date.now() - this.#fees.at < FEE_TTL_MS) return this.#fees.fees;
    const fees = this.#fetchFees();
    this.#fees = { at: Date.now(), fees };
    fees.catch(() => {
      if (this.#fees?.fees === fees) this.#fees = undefined;
    });
    return fees;
  }

  async #fetchFees(): Promise<Fees> {
    const rpc = this.#o.rpc;
    const block = await this.#retrying(() => rpc.block('latest'));
    let fees: Fees;
    if (block?.baseFeePerGas != null) {
      const baseFee = BigInt(block.baseFeePerGas);
      let tip: bigint;
      try {
        tip = BigInt(await this.#retrying(() => rpc.request<string>('eth_maxPriorityFeePerGas')));
      } catch (err) {
        if (!isChainError(err, 'VLM_CHAIN_RPC_ERROR')) throw err;
        tip = 1_000_000_000n; // nodes without the method: 1 gwei, what Geth suggests on an idle chain
      }
      // Twice the base fee survives six full blocks of +12.5 % each before the tx is priced out.
      fees = { type: 2, maxFeePerGas: 2n * baseFee + tip, maxPriorityFeePerGas: tip };
    } else {
      fees = { type: 0, gasPrice: BigInt(await this.#retrying(() => rpc.request<string>('eth_gasPrice'))) };
    }
    return this.#capped(fees);
  }

  #capped(fees: Fees): Fees {
    const cap = this.#o.maxFeePerGas;
    if (cap === undefined) return fees;
    if (fees.type === 0) return { type: 0, gasPrice: minOf(fees.gasPrice, cap) };
    const maxFeePerGas = minOf(fees.maxFeePerGas, cap);
    return { type: 2, maxFeePerGas, maxPriorityFeePerGas: minOf(fees.maxPriorityFeePerGas, maxFeePerGas) };
  }

  async #sign(job: SendJob<unknown>, nonce: number, gasLimit: bigint, fees: Fees): Promise<Attempt> {
    const tx: TransactionRequest = { chainId: this.#o.chainId, nonce, to: job.to, data: job.data, value: 0n, gasLimit, ...fees };
    const raw = await this.#o.wallet.signTransaction(tx);
    return { raw, hash: keccak256(raw), fees };
  }

  /**
   * Records `attempt` in the journal and broadcasts it, retrying while the chain is unreachable.
   * A retry that finds the transaction already there ("already known", or "nonce too low" with
   * this very transaction known to the node) counts as sent.
   */
  async #broadcast(key: string, nonce: number, attempt: Attempt): Promise<void> {
    const signed: SignedTransaction = { raw: attempt.raw, hash: attempt.hash, nonce, key };
    await this.#o.journal?.beforeBroadcast(signed);
    const rpc = this.#o.rpc;
    for (let attemptNo = 1; ; attemptNo++) {
      try {
        await rpc.request<string>('eth_sendRawTransaction', [attempt.raw]);
        return;
      } catch (err) {
        if (isChainError(err, 'VLM_CHAIN_TX_KNOWN')) return;
        if (attemptNo > 1 && isChainError(err, 'VLM_CHAIN_NONCE_TOO_LOW')) {
          const known = await rpc.request<unknown>('eth_getTransactionByHash', [attempt.hash]).catch(() => null);
          if (known !== null) return;
        }
        if (isChainError(err, 'VLM_CHAIN_UNAVAILABLE') && attemptNo < this.#o.retry.attempts && !this.#closing.signal.aborted) {
          this.#emit({ type: 'retry', attempt: attemptNo, code: err.code });
          const delay = Math.min(this.#o.retry.maxDelayMs, this.#o.retry.baseDelayMs * 2 ** (attemptNo - 1));
          await sleep(delay * (0.75 + Math.random() * 0.5), this.#closing.signal).catch(() => {});
          continue;
        }
        if (!isChainError(err, 'VLM_CHAIN_UNAVAILABLE')) await this.#o.journal?.refused(signed);
        throw err;
      }
    }
  }

  /** Polls the receipts of `inflight`'s transactions until one is mined, or it is time to replace. */
  async #awaitMining(inflight: InFlight): Promise<Outcome> {
    const rpc = this.#o.rpc;
    const minedOne = async (): Promise<RpcReceipt | undefined> => {
      const receipts = await Promise.all(inflight.sends.map((a) => rpc.receipt(a.hash)));
      return receipts.find((r): r is RpcReceipt => r !== null && r.blockNumber != null);
    };
    let failures = 0;
    for (let first = true; ; first = false) {
      if (!first) await sleep(this.#o.pollIntervalMs, this.#closing.signal);
      try {
        const receipt = await minedOne();
        if (receipt) return { kind: 'mined', receipt };
        if (Date.now() - inflight.sentAt >= this.#o.replaceAfterMs) {
          if ((await rpc.nonce(this.address, 'latest')) > inflight.nonce) {
            const late = await minedOne();
            return late ? { kind: 'mined', receipt: late } : { kind: 'lost' };
          }
          return { kind: 'stuck' };
        }
        failures = 0;
      } catch (err) {
        if (!isChainError(err, 'VLM_CHAIN_UNAVAILABLE') || ++failures >= this.#o.retry.attempts) throw err;
        this.#emit({ type: 'retry', attempt: failures, code: err.code });
        await sleep(Math.min(this.#o.retry.maxDelayMs, this.#o.retry.baseDelayMs * 2 ** (failures - 1)), this.#closing.signal);
      }
    }
  }

  /**
   * Replaces `inflight`'s transaction (locked): looks the job up first — if the effect is on
   * chain, that is the result — then re-signs the same nonce with fees ≥ 12.5 % higher.
   */
  async #replace<R>(job: SendJob<R>, inflight: InFlight): Promise<Landed<R> | undefined> {
    const landed = await this.#retrying(() => job.lookup());
    if (landed) return landed;
    const market = await this.#currentFees(true);
    const last = inflight.lastFees;
    let fees: Fees;
    if (last.type === 2 && market.type === 2) {
      const maxPriorityFeePerGas = maxOf(bump(last.maxPriorityFeePerGas), market.maxPriorityFeePerGas);
      fees = { type: 2, maxPriorityFeePerGas, maxFeePerGas: maxOf(maxOf(bump(last.maxFeePerGas), market.maxFeePerGas), maxPriorityFeePerGas) };
    } else if (last.type === 0 && market.type === 0) {
      fees = { type: 0, gasPrice: maxOf(bump(last.gasPrice), market.gasPrice) };
    } else {
      fees = market; // the chain changed fee markets under us; a different type is a new price
    }
    const capped = this.#capped(fees);
    inflight.sentAt = Date.now(); // wait a full period before the next attempt, whatever happens now
    if (!sameFees(capped, fees)) return undefined; // at the fee cap: keep waiting for what was sent
    const attempt = await this.#sign(job, inflight.nonce, inflight.gasLimit, fees);
    inflight.lastFees = fees;
    try {
      await this.#broadcast(job.key, inflight.nonce, attempt);
    } catch (err) {
      // "nonce too low": one of ours (or someone else's) was mined meanwhile — the next poll
      // finds our receipt or reports the nonce lost. "underpriced": the next bump starts higher.
      if (isChainError(err) && err.category === 'conflict') return undefined;
      throw err;
    }
    const replaced = inflight.sends[inflight.sends.length - 1]!.hash;
    inflight.sends.push(attempt);
    this.#emit({ type: 'replaced', key: job.key, hash: attempt.hash, replaced, nonce: inflight.nonce });
    return undefined;
  }

  /**
   * Waits until `landed` has the configured confirmations; false if its block was reorganised
   * away meanwhile.
   */
  async #confirmed(landed: Landed<unknown>): Promise<boolean> {
    if (this.#o.confirmations <= 1) return true;
    const target = landed.blockNumber + this.#o.confirmations - 1;
    let failures = 0;
    for (;;) {
      try {
        if ((await this.#o.rpc.blockNumber()) >= target) {
          const receipt = await this.#o.rpc.receipt(landed.txHash);
          return receipt !== null && receipt.blockHash === landed.blockHash;
        }
        failures = 0;
      } catch (err) {
        if (!isChainError(err, 'VLM_CHAIN_UNAVAILABLE') || ++failures >= this.#o.retry.attempts) throw err;
        this.#emit({ type: 'retry', attempt: failures, code: err.code });
      }
      await sleep(this.#o.pollIntervalMs, this.#closing.signal);
    }
  }
}
