/**
 * The client of a deployed ConsentRegistry (`contracts/IConsentRegistry.sol`, `docs/consent.md`):
 * views by `eth_call`, writes through the account's Sender — the same nonce-owning sender that
 * anchors, so consent writes and anchors are sequenced on one account — and history by
 * `eth_getLogs`. Both ledgers (embedded and RPC) expose one as `ledger.consents`.
 *
 * A write resolves once mined (with the sender's confirmations) with `{ txHash, blockNumber }`.
 * A write the registry refuses raises its `VLM_CONSENT_*` code ('invalid'): found while
 * estimating gas, or — if the state changed between estimate and mining and the transaction
 * was mined reverted — by asking the chain again why.
 */
import { getAddress, keccak256 } from 'ethers';
import { checkCode } from './contract-ledger.ts';
import {
  CONSENT_EVENT_TOPICS,
  CUSTODIAN_ROLE,
  consentDeploymentData,
  consentRevertError,
  consentTypedData,
  decodeApprovalOf,
  decodeConsentBool,
  decodeConsentOf,
  decodeConsentsOf,
  decodeDecide,
  decodeModel,
  encodeAnswerRequest,
  encodeModel,
  encodeRequestAccess,
  encodeSetModel,
  type ConsentModel,
  type DecideRequest,
  decodeNonces,
  decodeWalletOf,
  encodeApprovalOf,
  encodeApproveActor,
  encodeConsentOf,
  encodeConsentsOf,
  encodeDecide,
  encodeGrantBySig,
  encodeHasRole,
  encodeIsPermitted,
  encodeNonces,
  encodePutConsent,
  encodeRecordEmergencyAccess,
  encodeRegisterWallet,
  encodeRevokeApproval,
  encodeRevokeBySig,
  encodeRevokeConsent,
  encodeSupportsConsentRegistry,
  encodeWalletOf,
  parseConsentEvent,
  type ConsentEvent,
  type ConsentRecord,
  type ConsentTypedData,
  type DecideResult,
  type GrantMessage,
  type RevokeMessage,
  type Rule,
} from './consent-registry.ts';
import { chainError, isChainError } from './errors.ts';
import { quantity, retrying, revertDataOf, toQuantity, type RetryPolicy, type Rpc, type RpcLog, type RpcReceipt } from './rpc.ts';
import type { Sender } from './sender.ts';

/** Where a consent write landed. */
export interface ConsentWriteReceipt {
  txHash: string;
  blockNumber: number;
}

export interface WriteOptions {
  signal?: AbortSignal;
}

export interface ReadOptions {
  /** Answer as of this block (default: latest), e.g. the block a cache is synced to. */
  blockTag?: number;
}

/**
 * The consent registry as Vellum uses it. Keys are `0x` + 64 hex digits (lowercase on the way
 * out). Every method may raise VLM_CHAIN_UNAVAILABLE, VLM_CHAIN_ABORTED, VLM_CHAIN_CLOSED
 * ('unavailable') and VLM_CHAIN_CONTRACT_MISSING ('fault'); writes also VLM_CONSENT_NOT_AUTHORIZED,
 * VLM_CHAIN_REVERTED, VLM_CHAIN_INSUFFICIENT_FUNDS ('fault'). Argument errors are
 * VLM_CONSENT_BAD_KEY / _BAD_RULE / _LIMIT ('invalid'), raised before anything is sent.
 */
