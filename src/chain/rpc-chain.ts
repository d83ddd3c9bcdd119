/**
 * The ledger on an external chain, reached over HTTP JSON-RPC: Besu, Geth, Nethermind, or
 * `hardhat node` in tests — the same way for all. This is where third-party trust comes from:
 * anyone can ask the same chain whether a root is anchored.
 *
 * The provider is ethers' `JsonRpcProvider` with `cacheTimeout: -1` (no response caching, else
 * a nonce or receipt read just after a send can be stale), `batchStallTime: 0` (no batching
 * delay for sequential work) and a static network (no `eth_chainId` per request, and no
 * background network detection looping while the node is down).
 */
import { FetchRequest, JsonRpcProvider, Network, Wallet, getAddress } from 'ethers';
import { checkConsentRegistry, createConsentLedger, deployConsentRegistry, type ConsentLedger } from './consent-ledger.ts';
import { checkRegistry, createContractLedger, deployRegistry } from './contract-ledger.ts';
import { chainError, isChainError } from './errors.ts';
import type { Ledger } from './ledger.ts';
import { DEFAULT_RETRY, Rpc, classifyRpcError, quantity, retrying, throwIfAborted, type RetryPolicy } from './rpc.ts';
import { Sender, type SenderEvent } from './sender.ts';

export interface RpcLedgerOptions {
  /** http(s) URL of the node's JSON-RPC endpoint. */
  rpcUrl: string;
  /** The anchoring account's private key (0x + 64 hex digits). */
  privateKey: string;
  /** The registry's address; absent with `deploy: true` deploys one. */
  contract?: string;
  /** Deploy a registry when `contract` is absent (the new address is `ledger.contract`). */
  deploy?: boolean;
  /** Administrator of a deployed registry (grants ANCHORER_ROLE); default the anchoring account. */
  admin?: string;
  /** The ConsentRegistry's address (VELLUM_CONSENT_CONTRACT); the account must hold CUSTODIAN_ROLE there. */
  consentContract?: string;
  /**
   * Deploy a ConsentRegistry when `consentContract` is absent (custodian and approver: the
   * anchoring account; administrator: `admin`). Default: `deploy`. Without either, the ledger
   * has no `consents`.
   */
  deployConsent?: boolean;
  /** Expected chain id; the node must report it. */
  chainId?: number;
  /** Blocks a transaction must have before `anchor` resolves (1 = mined). */
  confirmations: number;
  /** Receipt and head polling interval; default 1,000 ms. */
  pollIntervalMs?: number;
  /** Replace (re-price) a transaction not mined after this long; default 60,000 ms. */
  replaceAfterMs?: number;
  /** Retries while the node does not answer; default 6 attempts from 200 ms, doubling to 5 s. */
  retry?: RetryPolicy;
  /** One HTTP request's timeout; default 10,000 ms. */
  requestTimeoutMs?: number;
  /** Never pay more than this per gas (wei). */
  maxFeePerGas?: bigint;
  signal?: AbortSignal;
  onEvent?: (event: SenderEvent) => void;
}

export interface RpcLedger extends Ledger {
  readonly kind: 'rpc';
  /** The anchoring account. */
  readonly anchorer: string;
  /** Set when this call deployed the registry: record `contract` in the configuration. */
  readonly deployed?: { txHash: string; blockNumber: number };
  /** The consent registry, when configured or deployed (written through the anchoring account's sender). */
  readonly consents?: ConsentLedger;
  /** Set when this call deployed the consent registry: record `consents.contract` in the configuration. */
  readonly deployedConsent?: { txHash: string; blockNumber: number };
}

function option(ok: boolean, message: string): void {
  if (!ok) throw chainError('VLM_CHAIN_BAD_OPTION', 'invalid', message);
}

/**
 * Connects to the node at `rpcUrl`, checks the chain id and the registry (or deploys one), and
 * returns its ledger. Raises VLM_CHAIN_BAD_OPTION / VLM_CHAIN_WRONG_CHAIN ('invalid'),
 * VLM_CHAIN_UNAVAILABLE, VLM_CHAIN_CONTRACT_MISSING / VLM_CHAIN_NOT_ANCHORER ('fault').
 */
