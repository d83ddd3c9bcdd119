/**
 * Merkle trees that OpenZeppelin's `MerkleProof.verify` accepts: sorted-pair keccak-256
 * (`commutativeKeccak256`), so a proof is just the list of sibling hashes from the leaf up,
 * with no left/right flags. https://docs.openzeppelin.com/contracts/5.x/api/utils#MerkleProof
 *
 * Shape: the same complete binary tree as `@openzeppelin/merkle-tree`'s
 * `SimpleMerkleTree.of(leaves, { sortLeaves: false })` (a test checks this), so a third party
 * can rebuild a batch root from the manifest's leaf list with OpenZeppelin's own library.
 * The 2n − 1 nodes sit in one array in heap order (children of node k are 2k+1 and 2k+2,
 * the root is node 0) and leaf i is node 2n − 2 − i. Every inner node therefore has exactly
 * two children, whatever n is:
 *
 * - **one leaf**: the root is the leaf itself and its proof is empty
 *   (`MerkleProof.verify([], leaf, leaf)` is true);
 * - **odd counts**: nothing is duplicated or padded; the leaves simply end at different
 *   depths (⌊log2 n⌋ or ⌈log2 n⌉ hashes per proof), which a sorted-pair proof does not need
 *   to know;
 * - **no leaves**: refused (`VLM_CHAIN_MERKLE_EMPTY`); the registry refuses empty batches too.
 *
 * Leaves are given already hashed (32 bytes each, see `leaf.ts`, which hashes twice so an
 * inner node can never pass for a leaf) and are used in the order given: that order is the
 * manifest's, and a leaf's index is its position there.
 *
 * Speed: nodes live in one flat buffer and each inner node costs one 64-byte keccak; 100,000
 * leaves build in well under a second (see test/chain/merkle.test.ts).
 */
import { chainError, type ChainError } from './errors.ts';
import { keccak256 } from './keccak.ts';

/** Size of a node (a keccak-256 digest) in bytes. */
export const NODE_SIZE = 32;

/** A built tree: its root, and a proof for any leaf. */
export interface MerkleTree {
  /** The root to anchor (32 bytes). */
  readonly root: Uint8Array;
  /** How many leaves the tree has. */
  readonly leafCount: number;
  /** Leaf `index` as given to `buildTree` (a copy). Raises VLM_CHAIN_MERKLE_BAD_INDEX. */
  leaf(index: number): Uint8Array;
  /**
   * The inclusion proof of leaf `index`: sibling hashes from the leaf up to (not including)
   * the root, as `MerkleProof.verify(proof, root, leaf)` expects. Raises
   * VLM_CHAIN_MERKLE_BAD_INDEX.
   */
  proof(index: number): Uint8Array[];
}

/** Error raised for arguments no tree can be built from; `category` maps like other layers'. */
export interface MerkleArgumentError extends ChainError {
  readonly code: 'VLM_CHAIN_MERKLE_EMPTY' | 'VLM_CHAIN_MERKLE_BAD_NODE' | 'VLM_CHAIN_MERKLE_BAD_INDEX' | 'VLM_CHAIN_BAD_HEX';
  readonly category: 'invalid';
}

function invalid(code: MerkleArgumentError['code'], message: string): MerkleArgumentError {
  return chainError(code, 'invalid', message) as MerkleArgumentError;
}

function checkNode(node: Uint8Array, what: string): void {
  if (!(node instanceof Uint8Array) || node.length !== NODE_SIZE) {
    throw invalid('VLM_CHAIN_MERKLE_BAD_NODE', `${what} must be ${NODE_SIZE} bytes`);
  }
}

/** True if a < b, comparing as unsigned big-endian 256-bit numbers (as Solidity does). */
function lessThan(buf: Uint8Array, a: number, b: number): boolean {
  for (let i = 0; i < NODE_SIZE; i++) {
    const x = buf[a + i]!;
    const y = buf[b + i]!;
    if (x !== y) return x < y;
  }
  return false;
}

/**
 * OpenZeppelin's `Hashes.commutativeKeccak256(a, b)`: keccak-256 of the two nodes, smaller
 * first. Returns a new 32-byte array.
 */