export interface ConsentLedger {
  readonly chainId: number;
  /** Registry address, checksummed. */
  readonly contract: string;
  /** Creates or replaces consent `id` of `patient`. Raises VLM_CONSENT_LOCKED, _PATIENT_MISMATCH, _LIMIT, _BAD_RULE. */
  put(id: string, patient: string, rules: readonly Rule[], options?: WriteOptions): Promise<ConsentWriteReceipt>;
  /** Revokes consent `id` (a no-op if already revoked). Raises VLM_CONSENT_UNKNOWN. */
  revoke(id: string, options?: WriteOptions): Promise<ConsentWriteReceipt>;
  /** Approves `actor`, with or without the emergency (break-glass) flag. */
  approve(actor: string, emergency: boolean, options?: WriteOptions): Promise<ConsentWriteReceipt>;
  revokeApproval(actor: string, options?: WriteOptions): Promise<ConsentWriteReceipt>;
  /** Records the wallet that signs for `patient` (null: none). */
  registerWallet(patient: string, wallet: string | null, options?: WriteOptions): Promise<ConsentWriteReceipt>;
  /** Relays a patient-signed revocation. Raises VLM_CONSENT_EXPIRED, _BAD_NONCE, _BAD_SIGNATURE, _UNKNOWN. */
  relayRevokeBySig(id: string, nonce: bigint | number, deadline: bigint | number, signature: string, options?: WriteOptions): Promise<ConsentWriteReceipt>;
  /** Relays a patient-signed grant. Raises what `put` and `relayRevokeBySig` raise, but never VLM_CONSENT_LOCKED. */
  relayGrantBySig(
    id: string,
    patient: string,
    rules: readonly Rule[],
    nonce: bigint | number,
    deadline: bigint | number,
    signature: string,
    options?: WriteOptions,
  ): Promise<ConsentWriteReceipt>;
  recordEmergencyAccess(patient: string, actor: string, resourceClass: number, purpose: number, options?: WriteOptions): Promise<ConsentWriteReceipt>;
  /** The contract's decision (docs/consent.md). Raises VLM_CONSENT_LIMIT for more than 4 actors. */
  decide(request: DecideRequest, options?: ReadOptions): Promise<DecideResult>;
  isPermitted(request: DecideRequest, options?: ReadOptions): Promise<boolean>;
  /** Sets the jurisdiction's consent model; a model already set is replaced only with `force`. Raises VLM_CONSENT_MODEL_CHANGE. */
  setModel(model: ConsentModel, force: boolean, options?: WriteOptions): Promise<ConsentWriteReceipt>;
  /** The consent model, and whether it was ever set. */
  model(options?: ReadOptions): Promise<{ model: ConsentModel; set: boolean }>;
  /** Records an access request (a proposed Consent): an event, nothing in force. */
  requestAccess(id: string, patient: string, requester: string, options?: WriteOptions): Promise<ConsentWriteReceipt>;
  /** Records the patient's answer to a request. */
  answerRequest(id: string, patient: string, approved: boolean, options?: WriteOptions): Promise<ConsentWriteReceipt>;
  /** Consent `id` as the contract holds it; undefined if never written. */
  consentOf(id: string, options?: ReadOptions): Promise<ConsentRecord | undefined>;
  /** Every consent id of `patient`, revoked ones included, in the order first written. */
  consentsOf(patient: string, options?: ReadOptions): Promise<string[]>;
  approvalOf(actor: string, options?: ReadOptions): Promise<{ approved: boolean; emergency: boolean }>;
  /** The patient's wallet (checksummed), undefined if none. */
  walletOf(patient: string, options?: ReadOptions): Promise<string | undefined>;
  /** The nonce the patient's next signature must carry. */
  nonces(patient: string, options?: ReadOptions): Promise<bigint>;
  /** Every registry event from `fromBlock` to `toBlock` (default: the head), in chain order. */
  events(fromBlock: number, toBlock?: number): Promise<ConsentEvent[]>;
  /** The chain's current block number. */
  head(): Promise<number>;
  /** The EIP-712 typed data a patient signs for this registry (see `consentTypedData`). */
  typedData(kind: 'Revoke', message: RevokeMessage): ConsentTypedData;
  typedData(kind: 'Grant', message: GrantMessage): ConsentTypedData;
}

export interface ConsentLedgerOptions {
  rpc: Rpc;
  sender: Sender;
  chainId: number;
  contract: string;
  retry: RetryPolicy;
  /** Blocks per `eth_getLogs` request in `events()`. */
  logRangeBlocks?: number;
  /** Whether the owning ledger has been closed. */
  isClosed?: () => boolean;
}

const DEFAULT_LOG_RANGE = 5_000;

/**
 * Checks that `address` holds a ConsentRegistry (ERC-165) on which `custodian` has
 * CUSTODIAN_ROLE. Raises VLM_CHAIN_CONTRACT_MISSING or VLM_CONSENT_NOT_AUTHORIZED ('fault').
 */
export async function checkConsentRegistry(rpc: Rpc, address: string, custodian: string): Promise<void> {
  await checkCode(rpc, address);
  if (!(await isConsentRegistry(rpc, address))) {
    throw chainError('VLM_CHAIN_CONTRACT_MISSING', 'fault', `the contract at ${address} is not a ConsentRegistry`);
  }
  if (!decodeConsentBool('hasRole', await rpc.call(address, encodeHasRole(CUSTODIAN_ROLE, custodian)))) {
    throw chainError('VLM_CONSENT_NOT_AUTHORIZED', 'fault', `${custodian} lacks CUSTODIAN_ROLE on ${address}`);
  }
}

