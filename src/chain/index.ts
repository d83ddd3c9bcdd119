/**
 * `src/chain` is everything Vellum does with an Ethereum-compatible chain: the leaf encoding
 * that turns a resource version into a Merkle leaf without revealing it (`leaf.ts`), the
 * OpenZeppelin-compatible Merkle trees whose roots are anchored (`merkle.ts`), the ethers
 * bindings of the contracts in `contracts/`, the anchor batcher, the consent client and its
 * cache, and the embedded in-process chain used by default. It talks to the chain and to
 * nothing else of Vellum's: it never imports `src/fhir` or `src/storage`; the composition root
 * passes it what it needs (a key, a signer, a store interface).
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