export function hashPair(a: Uint8Array, b: Uint8Array): Uint8Array {
  checkNode(a, 'node');
  checkNode(b, 'node');
  const pair = new Uint8Array(2 * NODE_SIZE);
  pair.set(a, 0);
  pair.set(b, NODE_SIZE);
  if (lessThan(pair, NODE_SIZE, 0)) {
    pair.set(b, 0);
    pair.set(a, NODE_SIZE);
  }
  return keccak256(pair);
}

/**
 * Builds the tree over `leaves` (32-byte hashes, in manifest order). Raises
 * VLM_CHAIN_MERKLE_EMPTY (no leaves) or VLM_CHAIN_MERKLE_BAD_NODE (a leaf is not 32 bytes).
 */
export function buildTree(leaves: readonly Uint8Array[]): MerkleTree {
  const n = leaves.length;
  if (n === 0) throw invalid('VLM_CHAIN_MERKLE_EMPTY', 'a Merkle tree needs at least one leaf');
  const count = 2 * n - 1;
  const nodes = new Uint8Array(count * NODE_SIZE);
  for (let i = 0; i < n; i++) {
    const leaf = leaves[i]!;
    checkNode(leaf, `leaf ${i}`);
    nodes.set(leaf, (count - 1 - i) * NODE_SIZE);
  }
  for (let k = count - 1 - n; k >= 0; k--) {
    const left = (2 * k + 1) * NODE_SIZE;
    const right = left + NODE_SIZE;
    const [lo, hi] = lessThan(nodes, right, left) ? [right, left] : [left, right];
    nodes.set(keccak256(nodes.subarray(lo, lo + NODE_SIZE), nodes.subarray(hi, hi + NODE_SIZE)), k * NODE_SIZE);
  }

  const node = (k: number): Uint8Array => nodes.slice(k * NODE_SIZE, (k + 1) * NODE_SIZE);
  const leafNode = (index: number): number => {
    if (!Number.isInteger(index) || index < 0 || index >= n) {
      throw invalid('VLM_CHAIN_MERKLE_BAD_INDEX', `leaf index ${index} is outside 0..${n - 1}`);
    }
    return count - 1 - index;
  };

  return {
    root: node(0),
    leafCount: n,
    leaf: (index) => node(leafNode(index)),
    proof(index) {
      const proof: Uint8Array[] = [];
      for (let k = leafNode(index); k > 0; k = (k - 1) >> 1) {
        proof.push(node(k % 2 === 1 ? k + 1 : k - 1));
      }
      return proof;
    },
  };
}

/**
 * OpenZeppelin's `MerkleProof.processProof`: the root that `proof` leads to from `leaf`.
 * Raises VLM_CHAIN_MERKLE_BAD_NODE if any node is not 32 bytes.
 */
export function processProof(leaf: Uint8Array, proof: readonly Uint8Array[]): Uint8Array {
  let computed = leaf;
  checkNode(computed, 'leaf');
  for (const sibling of proof) computed = hashPair(computed, sibling);
  return computed;
}

/**
 * OpenZeppelin's `MerkleProof.verify`: whether `proof` leads from `leaf` to `root`.
 * Never raises: malformed input is simply not a valid proof.
 */
export function verifyProof(root: Uint8Array, leaf: Uint8Array, proof: readonly Uint8Array[]): boolean {
  if (!(root instanceof Uint8Array) || root.length !== NODE_SIZE) return false;
  let computed: Uint8Array;
  try {
    computed = processProof(leaf, proof);
  } catch {
    return false;
  }
  return equalBytes(computed, root);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** `0x`-prefixed lowercase hex of `bytes`, the form ethers and JSON-RPC use for bytes32. */
export function toHex(bytes: Uint8Array): `0x${string}` {
  return `0x${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')}`;
}

/**
 * Bytes of a `0x`-prefixed hex string (`expectedLength` bytes if given). Raises
 * VLM_CHAIN_BAD_HEX on anything else.
 */
export function fromHex(hex: string, expectedLength?: number): Uint8Array {
  if (!/^0x(?:[0-9a-fA-F]{2})*$/.test(hex) || (expectedLength !== undefined && hex.length !== 2 + 2 * expectedLength)) {
    throw invalid('VLM_CHAIN_BAD_HEX', `not a 0x-prefixed hex string of ${expectedLength ?? 'whole'} bytes`);
  }
  return new Uint8Array(Buffer.from(hex.slice(2), 'hex'));
}
