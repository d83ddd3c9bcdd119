/**
 * AnchorRegistry's calldata and logs, encoded and decoded with ethers' ABI coder from the
 * generated ABI (`generated/anchor-registry.ts`). Pure functions: no provider, no I/O.
 * The contract itself is documented in `contracts/IAnchorRegistry.sol`.
 */
import { AbiCoder, Interface, getAddress, id } from 'ethers';
import { ChainError, chainError } from './errors.ts';
import {
  ANCHOR_REGISTRY_ABI,
  ANCHOR_REGISTRY_BYTECODE,
  ANCHOR_REGISTRY_INTERFACE_ID,
} from './generated/anchor-registry.ts';
import type { RpcLog } from './rpc.ts';

const registry = new Interface(ANCHOR_REGISTRY_ABI);

/** topic0 of `BatchAnchored(uint256 indexed batchId, bytes32 indexed root, uint32 leafCount, string manifestCid)`. */
export const BATCH_ANCHORED_TOPIC: string = registry.getEvent('BatchAnchored')!.topicHash;

/** `keccak256("ANCHORER_ROLE")`, the role {anchor} requires. */
export const ANCHORER_ROLE: string = id('ANCHORER_ROLE');

/** Creation bytecode plus constructor arguments: deploys with `admin` and `anchorer`. */
export function deploymentData(admin: string, anchorer: string): string {
  return ANCHOR_REGISTRY_BYTECODE + AbiCoder.defaultAbiCoder().encode(['address', 'address'], [admin, anchorer]).slice(2);
}

export function encodeAnchor(rootHex: string, leafCount: number, manifestCid: string): string {
  return registry.encodeFunctionData('anchor', [rootHex, leafCount, manifestCid]);
}

export function encodeAnchoredAt(rootHex: string): string {
  return registry.encodeFunctionData('anchoredAt', [rootHex]);
}

/** `anchoredAt`'s answer; undefined when the root was never anchored (batch id 0). */
export function decodeAnchoredAt(data: string): { batchId: number; timestamp: number; blockNumber: number } | undefined {
  const [batchId, timestamp, blockNumber] = registry.decodeFunctionResult('anchoredAt', data) as unknown as [bigint, bigint, bigint];
  if (batchId === 0n) return undefined;
  return { batchId: Number(batchId), timestamp: Number(timestamp), blockNumber: Number(blockNumber) };
}

export function encodeVerifyLeaf(rootHex: string, leafHex: string, proofHex: readonly string[]): string {
  return registry.encodeFunctionData('verifyLeaf', [rootHex, leafHex, proofHex]);
}

export function decodeBool(fn: 'verifyLeaf' | 'supportsInterface' | 'hasRole', data: string): boolean {
  return (registry.decodeFunctionResult(fn, data) as unknown as [boolean])[0];
}

export function encodeSupportsRegistry(): string {
  return registry.encodeFunctionData('supportsInterface', [ANCHOR_REGISTRY_INTERFACE_ID]);
}

export function encodeHasAnchorerRole(account: string): string {
  return registry.encodeFunctionData('hasRole', [ANCHORER_ROLE, account]);
}

/** A decoded BatchAnchored event. */
export interface BatchAnchoredEvent {
  batchId: number;
  root: string;
  leafCount: number;
  manifestCid: string;
}

/** The BatchAnchored event in `log`, if `log` is one emitted by `contract`. */
export function parseBatchAnchored(log: RpcLog, contract: string): BatchAnchoredEvent | undefined {
  if (log.topics[0] !== BATCH_ANCHORED_TOPIC || getAddress(log.address) !== getAddress(contract)) return undefined;
  const parsed = registry.parseLog({ topics: log.topics, data: log.data });
  if (!parsed) return undefined;
  return {
    batchId: Number(parsed.args[0] as bigint),
    root: (parsed.args[1] as string).toLowerCase(),
    leafCount: Number(parsed.args[2] as bigint),
    manifestCid: parsed.args[3] as string,
  };
}

/**
 * The ChainError for revert data of an `anchor` call or deployment: the registry's custom
 * errors by name, or undefined when the data is not one of them.
 */
export function revertError(data: string | undefined, cause: unknown): ChainError | undefined {
  if (data === undefined) return undefined;
  let name: string | undefined;
  try {
    name = registry.parseError(data)?.name;
  } catch {
    return undefined;
  }
  switch (name) {
    case 'AccessControlUnauthorizedAccount':
      return chainError('VLM_CHAIN_NOT_ANCHORER', 'fault', 'the anchoring account lacks ANCHORER_ROLE on the registry', cause);
    case 'AnchorRegistryZeroRoot':
      return chainError('VLM_CHAIN_ANCHOR_BAD_ROOT', 'invalid', 'the root must not be zero', cause);
    case 'AnchorRegistryEmptyBatch':
      return chainError('VLM_CHAIN_ANCHOR_BAD_LEAF_COUNT', 'invalid', 'a batch needs at least one leaf', cause);
    case 'AnchorRegistryEmptyManifest':
      return chainError('VLM_CHAIN_ANCHOR_BAD_MANIFEST', 'invalid', 'a batch needs a manifest CID', cause);
    default:
      return undefined;
  }
}
