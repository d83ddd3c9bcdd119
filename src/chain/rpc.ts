/**
 * The one place JSON-RPC calls are made and their failures classified. Both ledgers talk to
 * their chain through an ethers `JsonRpcApiProvider` (`JsonRpcProvider` over HTTP, or
 * `BrowserProvider` over the in-process EDR chain's EIP-1193 provider), but only for raw
 * JSON-RPC requests (see `Rpc`): the sender signs and tracks its own transactions, so none of
 * ethers' higher-level machinery (nonce guessing, receipt caching, polling) is involved.
 *
 * Every failure becomes a ChainError:
 *
 * - the node could not be reached, timed out or answered HTTP 5xx/429 → `VLM_CHAIN_UNAVAILABLE`
 *   ('unavailable'): retrying may help (see `retrying`);
 * - the node refused a transaction for its nonce or price → `VLM_CHAIN_NONCE_TOO_LOW`,
 *   `VLM_CHAIN_NONCE_TOO_HIGH`, `VLM_CHAIN_TX_KNOWN`, `VLM_CHAIN_TX_UNDERPRICED` ('conflict'):
 *   the sender resolves these itself;
 * - `VLM_CHAIN_INSUFFICIENT_FUNDS` and `VLM_CHAIN_REVERTED` (revert data in `revertDataOf`) and
 *   any other JSON-RPC error (`VLM_CHAIN_RPC_ERROR`) are faults.
 *
 * Messages differ between Geth, Besu, Nethermind and EDR; the patterns below are the common
 * ones (https://github.com/ethereum/go-ethereum/blob/master/core/txpool/errors.go).
 */
import type { JsonRpcApiProvider, JsonRpcError, JsonRpcResult } from 'ethers';
import { chainError, isChainError, type ChainError } from './errors.ts';

/** A JSON-RPC error object as a node sent it. */
interface NodeError {
  code?: number;
  message: string;
  data?: unknown;
}

/** Network-level error codes of Node's `http`/`net`/`undici` meaning "the node did not answer". */
const TRANSPORT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_CLOSED',
  // ethers: a timeout, a bad HTTP status (5xx, 429 after its own throttling), a dropped socket.
  'TIMEOUT',
  'SERVER_ERROR',
  'NETWORK_ERROR',
]);

/** Walks an error and its causes (ethers nests the node's error in `info.error` or `error`). */
function* chain(err: unknown): Generator<Record<string, unknown>> {
  const seen = new Set<unknown>();
  const queue: unknown[] = [err];
  while (queue.length > 0) {
    const e = queue.shift();
    if (e === null || typeof e !== 'object' || seen.has(e)) continue;
    seen.add(e);
    const record = e as Record<string, unknown>;
    yield record;
    const info = record.info as Record<string, unknown> | undefined;
    queue.push(record.error, info?.error, record.cause, record.data);
  }
}

/** The JSON-RPC error the node sent, if `err` carries one. */
function nodeErrorOf(err: unknown): NodeError | undefined {
  for (const e of chain(err)) {
    if (typeof e.message === 'string' && typeof e.code === 'number') return e as unknown as NodeError;
  }
  return undefined;
}

/** Revert data (`0x…` ABI-encoded custom error) carried by a failed call or estimate, if any. */
export function revertDataOf(err: unknown): string | undefined {
  for (const e of chain(err)) {
    const data = e.data;
    if (typeof data === 'string' && /^0x(?:[0-9a-fA-F]{2})*$/.test(data) && data.length >= 10) return data;
  }
  return undefined;
}

/** Whether `err` means the node did not answer (as opposed to answering with an error). */
function isTransport(err: unknown): boolean {
  for (const e of chain(err)) {
    if (typeof e.code === 'string' && TRANSPORT_CODES.has(e.code)) return true;
    // ethers' BrowserProvider after close, EDR after its connection closed, fetch failures.
    if (typeof e.message === 'string' && /provider destroyed|connection (?:is )?closed|fetch failed|socket hang up/i.test(e.message)) {
      return true;
    }
  }
  return false;
}