/** Whether the contract at `address` answers ERC-165 for IConsentRegistry (false if it cannot say). */
export async function isConsentRegistry(rpc: Rpc, address: string): Promise<boolean> {
  try {
    return decodeConsentBool('supportsInterface', await rpc.call(address, encodeSupportsConsentRegistry()));
  } catch (err) {
    if (isChainError(err, 'VLM_CHAIN_UNAVAILABLE')) throw err;
    return false;
  }
}

/**
 * Deploys ConsentRegistry from the generated bytecode through `sender` (administrator `admin`;
 * custodian and approver the sender's account) and returns where it landed.
 */
export async function deployConsentRegistry(
  sender: Sender,
  admin: string,
  options: WriteOptions = {},
): Promise<{ address: string; txHash: string; blockNumber: number }> {
  return sender.send<{ address: string; txHash: string; blockNumber: number }>(
    {
      key: 'deploy:ConsentRegistry',
      to: null,
      data: consentDeploymentData(admin, sender.address),
      lookup: async () => undefined,
      fromReceipt: async (receipt: RpcReceipt) => {
        if (!receipt.contractAddress) throw chainError('VLM_CHAIN_BAD_RECEIPT', 'fault', 'the deployment receipt has no contract address');
        return { address: getAddress(receipt.contractAddress), txHash: receipt.transactionHash, blockNumber: quantity(receipt.blockNumber) };
      },
      revertError: consentRevertError,
    },
    options,
  );
}