export async function openRpcLedger(options: RpcLedgerOptions): Promise<RpcLedger> {
  const { signal } = options;
  let url: URL;
  try {
    url = new URL(options.rpcUrl);
  } catch (err) {
    throw chainError('VLM_CHAIN_BAD_OPTION', 'invalid', 'rpcUrl is not a URL', err);
  }
  option(url.protocol === 'http:' || url.protocol === 'https:', 'rpcUrl must be http(s)');
  option(/^0x[0-9a-fA-F]{64}$/.test(options.privateKey), 'privateKey must be 0x and 64 hex digits');
  option(Number.isInteger(options.confirmations) && options.confirmations >= 1, 'confirmations must be a whole number ≥ 1');
  option(options.chainId === undefined || (Number.isSafeInteger(options.chainId) && options.chainId > 0), 'chainId must be a positive integer');
  option(options.contract === undefined || /^0x[0-9a-fA-F]{40}$/.test(options.contract), 'contract must be an address');
  option(options.contract !== undefined || options.deploy === true, 'give a contract address, or deploy: true');
  option(options.admin === undefined || /^0x[0-9a-fA-F]{40}$/.test(options.admin), 'admin must be an address');
  option(options.consentContract === undefined || /^0x[0-9a-fA-F]{40}$/.test(options.consentContract), 'consentContract must be an address');
  const retry = options.retry ?? DEFAULT_RETRY;
  let wallet: Wallet;
  try {
    wallet = new Wallet(options.privateKey);
  } catch (err) {
    throw chainError('VLM_CHAIN_BAD_OPTION', 'invalid', 'privateKey is not a valid secp256k1 key', err);
  }

  const connection = (): FetchRequest => {
    const request = new FetchRequest(url.toString());
    request.timeout = options.requestTimeoutMs ?? 10_000;
    return request;
  };

  // The chain id, asked once, before the provider exists (a static network must be known up front).
  throwIfAborted(signal);
  const actualChainId = await retrying(
    retry,
    async () => {
      const request = connection();
      request.body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] });
      request.setHeader('content-type', 'application/json');
      try {
        const response = await request.send();
        response.assertOk();
        const body = response.bodyJson as { result?: string; error?: unknown };
        if (body.error !== undefined) throw Object.assign(new Error('eth_chainId failed'), { error: body.error });
        return quantity(body.result);
      } catch (err) {
        throw classifyRpcError('eth_chainId', err);
      }
    },
    signal,
  );
  if (options.chainId !== undefined && options.chainId !== actualChainId) {
    throw chainError('VLM_CHAIN_WRONG_CHAIN', 'invalid', `the node is on chain ${actualChainId}, not ${options.chainId}`);
  }

  const provider = new JsonRpcProvider(connection(), Network.from(actualChainId), {
    staticNetwork: true,
    cacheTimeout: -1,
    batchStallTime: 0,
  });
  const rpc = new Rpc(provider);
  const sender = new Sender({
    rpc,
    wallet,
    chainId: actualChainId,
    confirmations: options.confirmations,
    pollIntervalMs: options.pollIntervalMs ?? 1_000,
    replaceAfterMs: options.replaceAfterMs ?? 60_000,
    retry,
    maxFeePerGas: options.maxFeePerGas,
    onEvent: options.onEvent,
  });
  try {
    let contract: string;
    let deployed: RpcLedger['deployed'];
    if (options.contract !== undefined) {
      contract = getAddress(options.contract);
    } else {
      const result = await deployRegistry(sender, options.admin ?? wallet.address, { signal });
      contract = result.address;
      deployed = { txHash: result.txHash, blockNumber: result.blockNumber };
    }
    await retrying(retry, () => checkRegistry(rpc, contract, wallet.address), signal);
    let consentContract: string | undefined;
    let deployedConsent: RpcLedger['deployedConsent'];
    if (options.consentContract !== undefined) {
      consentContract = getAddress(options.consentContract);
    } else if (options.deployConsent ?? options.deploy === true) {
      const result = await deployConsentRegistry(sender, options.admin ?? wallet.address, { signal });
      consentContract = result.address;
      deployedConsent = { txHash: result.txHash, blockNumber: result.blockNumber };
    }
    if (consentContract !== undefined) {
      const address = consentContract;
      await retrying(retry, () => checkConsentRegistry(rpc, address, wallet.address), signal);
    }
    let closed = false;
    const ledger = createContractLedger({
      kind: 'rpc',
      rpc,
      sender,
      chainId: actualChainId,
      contract,
      retry,
      onClose: async () => {
        closed = true;
        rpc.destroy();
      },
    });
    const consents =
      consentContract === undefined
        ? undefined
        : createConsentLedger({ rpc, sender, chainId: actualChainId, contract: consentContract, retry, isClosed: () => closed });
    return Object.assign(ledger, { kind: 'rpc' as const, anchorer: wallet.address, deployed, consents, deployedConsent });
  } catch (err) {
    await sender.close();
    rpc.destroy();
    if (isChainError(err)) throw err;
    throw chainError('VLM_CHAIN_START_FAILED', 'fault', 'the chain ledger could not start', err);
  }
}
