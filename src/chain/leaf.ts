/**
 * The anchor leaf: how one resource version becomes a 32-byte Merkle leaf.
 *
 * ```
 * pseudonym     = HMAC-SHA-256(pseudonymKey, "vellum.pseudonym.v1" ‖ 0x00 ‖ resourceType ‖ "/" ‖ id)
 * contentDigest = keccak256(salt ‖ canonicalJson)          salt: 32 random bytes per version
 * cidDigest     = keccak256(cid.bytes)                     binary CID of the encrypted envelope
 * inner         = keccak256(abi.encode(LEAF_DOMAIN, pseudonym, uint64 versionId, contentDigest, cidDigest))
 * leaf          = keccak256(bytes.concat(inner))
 * LEAF_DOMAIN   = keccak256("vellum.anchor.leaf.v1")
 * ```
 *
 * `canonicalJson` is the version exactly as stored, in RFC 8785 (JSON Canonicalization Scheme)
 * form, UTF-8 encoded. https://www.rfc-editor.org/rfc/rfc8785
 *
 * Why this shape:
 *
 * - **Nothing public confirms a guess.** Only roots go on chain; the manifest in IPFS lists
 *   leaves and envelope CIDs. Someone who guesses a resource's entire content still cannot
 *   recompute its leaf without the version's 256-bit salt, which is kept only inside the
 *   encrypted envelope and the server's index. The resource's type and id enter only through
 *   a keyed pseudonym, so ids are neither on chain nor brute-forceable from it (FHIR ids are
 *   often guessable). The salt is per version, so two versions with the same content
 *   have unrelated leaves.
 * - **A third party can still verify.** Given the resource version, its salt, its pseudonym
 *   and the envelope CID (a `$verify` proof document), anyone recomputes the leaf without the
 *   server's key, and the canonical JSON itself carries `resourceType`, `id` and
 *   `meta.versionId`, so the content digest binds them too: the verifier checks those fields
 *   against the claimed ones. Only the server (holding the key) can check that a pseudonym
 *   belongs to a type/id, which is what rebuilding the index from the log needs.
 * - **The envelope is pinned.** `cidDigest` ties the leaf to the exact encrypted bytes in IPFS,
 *   so swapping two envelopes breaks the proof.
 * - **Solidity-compatible.** The inner hash is `abi.encode` of five static words, so
 *   `AnchorLeaf.hash` in `contracts/AnchorLeaf.sol` (exposed as `AnchorRegistry.leafHash`)
 *   computes the same leaf on chain. Hashing twice is OpenZeppelin's `StandardMerkleTree`
 *   convention: a leaf is never 64 bytes of preimage away from an inner node, which rules out
 *   second-preimage attacks on the tree. The domain tag versions the encoding and keeps these
 *   leaves from colliding with any other protocol's.
 *
 * Vellum's version ids are the positive integers its repository assigns, encoded as uint64.
 */
