/**
 * Envelope encryption as standard JWE (RFC 7516), so any JOSE library holding a scope's data
 * key can decrypt an envelope.
 *
 * Serialization: JWE **compact** (`header.encryptedKey.iv.ciphertext.tag`). One recipient and
 * no unprotected headers or external AAD are needed, and compact is the form every JOSE
 * implementation supports; the flattened JSON form would only add JSON overhead. Everything we
 * need authenticated goes in the protected header, which AES-GCM authenticates as AAD.
 *
 * Protected header:
 * - `alg: "A256KW"`: a fresh random CEK per envelope, wrapped with the scope's 256-bit data key;
 * - `enc: "A256GCM"`;
 * - `kid`: the key scope (a patient pseudonym, or "shared"), telling a holder of several data keys which one opens it;
 * - `vlm.bnd`: base64url HMAC-SHA256 (master-derived key) of `type/id/versionId`. Envelopes end
 *   up public on IPFS, so no raw id appears; an envelope presented for another binding fails
 *   with `VLM_CIPHER_BINDING`.
 *
 * Data keys: 32 random bytes per scope, created on first use, wrapped with AES-256-GCM under a
 * key derived from the master key (HKDF, own label) with the scope as AAD (a wrapped key moved
 * to another scope does not unwrap), and kept in the DataKeyStore. Deleting a scope's wrapped key
 * crypto-shreds every envelope of that scope.
 */
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, randomBytes, timingSafeEqual, webcrypto, type KeyObject } from 'node:crypto';
import { CompactEncrypt, compactDecrypt, decodeProtectedHeader } from 'jose';
import type { AbortOptions } from './blob-store.ts';
import type { Cipher, DataKeyStore, EnvelopeBinding } from './cipher.ts';
import { storageError } from './errors.ts';
import { deriveKey, KEY_PURPOSE } from './keys.ts';

/** JWE key-management algorithm of every envelope. */
export const ENVELOPE_ALG = 'A256KW';
/** JWE content-encryption algorithm of every envelope. */
export const ENVELOPE_ENC = 'A256GCM';
/** Protected header parameter holding the keyed binding tag. */
export const BINDING_HEADER = 'vlm.bnd';

const WRAP_VERSION = 0x01;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const DATA_KEY_BYTES = 32;
const WRAPPED_BYTES = 1 + IV_BYTES + DATA_KEY_BYTES + TAG_BYTES;

/** Tuning for {@link JweCipher}. */
export interface JweCipherOptions {
  /** Unwrapped data keys kept in memory (least recently used evicted first). Default 10,000. */
  cacheSize?: number;
}

interface CachedKey {
  /** The wrapped form it was unwrapped from: a different stored value means the key changed. */
  wrapped: Uint8Array;
  key: webcrypto.CryptoKey;
}

/** Cipher producing JWE compact envelopes (A256KW + A256GCM) with per-scope data keys. */
export class JweCipher implements Cipher {
  readonly #store: DataKeyStore;
  readonly #wrapKey: KeyObject;
  readonly #bindingKey: KeyObject;
  readonly #cache = new Map<string, CachedKey>();
  readonly #cacheSize: number;
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder('utf-8', { fatal: true });

  constructor(masterKey: Uint8Array, dataKeys: DataKeyStore, options: JweCipherOptions = {}) {
    this.#store = dataKeys;
    this.#wrapKey = createSecretKey(deriveKey(masterKey, KEY_PURPOSE.dataKeyWrap));
    this.#bindingKey = createSecretKey(deriveKey(masterKey, KEY_PURPOSE.binding));
    this.#cacheSize = Math.max(1, options.cacheSize ?? 10_000);
  }