/** Classifies a failure of `method` into a ChainError (see the module comment). */
export function classifyRpcError(method: string, err: unknown): ChainError {
  if (isChainError(err)) return err;
  const node = nodeErrorOf(err);
  const text = node?.message ?? (err instanceof Error ? err.message : String(err));
  if (!node && isTransport(err)) {
    return chainError('VLM_CHAIN_UNAVAILABLE', 'unavailable', `the chain did not answer ${method}`, err);
  }
  if (/nonce.*too low|nonce has already been used|oldnonce/i.test(text)) {
    return chainError('VLM_CHAIN_NONCE_TOO_LOW', 'conflict', `${method}: nonce too low`, err);
  }
  if (/nonce.*too high|nonce gap/i.test(text)) {
    return chainError('VLM_CHAIN_NONCE_TOO_HIGH', 'conflict', `${method}: nonce too high`, err);
  }
  if (/already known|known transaction|already imported|already in (?:the )?(?:mem)?pool|transaction already exists/i.test(text)) {
    return chainError('VLM_CHAIN_TX_KNOWN', 'conflict', `${method}: transaction already known`, err);
  }
  if (/underpriced|replacement fee too low|gas price too low to replace/i.test(text)) {
    return chainError('VLM_CHAIN_TX_UNDERPRICED', 'conflict', `${method}: replacement underpriced`, err);
  }
  if (/insufficient funds|exceeds balance|sender doesn't have enough funds/i.test(text)) {
    return chainError('VLM_CHAIN_INSUFFICIENT_FUNDS', 'fault', `${method}: the sending account cannot pay for gas`, err);
  }
  if (/revert/i.test(text) || revertDataOf(err) !== undefined) {
    return chainError('VLM_CHAIN_REVERTED', 'fault', `${method}: execution reverted`, err);
  }
  return chainError('VLM_CHAIN_RPC_ERROR', 'fault', `${method} failed`, err);
}

/** How many times, and how patiently, a call that met `VLM_CHAIN_UNAVAILABLE` is retried. */
export interface RetryPolicy {
  /** Attempts in all (1 = no retry). */
  attempts: number;
  /** Delay before the first retry; doubled each time (with ±25 % jitter). */
  baseDelayMs: number;
  /** Ceiling of the delay. */
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseDelayMs: 200, maxDelayMs: 5_000 };

/** Raises VLM_CHAIN_ABORTED with the signal's reason if `signal` has been aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw chainError('VLM_CHAIN_ABORTED', 'unavailable', 'aborted', signal.reason);
}

/** Waits `ms`, or raises VLM_CHAIN_ABORTED as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  throwIfAborted(signal);
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(chainError('VLM_CHAIN_ABORTED', 'unavailable', 'aborted', signal?.reason));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Settles like `promise`, or raises VLM_CHAIN_ABORTED as soon as `signal` aborts. */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  throwIfAborted(signal);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(chainError('VLM_CHAIN_ABORTED', 'unavailable', 'aborted', signal.reason));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/**
 * Runs `fn`, retrying with exponential backoff while it fails with VLM_CHAIN_UNAVAILABLE, at most
 * `policy.attempts` times in all; then raises the last error. Raises VLM_CHAIN_ABORTED when
 * `signal` aborts.
 */
export async function retrying<T>(policy: RetryPolicy, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    throwIfAborted(signal);
    try {
      return await abortable(fn(), signal);
    } catch (err) {
      if (!isChainError(err, 'VLM_CHAIN_UNAVAILABLE') || attempt >= policy.attempts) throw err;
      const delay = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      await sleep(delay * (0.75 + Math.random() * 0.5), signal);
    }
  }
}

