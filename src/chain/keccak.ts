/**
 * Keccak-256 (Ethereum's, not SHA3-256) for the anchor leaves and Merkle trees.
 *
 * The hashing runs in `hash-wasm`'s WebAssembly Keccak, about ten times faster than a JavaScript
 * implementation for a 1.5 KB resource: every version (and every AuditEvent) costs four keccaks,
 * every batch one per inner node. WebAssembly instantiates asynchronously, so the hasher is
 * created when this module loads (once per thread: the audit converter's worker thread has its
 * own) and, until it is ready — the first few milliseconds of a process — or if WebAssembly is
 * unavailable, `@noble/hashes`' `keccak_256` computes the identical digest. test/chain/keccak.test.ts
 * compares both on random inputs of many sizes.
 *
 * The hasher is one shared state machine, used synchronously (init, update, digest in one call),
 * so calls cannot interleave within a thread.
 */
import { keccak_256 as keccakJs } from '@noble/hashes/sha3.js';
import { createKeccak, type IHasher } from 'hash-wasm';

let hasher: IHasher | undefined;

/** Resolves once the WebAssembly hasher is in use (or failed to start: the JavaScript one stays). */
export const keccakReady: Promise<void> = createKeccak(256).then(
  (h) => {
    hasher = h;
  },
  () => undefined,
);

/** Which implementation `keccak256` uses now (for tests and diagnostics). */
export function keccakBackend(): 'wasm' | 'js' {
  return hasher ? 'wasm' : 'js';
}

/** keccak-256 of the concatenation of `parts` (no copy is made to concatenate them). */
export function keccak256(...parts: (Uint8Array | string)[]): Uint8Array {
  if (hasher) {
    hasher.init();
    for (const part of parts) hasher.update(part);
    return hasher.digest('binary');
  }
  if (parts.length === 1 && typeof parts[0] !== 'string') return keccakJs(parts[0]!);
  const h = keccakJs.create();
  for (const part of parts) h.update(typeof part === 'string' ? new TextEncoder().encode(part) : part);
  return h.digest();
}
