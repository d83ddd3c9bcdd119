/**
 * `src/chain` is everything Vellum does with an Ethereum-compatible chain: the leaf encoding
 * that turns a resource version into a Merkle leaf without revealing it (`leaf.ts`), the
 * OpenZeppelin-compatible Merkle trees whose roots are anchored (`merkle.ts`), the ethers
 * bindings of the contracts in `contracts/`, the anchor batcher, the consent client and its
 * cache, and the embedded in-process chain used by default. It talks to the chain and to
 * nothing else of Vellum's: it never imports `src/fhir` or `src/storage`; the composition root
 * passes it what it needs (a key, a signer, a store interface).
 *
 * The ledger (`ledger.ts`) is the chain as the rest of Vellum sees it: `openEmbeddedLedger`
 * (`embedded-chain.ts`: in-process EDR chain rebuilt at start from its transaction log,
 * `transaction-log.ts`) or `openRpcLedger` (`rpc-chain.ts`: any JSON-RPC node), both a
 * registry client (`contract-ledger.ts`, `registry.ts`, over the bytecode and ABI generated into
 * `generated/`) sending through one nonce-owning `Sender` per account (`sender.ts`) over
 * classified JSON-RPC (`rpc.ts`). Every error is a coded ChainError (`errors.ts`).
 *
 * The consent registry (`docs/consent.md`) has a pure codec (`consent-registry.ts`: calls,
 * results, events, revert errors, EIP-712 typed data) and a client on the same sender
 * (`consent-ledger.ts`), exposed by both ledgers as `ledger.consents`.
 */
export {
  LEAF_DOMAIN,
  LEAF_WORD,
  MIN_PSEUDONYM_KEY_BYTES,
  PSEUDONYM_CONTEXT,
  canonicalJson,
  cidBytes,
  cidDigest,
  computeLeaf,
  contentDigest,
  leafFromParts,
  newSalt,
  pseudonym,
  versionNumber,
  type CidInput,
  type Leaf,
  type LeafArgumentError,
  type LeafInput,
  type LeafParts,
} from './leaf.ts';
export {
  NODE_SIZE,
  buildTree,
  fromHex,
  hashPair,
  processProof,
  toHex,
  verifyProof,
  type MerkleArgumentError,
  type MerkleTree,
} from './merkle.ts';
export { ChainError, chainError, isChainError, type ChainErrorCategory, type ChainErrorCode } from './errors.ts';
export type { AnchorReceipt, Ledger } from './ledger.ts';
export {
  APPROVER_ROLE,
  CONSENT_TYPES,
  CUSTODIAN_ROLE,
  DECISIONS,
  ETREAT,
  MAX_ACTIVE_CONSENTS,
  MAX_REQUEST_ACTORS,
  MAX_RULE_ACTORS,
  MAX_RULES,
  consentDigest,
  consentKey,
  consentTypedData,
  parseConsentError,
  type ConsentDecision,
  type ConsentEvent,
  type ConsentEventType,
  type ConsentRecord,
  type ConsentTypedData,
  type DecideResult,
  type GrantMessage,
  type RevokeMessage,
  type Rule,
} from './consent-registry.ts';
export { type ConsentLedger, type ConsentWriteReceipt, type ReadOptions, type WriteOptions } from './consent-ledger.ts';
export { openEmbeddedLedger, type EmbeddedLedger, type EmbeddedLedgerOptions } from './embedded-chain.ts';
export { openRpcLedger, type RpcLedger, type RpcLedgerOptions } from './rpc-chain.ts';
export { Sender, type SendJob, type SenderEvent, type SenderJournal, type SenderOptions, type SignedTransaction } from './sender.ts';
export { DEFAULT_RETRY, type RetryPolicy } from './rpc.ts';