  /** Encrypt `plaintext` into a JWE compact envelope bound to `binding` (creating the scope's data key on first use). */
  async seal(plaintext: Uint8Array, binding: EnvelopeBinding, options?: AbortOptions): Promise<Uint8Array> {
    checkAbort(options);
    const bnd = this.#bindingTag(binding);
    const key = await this.#dataKey(binding.keyScope, true);
    checkAbort(options);
    let jwe: string;
    try {
      jwe = await new CompactEncrypt(plaintext)
        .setProtectedHeader({ alg: ENVELOPE_ALG, enc: ENVELOPE_ENC, kid: binding.keyScope, [BINDING_HEADER]: bnd })
        .encrypt(key);
    } catch (err) {
      throw storageError('VLM_CIPHER_SEAL', 'fault', 'JWE encryption failed', err);
    }
    return this.#encoder.encode(jwe);
  }

  /**
   * Decrypt an envelope made by {@link seal} for exactly this binding. Another binding, a
   * malformed or tampered envelope → `VLM_CIPHER_BINDING` (fault); the scope's key was
   * deleted → `VLM_CIPHER_KEY_SHREDDED` (gone); the wrapped key does not unwrap (another master
   * key) → `VLM_CIPHER_KEY_UNWRAP` (fault).
   */
  async open(envelope: Uint8Array, binding: EnvelopeBinding, options?: AbortOptions): Promise<Uint8Array> {
    checkAbort(options);
    let jwe: string;
    let header: Record<string, unknown>;
    try {
      jwe = this.#decoder.decode(envelope);
      header = decodeProtectedHeader(jwe);
    } catch (err) {
      throw bindingError('envelope is not a JWE compact serialization', err);
    }
    if (header.alg !== ENVELOPE_ALG || header.enc !== ENVELOPE_ENC || 'zip' in header) {
      throw bindingError('envelope uses unexpected JWE algorithms');
    }
    if (header.kid !== binding.keyScope) throw bindingError('envelope was sealed for another key scope');
    // Key first: with the wrong master key the binding tag cannot match either, and
    // "cannot unwrap" is the accurate diagnosis.
    const key = await this.#dataKey(binding.keyScope, false);
    const expected = this.#bindingTag(binding);
    const actual = header[BINDING_HEADER];
    if (typeof actual !== 'string' || !sameString(actual, expected)) {
      throw bindingError('envelope was sealed for another resource version');
    }
    checkAbort(options);
    try {
      const { plaintext } = await compactDecrypt(jwe, key, {
        keyManagementAlgorithms: [ENVELOPE_ALG],
        contentEncryptionAlgorithms: [ENVELOPE_ENC],
      });
      return plaintext;
    } catch (err) {
      throw bindingError('envelope failed authentication', err);
    }
  }

  /** Crypto-shred a scope: delete its wrapped data key from the store and forget the cached key. */
  shred(scope: string): void {
    this.#store.deleteWrappedKey(scope);
    this.#cache.delete(scope);
  }

  #bindingTag(binding: EnvelopeBinding): string {
    const { resourceType, id, versionId, keyScope } = binding;
    for (const part of [resourceType, id, versionId]) {
      if (typeof part !== 'string' || part.length === 0 || part.includes('/')) {
        throw storageError('VLM_CIPHER_BINDING_INVALID', 'invalid', 'binding needs non-empty resourceType, id and versionId without "/"');
      }
    }
    if (typeof keyScope !== 'string' || keyScope.length === 0) {
      throw storageError('VLM_CIPHER_BINDING_INVALID', 'invalid', 'binding needs a non-empty keyScope');
    }
    return createHmac('sha256', this.#bindingKey).update(`${resourceType}/${id}/${versionId}`, 'utf8').digest('base64url');
  }