/** A ConsentLedger over the ConsentRegistry at `options.contract`. */
export function createConsentLedger(options: ConsentLedgerOptions): ConsentLedger {
  const { rpc, sender, chainId, retry } = options;
  const contract = getAddress(options.contract);
  const logRange = options.logRangeBlocks ?? DEFAULT_LOG_RANGE;

  const checkOpen = (): void => {
    if (options.isClosed?.()) throw chainError('VLM_CHAIN_CLOSED', 'unavailable', 'the ledger is closed');
  };

  /** `eth_call` on the registry; reverts become VLM_CONSENT_* when they are the registry's errors. */
  const view = async (encode: () => string, readOptions: ReadOptions = {}): Promise<string> => {
    checkOpen();
    const data = encode();
    const tag = readOptions.blockTag === undefined ? 'latest' : blockTag(readOptions.blockTag);
    return retrying(retry, async () => {
      let result: string;
      try {
        result = await rpc.request<string>('eth_call', [{ to: contract, data }, tag]);
      } catch (err) {
        throw (isChainError(err, 'VLM_CHAIN_REVERTED') && consentRevertError(revertDataOf(err), err)) || err;
      }
      if (result === '0x') {
        await checkCode(rpc, contract);
        throw chainError('VLM_CHAIN_BAD_RECEIPT', 'fault', 'the consent registry returned no data');
      }
      return result;
    });
  };

  /** Sends `encode()`'s calldata; argument errors reject (never throw synchronously). */
  const write = async (fn: string, encode: () => string, writeOptions: WriteOptions = {}): Promise<ConsentWriteReceipt> => {
    checkOpen();
    const data = encode();
    try {
      return await sender.send<ConsentWriteReceipt>(
        {
          // Same call, same key: concurrent identical writes share one transaction, and a
          // transaction broadcast before the chain went away is adopted by the next attempt.
          key: `consent:${fn}:${keccak256(data)}`,
          to: contract,
          data,
          // A consent write is not idempotent by content (a put between two identical puts
          // changes the state), so nothing is looked up: every call sends.
          lookup: async () => undefined,
          fromReceipt: async (receipt) => ({ txHash: receipt.transactionHash, blockNumber: quantity(receipt.blockNumber) }),
          revertError: consentRevertError,
        },
        writeOptions,
      );
    } catch (err) {
      if (!isChainError(err, 'VLM_CHAIN_REVERTED')) throw err;
      // Mined but reverted: the state changed after the gas estimate. Ask why.
      try {
        await rpc.request<string>('eth_call', [{ from: sender.address, to: contract, data }, 'latest']);
      } catch (again) {
        const mapped = consentRevertError(revertDataOf(again), err);
        if (mapped) throw mapped;
      }
      throw err;
    }
  };

  const ledger: ConsentLedger = {
    chainId,
    contract,

    put: (id, patient, rules, o) => write('putConsent', () => encodePutConsent(id, patient, rules), o),
    revoke: (id, o) => write('revokeConsent', () => encodeRevokeConsent(id), o),
    approve: (actor, emergency, o) => write('approveActor', () => encodeApproveActor(actor, emergency), o),
    revokeApproval: (actor, o) => write('revokeApproval', () => encodeRevokeApproval(actor), o),
    registerWallet: (patient, wallet, o) => write('registerWallet', () => encodeRegisterWallet(patient, wallet), o),
    relayRevokeBySig: (id, nonce, deadline, signature, o) => write('revokeBySig', () => encodeRevokeBySig(id, nonce, deadline, signature), o),
    relayGrantBySig: (id, patient, rules, nonce, deadline, signature, o) =>
      write('grantBySig', () => encodeGrantBySig(id, patient, rules, nonce, deadline, signature), o),
    recordEmergencyAccess: (patient, actor, resourceClass, purpose, o) =>
      write('recordEmergencyAccess', () => encodeRecordEmergencyAccess(patient, actor, resourceClass, purpose), o),

    async decide(request, o) {
      return decodeDecide(await view(() => encodeDecide(request), o));
    },
    async isPermitted(request, o) {
      return decodeConsentBool('isPermitted', await view(() => encodeIsPermitted(request), o));
    },
    setModel: (model, force, o) => write('setModel', () => encodeSetModel(model, force), o),
    async model(o) {
      return decodeModel(await view(() => encodeModel(), o));
    },
    requestAccess: (id, patient, requester, o) => write('requestAccess', () => encodeRequestAccess(id, patient, requester), o),
    answerRequest: (id, patient, approved, o) => write('answerRequest', () => encodeAnswerRequest(id, patient, approved), o),
    async consentOf(id, o) {
      return decodeConsentOf(id, await view(() => encodeConsentOf(id), o));
    },
    async consentsOf(patient, o) {
      return decodeConsentsOf(await view(() => encodeConsentsOf(patient), o));
    },
    async approvalOf(actor, o) {
      return decodeApprovalOf(await view(() => encodeApprovalOf(actor), o));
    },
    async walletOf(patient, o) {
      return decodeWalletOf(await view(() => encodeWalletOf(patient), o));
    },
    async nonces(patient, o) {
      return decodeNonces(await view(() => encodeNonces(patient), o));
    },

    async events(fromBlock, toBlock) {
      checkOpen();
      if (!Number.isSafeInteger(fromBlock) || fromBlock < 0) {
        throw chainError('VLM_CHAIN_BAD_OPTION', 'invalid', 'fromBlock must be a whole number ≥ 0');
      }
      if (toBlock !== undefined && (!Number.isSafeInteger(toBlock) || toBlock < fromBlock)) {
        throw chainError('VLM_CHAIN_BAD_OPTION', 'invalid', 'toBlock must be a whole number ≥ fromBlock');
      }
      await retrying(retry, () => checkCode(rpc, contract));
      const last = toBlock ?? (await retrying(retry, () => rpc.blockNumber()));
      const found: ConsentEvent[] = [];
      for (let from = fromBlock; from <= last; from += logRange) {
        const to = Math.min(last, from + logRange - 1);
        const logs = await retrying(retry, () =>
          rpc.request<RpcLog[]>('eth_getLogs', [{ address: contract, topics: [CONSENT_EVENT_TOPICS], fromBlock: toQuantity(from), toBlock: toQuantity(to) }]),
        );
        for (const log of logs) {
          const event = parseConsentEvent(log, contract);
          if (event) found.push(event);
        }
      }
      return found.sort((a, b) => a.blockNumber - b.blockNumber || a.logIndex - b.logIndex);
    },

    async head() {
      checkOpen();
      return retrying(retry, () => rpc.blockNumber());
    },

    typedData(kind: 'Revoke' | 'Grant', message: RevokeMessage | GrantMessage): ConsentTypedData {
      return kind === 'Revoke'
        ? consentTypedData(chainId, contract, 'Revoke', message as RevokeMessage)
        : consentTypedData(chainId, contract, 'Grant', message as GrantMessage);
    },
  } as ConsentLedger;
  return ledger;
}

function blockTag(n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) throw chainError('VLM_CHAIN_BAD_OPTION', 'invalid', 'blockTag must be a whole number ≥ 0');
  return toQuantity(n);
}
