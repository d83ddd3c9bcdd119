/**
 * Chain error catalogue. Like storage, the chain layer never speaks OperationOutcome: it raises
 * a ChainError with a stable `code` (`VLM_CHAIN_<AREA>_<PROBLEM>`) and a `category`, and the FHIR
 * layer maps category → issue code → HTTP status. Tests assert codes, never messages.
 *
 * Categories:
 *
 * - `invalid`: the caller passed something no chain call can accept (a 31-byte root, a wrong
 *   chain id in the configuration), or the consent registry refused a write for a reason of
 *   its own (`VLM_CONSENT_*`: a consent locked by its patient, an unapproved actor, a used
 *   nonce…), which retrying will not change;
 * - `unavailable`: the chain did not answer (connection refused, timeout, HTTP 5xx) after the
 *   configured retries, or the caller aborted; retrying later may succeed;
 * - `conflict`: the chain's state disagrees with what was sent (a nonce already used);
 * - `not-found`: something asked for does not exist on chain;
 * - `fault`: the chain answered but something is wrong that retrying will not fix (the contract
 *   is missing at the configured address, a transaction reverted, the embedded chain's replay
 *   diverged from its log).
 */

export type ChainErrorCategory = 'invalid' | 'unavailable' | 'conflict' | 'fault' | 'not-found';

/** Every code this layer raises, so a typo in a `chainError(...)` call is a type error. */
export type ChainErrorCode =
  // Arguments (leaf.ts, merkle.ts, ledger calls)
  | 'VLM_CHAIN_LEAF_BAD_KEY'
  | 'VLM_CHAIN_LEAF_BAD_SALT'
  | 'VLM_CHAIN_LEAF_BAD_VERSION'
  | 'VLM_CHAIN_LEAF_BAD_ID'
  | 'VLM_CHAIN_LEAF_BAD_CID'
  | 'VLM_CHAIN_LEAF_BAD_CONTENT'
  | 'VLM_CHAIN_LEAF_BAD_PART'
  | 'VLM_CHAIN_MERKLE_EMPTY'
  | 'VLM_CHAIN_MERKLE_BAD_NODE'
  | 'VLM_CHAIN_MERKLE_BAD_INDEX'
  | 'VLM_CHAIN_BAD_HEX'
  | 'VLM_CHAIN_ANCHOR_BAD_ROOT'
  | 'VLM_CHAIN_ANCHOR_BAD_LEAF_COUNT'
  | 'VLM_CHAIN_ANCHOR_BAD_MANIFEST'
  | 'VLM_CHAIN_BAD_OPTION'
  // Talking to the chain (rpc.ts, sender.ts)
  | 'VLM_CHAIN_UNAVAILABLE'
  | 'VLM_CHAIN_ABORTED'
  | 'VLM_CHAIN_CLOSED'
  | 'VLM_CHAIN_RPC_ERROR'
  | 'VLM_CHAIN_NONCE_TOO_LOW'
  | 'VLM_CHAIN_NONCE_TOO_HIGH'
  | 'VLM_CHAIN_TX_KNOWN'
  | 'VLM_CHAIN_TX_UNDERPRICED'
  | 'VLM_CHAIN_INSUFFICIENT_FUNDS'
  | 'VLM_CHAIN_REVERTED'
  | 'VLM_CHAIN_NOT_ANCHORER'
  | 'VLM_CHAIN_BAD_RECEIPT'
  // Opening a ledger (rpc-chain.ts, embedded-chain.ts)
  | 'VLM_CHAIN_WRONG_CHAIN'
  | 'VLM_CHAIN_CONTRACT_MISSING'
  | 'VLM_CHAIN_BAD_KEY'
  | 'VLM_CHAIN_LOG_CORRUPT'
  | 'VLM_CHAIN_LOG_WRITE'
  | 'VLM_CHAIN_REPLAY_MISMATCH'
  | 'VLM_CHAIN_START_FAILED'
  // The consent registry (consent-registry.ts, consent-ledger.ts): its custom errors, and
  // arguments no call of it can accept.
  | 'VLM_CONSENT_BAD_KEY'
  | 'VLM_CONSENT_BAD_RULE'
  | 'VLM_CONSENT_LIMIT'
  | 'VLM_CONSENT_LOCKED'
  | 'VLM_CONSENT_MODEL_CHANGE'
  | 'VLM_CONSENT_PATIENT_MISMATCH'
  | 'VLM_CONSENT_UNKNOWN'
  | 'VLM_CONSENT_BAD_SIGNATURE'
  | 'VLM_CONSENT_EXPIRED'
  | 'VLM_CONSENT_BAD_NONCE'
  | 'VLM_CONSENT_NOT_AUTHORIZED';

export class ChainError extends Error {
  override readonly name = 'ChainError';
  constructor(
    readonly code: ChainErrorCode,
    readonly category: ChainErrorCategory,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Raise a coded chain error in one line: `throw chainError('VLM_CHAIN_UNAVAILABLE', 'unavailable', '...')`. */
export function chainError(code: ChainErrorCode, category: ChainErrorCategory, message: string, cause?: unknown): ChainError {
  return new ChainError(code, category, message, cause === undefined ? undefined : { cause });
}

/** Whether `err` is a ChainError (with `code`, if given). */
export function isChainError(err: unknown, code?: ChainErrorCode): err is ChainError {
  return err instanceof ChainError && (code === undefined || err.code === code);
}