  /**
   * The scope's data key as a non-extractable AES-KW CryptoKey. The store is consulted on every
   * call (one point lookup) so a key shredded elsewhere, e.g. by another API node, stops working
   * here at once; the unwrap and import are cached.
   */
  async #dataKey(scope: string, create: boolean): Promise<webcrypto.CryptoKey> {
    let wrapped = this.#store.getWrappedKey(scope);
    if (wrapped === undefined) {
      this.#cache.delete(scope);
      if (!create) throw storageError('VLM_CIPHER_KEY_SHREDDED', 'gone', 'the data key of this key scope has been deleted');
      const fresh = randomBytes(DATA_KEY_BYTES);
      // If another writer got there first, its key wins and ours is discarded.
      wrapped = this.#store.putWrappedKeyIfAbsent(scope, wrapDataKey(this.#wrapKey, scope, fresh));
      fresh.fill(0);
    }
    const cached = this.#cache.get(scope);
    if (cached !== undefined && bytesEqual(cached.wrapped, wrapped)) {
      this.#cache.delete(scope); // refresh LRU position
      this.#cache.set(scope, cached);
      return cached.key;
    }
    const raw = unwrapWith(this.#wrapKey, scope, wrapped);
    let key: webcrypto.CryptoKey;
    try {
      key = await webcrypto.subtle.importKey('raw', raw, 'AES-KW', false, ['wrapKey', 'unwrapKey']);
    } finally {
      raw.fill(0);
    }
    this.#cache.delete(scope);
    this.#cache.set(scope, { wrapped: wrapped.slice(), key });
    while (this.#cache.size > this.#cacheSize) {
      const oldest = this.#cache.keys().next().value;
      if (oldest === undefined) break;
      this.#cache.delete(oldest);
    }
    return key;
  }
}

/**
 * Unwrap a stored data key (for exporting one scope's key to another party, who can then read
 * that scope's envelopes with any JWE library). Raises `VLM_CIPHER_KEY_UNWRAP` (fault).
 */
export function unwrapDataKey(masterKey: Uint8Array, scope: string, wrapped: Uint8Array): Uint8Array {
  return unwrapWith(createSecretKey(deriveKey(masterKey, KEY_PURPOSE.dataKeyWrap)), scope, wrapped);
}

function wrapDataKey(kek: KeyObject, scope: string, dataKey: Uint8Array): Uint8Array {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', kek, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(wrapAad(scope));
  const ct = Buffer.concat([cipher.update(dataKey), cipher.final()]);
  const out = new Uint8Array(WRAPPED_BYTES);
  out[0] = WRAP_VERSION;
  out.set(iv, 1);
  out.set(ct, 1 + IV_BYTES);
  out.set(cipher.getAuthTag(), 1 + IV_BYTES + DATA_KEY_BYTES);
  return out;
}

function unwrapWith(kek: KeyObject, scope: string, wrapped: Uint8Array): Uint8Array {
  if (wrapped.byteLength !== WRAPPED_BYTES || wrapped[0] !== WRAP_VERSION) {
    throw storageError('VLM_CIPHER_KEY_UNWRAP', 'fault', 'stored data key has an unknown format');
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', kek, wrapped.subarray(1, 1 + IV_BYTES), { authTagLength: TAG_BYTES });
    decipher.setAAD(wrapAad(scope));
    decipher.setAuthTag(wrapped.subarray(1 + IV_BYTES + DATA_KEY_BYTES));
    const out = Buffer.concat([decipher.update(wrapped.subarray(1 + IV_BYTES, 1 + IV_BYTES + DATA_KEY_BYTES)), decipher.final()]);
    const key = new Uint8Array(out); // own copy: `out` may sit in Node's shared buffer pool
    out.fill(0);
    return key;
  } catch (err) {
    throw storageError('VLM_CIPHER_KEY_UNWRAP', 'fault', 'stored data key does not unwrap under this master key', err);
  }
}

function wrapAad(scope: string): Uint8Array {
  return Buffer.from(`vellum/v1/data-key\u0000${scope}`, 'utf8');
}

function bindingError(message: string, cause?: unknown) {
  return storageError('VLM_CIPHER_BINDING', 'fault', message, cause);
}

function checkAbort(options: AbortOptions | undefined): void {
  const signal = options?.signal;
  if (signal?.aborted) throw storageError('VLM_CIPHER_ABORTED', 'unavailable', 'cipher operation aborted', signal.reason);
}

function sameString(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}
