/**
 * The ledger: what the rest of Vellum knows of the chain. Two implementations share one
 * contract client (`contract-ledger.ts`) and one sender (`sender.ts`):
 *
 * - `openEmbeddedLedger` (`embedded-chain.ts`): an in-process Hardhat/EDR chain kept across
 *   restarts by replaying its transaction log — a single-node convenience, trusted only as far
 *   as the server itself;
 * - `openRpcLedger` (`rpc-chain.ts`): any Ethereum JSON-RPC node (Besu, Geth, `hardhat node`),
 *   which is where third-party trust comes from.
 *
 * Every method raises ChainError (`errors.ts`); see each for its codes.
 */

/** Where and how a batch root was anchored. */
export interface AnchorReceipt {
  /** The registry's sequential batch id (from 1). */
  batchId: number;
  /** The Merkle root, `0x`-prefixed lowercase hex. */
  root: string;
  leafCount: number;
  /** IPFS CID of the batch manifest, as given to `anchor`. */
  manifestCid: string;
  txHash: string;
  blockNumber: number;
  /** Seconds since the epoch. */
  blockTimestamp: number;
  chainId: number;
  /** Registry address, checksummed. */
  contract: string;
}

export interface Ledger {
  readonly chainId: number;
  /** Registry address, checksummed. */
  readonly contract: string;
  readonly kind: 'embedded' | 'rpc';
  /**
   * Anchor a batch root and wait for the configured confirmations. Idempotent: a root already
   * anchored returns its existing receipt, never a second transaction.
   *
   * Raises VLM_CHAIN_ANCHOR_BAD_ROOT / _BAD_LEAF_COUNT / _BAD_MANIFEST ('invalid'),
   * VLM_CHAIN_UNAVAILABLE or VLM_CHAIN_ABORTED ('unavailable'; retry later),
   * VLM_CHAIN_CLOSED, VLM_CHAIN_CONTRACT_MISSING, VLM_CHAIN_NOT_ANCHORER,
   * VLM_CHAIN_INSUFFICIENT_FUNDS, VLM_CHAIN_REVERTED ('fault').
   */
  anchor(root: Uint8Array, leafCount: number, manifestCid: string, options?: { signal?: AbortSignal }): Promise<AnchorReceipt>;
  /**
   * Ask the CONTRACT (view call) whether/when a root was anchored; undefined if never.
   * Raises VLM_CHAIN_ANCHOR_BAD_ROOT, VLM_CHAIN_UNAVAILABLE, VLM_CHAIN_CONTRACT_MISSING.
   */
  anchoredAt(root: Uint8Array): Promise<{ batchId: number; timestamp: number; blockNumber: number } | undefined>;
  /**
   * The contract's `verifyLeaf`: true only if `root` is anchored and `proof` leads from `leaf`
   * to it. Raises VLM_CHAIN_MERKLE_BAD_NODE (a node is not 32 bytes), VLM_CHAIN_UNAVAILABLE,
   * VLM_CHAIN_CONTRACT_MISSING.
   */
  verifyLeaf(root: Uint8Array, leaf: Uint8Array, proof: Uint8Array[]): Promise<boolean>;
  /**
   * Every BatchAnchored event from block `fromBlock` (default 0) on, in chain order (for
   * rebuilding the index from the log). Raises VLM_CHAIN_UNAVAILABLE.
   */
  batches(fromBlock?: number): Promise<AnchorReceipt[]>;
  /**
   * Resolves if the chain answers and the registry is deployed. Raises VLM_CHAIN_UNAVAILABLE
   * ('unavailable') when the chain does not answer, VLM_CHAIN_CONTRACT_MISSING ('fault') when
   * the registry is not there (a reset chain), VLM_CHAIN_CLOSED after `close`.
   */
  ping(): Promise<void>;
  /** Stops the sender (pending anchors reject with VLM_CHAIN_CLOSED) and releases the chain. */
  close(): Promise<void>;
}