import { createHmac, createSecretKey, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import canonicalize from 'canonicalize';
import { CID } from 'multiformats/cid';
import { chainError, type ChainError } from './errors.ts';
import { keccak256 } from './keccak.ts';

/** Size of salts, pseudonyms and digests, in bytes. */
export const LEAF_WORD = 32;
/** The smallest pseudonym key accepted, in bytes (HMAC-SHA-256 keys shorter than this weaken it). */
export const MIN_PSEUDONYM_KEY_BYTES = 32;

const encoder = new TextEncoder();

/** Domain tag of version 1 of the leaf encoding: `keccak256("vellum.anchor.leaf.v1")`. */
export const LEAF_DOMAIN: Uint8Array = keccak256(encoder.encode('vellum.anchor.leaf.v1'));
/** Context string prefixed to every pseudonym input, so the key is never used for anything else. */
export const PSEUDONYM_CONTEXT = 'vellum.pseudonym.v1';

const MAX_UINT64 = (1n << 64n) - 1n;

/** Error raised for arguments no leaf can be computed from. */
export interface LeafArgumentError extends ChainError {
  readonly code:
    | 'VLM_CHAIN_LEAF_BAD_KEY'
    | 'VLM_CHAIN_LEAF_BAD_SALT'
    | 'VLM_CHAIN_LEAF_BAD_VERSION'
    | 'VLM_CHAIN_LEAF_BAD_ID'
    | 'VLM_CHAIN_LEAF_BAD_CID'
    | 'VLM_CHAIN_LEAF_BAD_CONTENT'
    | 'VLM_CHAIN_LEAF_BAD_PART';
  readonly category: 'invalid';
}

function invalid(code: LeafArgumentError['code'], message: string, cause?: unknown): LeafArgumentError {
  return chainError(code, 'invalid', message, cause) as LeafArgumentError;
}

/** A CID as the storage layer hands it out: its string form, its binary form, or a CID object. */
export type CidInput = string | Uint8Array | { readonly bytes: Uint8Array };

/** What a leaf is computed from. Give either `canonicalJson` or `resource`. */
export interface LeafInput {
  resourceType: string;
  id: string;
  /** `meta.versionId`: a positive integer (number, bigint or decimal string). */
  versionId: number | bigint | string;
  /** The version's RFC 8785 canonical JSON (string or its UTF-8 bytes), used as given. */
  canonicalJson?: string | Uint8Array;
  /** The version as a JSON value; canonicalised here with RFC 8785. */
  resource?: unknown;
  /** The version's 32-byte random salt (`newSalt()`); stored with the version, never published. */
  salt: Uint8Array;
  /** CID of the version's encrypted envelope. */
  cid: CidInput;
  /** The server's pseudonym key (at least 32 bytes). */
  pseudonymKey: Uint8Array;
}

/** The four committed words of a leaf: what a proof document publishes so others can recompute it. */
export interface LeafParts {
  pseudonym: Uint8Array;
  versionId: bigint;
  contentDigest: Uint8Array;
  cidDigest: Uint8Array;
}

/** A computed leaf and the parts it was computed from. */
export interface Leaf extends LeafParts {
  leaf: Uint8Array;
}

/**
 * Salts are cut from a pooled random buffer: `randomBytes(32)` costs about as much as a 4 KiB draw
 * (each call enters OpenSSL's generator), and every version — every AuditEvent — takes one. Same
 * generator; each byte is handed out once (a refill allocates a new buffer). Per thread.
 */
const SALT_POOL_BYTES = 128 * LEAF_WORD;
let saltPool = new Uint8Array(0);
let saltOffset = 0;

/** A fresh 32-byte random salt for a new version (its own copy). */
export function newSalt(): Uint8Array {
  if (saltOffset + LEAF_WORD > saltPool.length) {
    saltPool = new Uint8Array(randomBytes(SALT_POOL_BYTES));
    saltOffset = 0;
  }
  return saltPool.slice(saltOffset, (saltOffset += LEAF_WORD));
}

/**
 * Pseudonym keys as KeyObjects, by the array given: node:crypto re-imports a raw key on every
 * HMAC, which costs several times the HMAC itself. The bytes are compared on every use, so a key
 * array changed in place is imported again.
 */
const keyObjects = new WeakMap<Uint8Array, { bytes: Uint8Array; key: KeyObject }>();

function hmacKey(key: Uint8Array): KeyObject {
  const known = keyObjects.get(key);
  if (known && known.bytes.length === key.length && timingSafeEqual(known.bytes, key)) return known.key;
  const entry = { bytes: new Uint8Array(key), key: createSecretKey(key) };
  keyObjects.set(key, entry);
  return entry.key;
}

/**
 * The keyed pseudonym of a resource: HMAC-SHA-256 under `key` of the resource's type and id.
 * Raises VLM_CHAIN_LEAF_BAD_KEY or VLM_CHAIN_LEAF_BAD_ID.
 */
export function pseudonym(key: Uint8Array, resourceType: string, id: string): Uint8Array {
  if (!(key instanceof Uint8Array) || key.length < MIN_PSEUDONYM_KEY_BYTES) {
    throw invalid('VLM_CHAIN_LEAF_BAD_KEY', `the pseudonym key must be at least ${MIN_PSEUDONYM_KEY_BYTES} bytes`);
  }
  // "/" cannot occur in a resource type, so type/id pairs map to distinct inputs.
  if (typeof resourceType !== 'string' || !/^[A-Za-z]+$/.test(resourceType) || typeof id !== 'string' || id.length === 0) {
    throw invalid('VLM_CHAIN_LEAF_BAD_ID', 'resourceType must be letters and id must not be empty');
  }
  return new Uint8Array(
    createHmac('sha256', hmacKey(key)).update(`${PSEUDONYM_CONTEXT}\u0000${resourceType}/${id}`, 'utf8').digest(),
  );
}

/**
 * The salted digest of a version's canonical JSON: `keccak256(salt ‖ canonicalJson)`.
 * Raises VLM_CHAIN_LEAF_BAD_SALT.
 */
export function contentDigest(salt: Uint8Array, canonicalJson: string | Uint8Array): Uint8Array {
  if (!(salt instanceof Uint8Array) || salt.length !== LEAF_WORD) {
    throw invalid('VLM_CHAIN_LEAF_BAD_SALT', `the salt must be ${LEAF_WORD} bytes`);
  }
  // Hashed as two parts: the same digest as of their concatenation, without copying the JSON.
  return keccak256(salt, typeof canonicalJson === 'string' ? encoder.encode(canonicalJson) : canonicalJson);
}

/** Depth past which the fast path hands over to the library (which detects cycles). */
const FAST_DEPTH = 64;
/** Marks a value the fast path does not handle (the library decides: serialize it or refuse it). */
const NOT_PLAIN = Symbol('not plain JSON');
/** Keys V8 enumerates before the others whatever the insertion order (array-index-like). */
const INDEX_KEY = /^(?:0|[1-9]\d*)$/;

/**
 * A copy of plain JSON data — null, booleans, finite numbers, well-formed strings, arrays and
 * plain objects, as `JSON.parse` gives and the write path builds — with every object's members
 * inserted in UTF-16 code unit order (`sort()`'s), or NOT_PLAIN. For such data RFC 8785 is
 * exactly `JSON.stringify` of that copy: JCS serializes strings and numbers as ECMAScript does,
 * and V8 keeps insertion order for keys that are not array indices (those are refused here).
 */
function sortedCopy(value: unknown, depth: number): unknown {
  switch (typeof value) {
    case 'string':
      return value.isWellFormed() ? value : NOT_PLAIN;
    case 'number':
      return Number.isFinite(value) ? value : NOT_PLAIN;
    case 'boolean':
      return value;
    case 'object': {
      if (value === null) return null;
      if (depth > FAST_DEPTH) return NOT_PLAIN;
      if (Array.isArray(value)) {
        const out = new Array<unknown>(value.length);
        for (let i = 0; i < value.length; i++) {
          const item = sortedCopy(value[i], depth + 1);
          if (item === NOT_PLAIN) return NOT_PLAIN;
          out[i] = item;
        }
        return out;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) return NOT_PLAIN;
      const record = value as Record<string, unknown>;
      if (typeof record.toJSON === 'function') return NOT_PLAIN;
      const out: Record<string, unknown> = {};
      for (const key of Object.keys(record).sort()) {
        if (!key.isWellFormed() || INDEX_KEY.test(key)) return NOT_PLAIN;
        const member = sortedCopy(record[key], depth + 1);
        if (member === NOT_PLAIN) return NOT_PLAIN;
        out[key] = member;
      }
      return out;
    }
    default:
      return NOT_PLAIN;
  }
}

/**
 * RFC 8785 canonical JSON of a JSON value (UTF-8 string). Raises VLM_CHAIN_LEAF_BAD_CONTENT
 * if the value has no JSON form (undefined, a function…).
 */
export function canonicalJson(value: unknown): string {
  // Plain data (every version and AuditEvent) takes the fast path: about twice as fast as the
  // library's per-node frames and cycle set. Anything else — toJSON, boxed primitives, NaN, lone
  // surrogates, undefined members, index-like keys, deep nesting — goes to the library, which
  // serializes or refuses it; test/chain/canonical.test.ts checks both agree.
  const copy = sortedCopy(value, 0);
  if (copy !== NOT_PLAIN) return JSON.stringify(copy);
  let json: string | undefined;
  try {
    json = canonicalize(value);
  } catch (err) {
    throw invalid('VLM_CHAIN_LEAF_BAD_CONTENT', 'the resource cannot be canonicalised', err);
  }
  if (json === undefined) throw invalid('VLM_CHAIN_LEAF_BAD_CONTENT', 'the resource has no JSON form');
  return json;
}

/** The binary form of a CID. Raises VLM_CHAIN_LEAF_BAD_CID. */
export function cidBytes(cid: CidInput): Uint8Array {
  if (cid instanceof Uint8Array) {
    if (cid.length === 0) throw invalid('VLM_CHAIN_LEAF_BAD_CID', 'empty CID');
    return cid;
  }
  if (typeof cid === 'string') {
    try {
      return CID.parse(cid).bytes;
    } catch (err) {
      throw invalid('VLM_CHAIN_LEAF_BAD_CID', 'not a CID string', err);
    }
  }
  if (cid !== null && typeof cid === 'object' && cid.bytes instanceof Uint8Array && cid.bytes.length > 0) {
    return cid.bytes;
  }
  throw invalid('VLM_CHAIN_LEAF_BAD_CID', 'not a CID');
}

/** `keccak256` of the envelope's binary CID. Raises VLM_CHAIN_LEAF_BAD_CID. */
export function cidDigest(cid: CidInput): Uint8Array {
  return keccak256(cidBytes(cid));
}

/** A version id as uint64. Raises VLM_CHAIN_LEAF_BAD_VERSION unless it is an integer in 1..2^64−1. */
export function versionNumber(versionId: number | bigint | string): bigint {
  let v: bigint | undefined;
  if (typeof versionId === 'bigint') v = versionId;
  else if (typeof versionId === 'number' && Number.isSafeInteger(versionId)) v = BigInt(versionId);
  else if (typeof versionId === 'string' && /^[1-9][0-9]{0,19}$/.test(versionId)) v = BigInt(versionId);
  if (v === undefined || v < 1n || v > MAX_UINT64) {
    throw invalid('VLM_CHAIN_LEAF_BAD_VERSION', 'the version id must be an integer from 1 to 2^64 - 1');
  }
  return v;
}

/**
 * The leaf of already-computed parts: what a verifier who holds a proof document (but not the
 * server's key) recomputes. Same as `AnchorRegistry.leafHash`. Raises VLM_CHAIN_LEAF_BAD_PART or
 * VLM_CHAIN_LEAF_BAD_VERSION.
 */
export function leafFromParts(parts: LeafParts): Uint8Array {
  for (const name of ['pseudonym', 'contentDigest', 'cidDigest'] as const) {
    const word = parts[name];
    if (!(word instanceof Uint8Array) || word.length !== LEAF_WORD) {
      throw invalid('VLM_CHAIN_LEAF_BAD_PART', `${name} must be ${LEAF_WORD} bytes`);
    }
  }
  // abi.encode(bytes32 domain, bytes32 pseudonym, uint64 versionId, bytes32 contentDigest, bytes32 cidDigest):
  // five 32-byte words, the uint64 right-aligned (big-endian) in its word.
  const words = new Uint8Array(5 * LEAF_WORD);
  words.set(LEAF_DOMAIN, 0 * LEAF_WORD);
  words.set(parts.pseudonym, 1 * LEAF_WORD);
  new DataView(words.buffer).setBigUint64(3 * LEAF_WORD - 8, versionNumber(parts.versionId));
  words.set(parts.contentDigest, 3 * LEAF_WORD);
  words.set(parts.cidDigest, 4 * LEAF_WORD);
  return keccak256(keccak256(words));
}

/**
 * The anchor leaf of one resource version, with its parts. Raises any of the
 * VLM_CHAIN_LEAF_* codes above for malformed input.
 */
export function computeLeaf(input: LeafInput): Leaf {
  let json: string | Uint8Array;
  if (input.canonicalJson !== undefined) json = input.canonicalJson;
  else if (input.resource !== undefined) json = canonicalJson(input.resource);
  else throw invalid('VLM_CHAIN_LEAF_BAD_CONTENT', 'give canonicalJson or resource');

  const parts: LeafParts = {
    pseudonym: pseudonym(input.pseudonymKey, input.resourceType, input.id),
    versionId: versionNumber(input.versionId),
    contentDigest: contentDigest(input.salt, json),
    cidDigest: cidDigest(input.cid),
  };
  return { ...parts, leaf: leafFromParts(parts) };
}