/** A transaction receipt as JSON-RPC returns it (the fields Vellum reads). */
export interface RpcReceipt {
  transactionHash: string;
  blockHash: string;
  blockNumber: string;
  status?: string;
  contractAddress?: string | null;
  logs: RpcLog[];
}

/** A log entry as JSON-RPC returns it. */
export interface RpcLog {
  address: string;
  topics: string[];
  data: string;
  blockNumber: string;
  blockHash: string;
  transactionHash: string;
  logIndex: string;
  removed?: boolean;
  /** Some nodes (Geth ≥ 1.14, EDR) add the block's timestamp. */
  blockTimestamp?: string;
}

/** A block header as JSON-RPC returns it (the fields Vellum reads). */
export interface RpcBlock {
  number: string;
  hash: string;
  timestamp: string;
  baseFeePerGas?: string | null;
}

/** Number of a JSON-RPC quantity (`0x…`). */
export function quantity(hex: string | null | undefined): number {
  if (typeof hex !== 'string' || !/^0x[0-9a-fA-F]+$/.test(hex)) {
    throw chainError('VLM_CHAIN_BAD_RECEIPT', 'fault', 'the node returned a malformed quantity');
  }
  const n = Number.parseInt(hex, 16);
  if (!Number.isSafeInteger(n)) throw chainError('VLM_CHAIN_BAD_RECEIPT', 'fault', 'the node returned an out-of-range quantity');
  return n;
}

/** JSON-RPC quantity of a number or bigint. */
export function toQuantity(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}

/**
 * Raw JSON-RPC over an ethers provider, with failures classified. The ledger and the sender
 * share one.
 *
 * Requests go through the provider's `_send` (one payload, straight to the transport) rather
 * than `send`, which queues each request behind a `setTimeout` to batch it: even with
 * `batchStallTime: 0` that timer costs ~1 ms per call, which was most of the time of an
 * in-process anchor (five calls) and of a replay at start (three calls per transaction).
 * Errors still go through the provider's own `getRpcError`, so they have ethers' usual shape.
 */
export class Rpc {
  readonly #provider: JsonRpcApiProvider;
  #nextId = 1;

  constructor(provider: JsonRpcApiProvider) {
    this.#provider = provider;
  }

  /** Calls `method`. Raises a classified ChainError (see the module comment). */
  async request<T>(method: string, params: readonly unknown[] = []): Promise<T> {
    const payload = { jsonrpc: '2.0' as const, id: this.#nextId++, method, params: params as unknown[] };
    let response: JsonRpcResult | JsonRpcError | undefined;
    try {
      [response] = await this.#provider._send(payload);
    } catch (err) {
      throw classifyRpcError(method, err);
    }
    if (response === undefined) throw chainError('VLM_CHAIN_RPC_ERROR', 'fault', `${method}: empty response`);
    if ('error' in response) throw classifyRpcError(method, this.#provider.getRpcError(payload, response));
    return response.result as T;
  }

  blockNumber(): Promise<number> {
    return this.request<string>('eth_blockNumber').then(quantity);
  }

  block(tag: number | 'latest'): Promise<RpcBlock | null> {
    return this.request<RpcBlock | null>('eth_getBlockByNumber', [typeof tag === 'number' ? toQuantity(tag) : tag, false]);
  }

  receipt(hash: string): Promise<RpcReceipt | null> {
    return this.request<RpcReceipt | null>('eth_getTransactionReceipt', [hash]);
  }

  code(address: string): Promise<string> {
    return this.request<string>('eth_getCode', [address, 'latest']);
  }

  call(to: string, data: string): Promise<string> {
    return this.request<string>('eth_call', [{ to, data }, 'latest']);
  }

  nonce(address: string, tag: 'latest' | 'pending'): Promise<number> {
    return this.request<string>('eth_getTransactionCount', [address, tag]).then(quantity);
  }

  destroy(): void {
    this.#provider.destroy();
  }
}
