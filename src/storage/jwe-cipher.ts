/**
 * Envelope encryption as standard JWE (RFC 7516), so any JOSE library holding a scope's data
 * key can decrypt an envelope.
 *
 * Serialization: JWE **compact** (`header.encryptedKey.iv.ciphertext.tag`). One recipient and
 * no unprotected headers or external AAD are needed, and compact is the form every JOSE
 * implementation supports; the flattened JSON form would only add JSON overhead. Everything we
 * need authenticated goes in the protected header, which AES-GCM authenticates as AAD.
 *
 * Protected header, exactly `{"alg":"A256KW","enc":"A256GCM","vlm.bnd":"…"}`:
 * - `alg: "A256KW"`: a fresh random CEK per envelope, wrapped (RFC 3394) with the scope's
 *   256-bit data key;
 * - `enc: "A256GCM"`: 96-bit random IV, 128-bit tag, AAD = the ASCII bytes of the encoded
 *   protected header (RFC 7516 §5.1 step 14);
 * - `vlm.bnd`: base64url HMAC-SHA256 (master-derived key) of `type/id/versionId`. Envelopes end
 *   up public on IPFS, so no raw id appears; an envelope presented for another binding fails
 *   with `VLM_CIPHER_BINDING`. It is unique per resource version, so it links nothing.
 *
 * No `kid`. Envelopes are public (IPFS), and a `kid` naming the key scope (the patient
 * pseudonym) let anyone group every envelope of one patient. We do not replace it with a
 * per-envelope random value either: a value that carries no grouping information also carries
 * no key-selection information, so it would help no reader. The reader always knows the scope
 * anyway: the index records each version's key scope and passes it in
 * `EnvelopeBinding.keyScope`, and whoever receives an exported data key (see
 * {@link unwrapDataKey}) receives it for a known scope. The envelope is still bound to its scope
 * cryptographically: the CEK only unwraps (AES-KW integrity check) under that scope's data key.
 * Envelopes sealed before this change carry `kid` = scope; `open` still accepts them when the
 * `kid` equals the binding's scope (the header is GCM AAD, so it cannot have been altered) and
 * rejects any other `kid`. Everything else about an envelope is per-envelope random (CEK, IV)
 * or per-version (`vlm.bnd`, ciphertext), so envelopes of one patient share only `alg`/`enc`,
 * which every envelope shares.
 *
 * Crypto runs synchronously through `node:crypto` (AES key wrap via `id-aes256-wrap`, AES-256-GCM)
 * rather than through a JOSE library: jose 6 uses async WebCrypto, several thread-pool round trips
 * per envelope, which capped throughput at a few thousand envelopes per second. The format is
 * the standard one; the tests prove jose opens our envelopes and we open jose's.
 *
 * Data keys: 32 random bytes per scope, created on first use, wrapped with AES-256-GCM under a
 * key derived from the master key (HKDF, own label) with the scope as AAD (a wrapped key moved
 * to another scope does not unwrap), and kept in the DataKeyStore. Deleting a scope's wrapped key
 * crypto-shreds every envelope of that scope.
 */
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { AbortOptions } from './blob-store.ts';
import type { Cipher, DataKeyStore, EnvelopeBinding } from './cipher.ts';
import { isStorageError, storageError } from './errors.ts';
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

/** Content-encryption key of A256GCM. */
const CEK_BYTES = 32;
/** A256KW output for a 32-byte CEK: the key plus one 64-bit integrity block (RFC 3394). */
const ENCRYPTED_KEY_BYTES = CEK_BYTES + 8;
/** RFC 3394 default initial value; node's `id-aes256-wrap` takes it as the IV. */
const KW_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');
const KW_CIPHER = 'id-aes256-wrap';
const GCM_CIPHER = 'aes-256-gcm';
const DOT = 0x2e;
const BASE64URL = /^[A-Za-z0-9_-]*$/;

/** Tuning for {@link JweCipher}. */
export interface JweCipherOptions {
  /** Unwrapped data keys kept in memory (least recently used evicted first). Default 10,000. */
  cacheSize?: number;
}

interface CachedKey {
  /** The wrapped form it was unwrapped from: a different stored value means the key changed. */
  wrapped: Uint8Array;
  /** The unwrapped data key (the A256KW key-encryption key), kept inside a KeyObject. */
  key: KeyObject;
}

/** Cipher producing JWE compact envelopes (A256KW + A256GCM) with per-scope data keys. */
export class JweCipher implements Cipher {
  readonly #store: DataKeyStore;
  readonly #wrapKey: KeyObject;
  readonly #bindingKey: KeyObject;
  readonly #cache = new Map<string, CachedKey>();
  readonly #cacheSize: number;
  readonly #utf8 = new TextDecoder('utf-8', { fatal: true });

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
    const kek = await this.#dataKey(binding.keyScope, true);
    checkAbort(options);
    // Fixed member order; the encoded form is what GCM authenticates, so it is built once here.
    const header = Buffer.from(JSON.stringify({ alg: ENVELOPE_ALG, enc: ENVELOPE_ENC, [BINDING_HEADER]: bnd }), 'utf8').toString('base64url');
    const random = randomBytes(CEK_BYTES + IV_BYTES);
    const cek = random.subarray(0, CEK_BYTES);
    const iv = random.subarray(CEK_BYTES);
    let encryptedKey: Buffer;
    let ciphertext: Buffer;
    let tag: Buffer;
    try {
      encryptedKey = finish(createCipheriv(KW_CIPHER, kek, KW_IV), cek);
      // As a KeyObject: node:crypto imports a raw key on every cipher, which costs more than
      // importing it once here and encrypting with the object.
      const gcm = createCipheriv(GCM_CIPHER, createSecretKey(cek), iv, { authTagLength: TAG_BYTES });
      gcm.setAAD(Buffer.from(header, 'latin1'));
      ciphertext = finish(gcm, plaintext);
      tag = gcm.getAuthTag();
    } catch (err) {
      throw storageError('VLM_CIPHER_SEAL', 'fault', 'JWE encryption failed', err);
    } finally {
      cek.fill(0);
    }
    if (encryptedKey.byteLength !== ENCRYPTED_KEY_BYTES || tag.byteLength !== TAG_BYTES) {
      throw storageError('VLM_CIPHER_SEAL', 'fault', 'JWE encryption produced unexpected lengths');
    }
    return joinCompact([header, encryptedKey.toString('base64url'), iv.toString('base64url'), ciphertext.toString('base64url'), tag.toString('base64url')]);
  }

  /**
   * Decrypt an envelope made by {@link seal} (or by any JWE library with the same header) for
   * exactly this binding. Another binding, a malformed or tampered envelope →
   * `VLM_CIPHER_BINDING` (fault); the scope's key was deleted → `VLM_CIPHER_KEY_SHREDDED`
   * (gone); the wrapped key does not unwrap (another master key) → `VLM_CIPHER_KEY_UNWRAP`
   * (fault). Envelopes carry no scope, so one opened under a scope that has no data key at all
   * reports `VLM_CIPHER_KEY_SHREDDED`, and one opened under another existing scope's key fails
   * the key unwrap → `VLM_CIPHER_BINDING`.
   */
  async open(envelope: Uint8Array, binding: EnvelopeBinding, options?: AbortOptions): Promise<Uint8Array> {
    checkAbort(options);
    const jwe = this.#parse(envelope);
    const header = jwe.header;
    if (header.alg !== ENVELOPE_ALG || header.enc !== ENVELOPE_ENC || 'zip' in header) {
      throw bindingError('envelope uses unexpected JWE algorithms');
    }
    // We implement no JWE extensions, so any `crit` is one we do not understand (RFC 7515 §4.1.11).
    if ('crit' in header) throw bindingError('envelope requires unsupported JWE extensions');
    // Legacy envelopes named their scope in `kid` (see the module comment).
    if ('kid' in header && header.kid !== binding.keyScope) throw bindingError('envelope was sealed for another key scope');
    const expected = this.#bindingTag(binding);
    // Key first: with the wrong master key the binding tag cannot match either, and
    // "cannot unwrap" is the accurate diagnosis.
    const kek = await this.#dataKey(binding.keyScope, false);
    const actual = header[BINDING_HEADER];
    if (typeof actual !== 'string' || !sameString(actual, expected)) {
      throw bindingError('envelope was sealed for another resource version');
    }
    checkAbort(options);
    let cek: Buffer;
    try {
      cek = finish(createDecipheriv(KW_CIPHER, kek, KW_IV), jwe.encryptedKey);
    } catch (err) {
      throw bindingError('envelope content key does not unwrap under the data key of this key scope', err);
    }
    try {
      if (cek.byteLength !== CEK_BYTES) throw bindingError('envelope content key has the wrong length');
      const gcm = createDecipheriv(GCM_CIPHER, cek, jwe.iv, { authTagLength: TAG_BYTES });
      gcm.setAAD(jwe.aad);
      gcm.setAuthTag(jwe.tag);
      return plainBytes(finish(gcm, jwe.ciphertext));
    } catch (err) {
      if (isStorageError(err, 'VLM_CIPHER_BINDING')) throw err;
      throw bindingError('envelope failed authentication', err);
    } finally {
      cek.fill(0);
    }
  }

  /** Crypto-shred a scope: delete its wrapped data key from the store and forget the cached key. */
  async shred(scope: string): Promise<void> {
    await this.#store.deleteWrappedKey(scope);
    this.#cache.delete(scope);
  }

  /**
   * Split and decode a JWE compact serialization strictly: exactly five segments of canonical
   * unpadded base64url, a protected header that is a UTF-8 JSON object, a 40-byte encrypted key,
   * a 12-byte IV and a 16-byte tag. Anything else → `VLM_CIPHER_BINDING`.
   */
  #parse(envelope: Uint8Array): ParsedJwe {
    if (!(envelope instanceof Uint8Array)) throw bindingError('envelope is not a byte array');
    // latin1 maps every byte to one char; non-ASCII bytes then fail the base64url check.
    const parts = Buffer.from(envelope.buffer, envelope.byteOffset, envelope.byteLength).toString('latin1').split('.');
    if (parts.length !== 5) throw bindingError('envelope is not a JWE compact serialization (expected 5 segments)');
    const [h, ek, iv, ct, tag] = parts as [string, string, string, string, string];
    if (h.length === 0) throw bindingError('envelope has an empty protected header');
    let header: unknown;
    try {
      header = JSON.parse(this.#utf8.decode(base64url(h, 'protected header')));
    } catch (err) {
      if (isStorageError(err, 'VLM_CIPHER_BINDING')) throw err;
      throw bindingError('envelope protected header is not UTF-8 JSON', err);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) {
      throw bindingError('envelope protected header is not a JSON object');
    }
    const parsed: ParsedJwe = {
      header: header as Record<string, unknown>,
      aad: Buffer.from(h, 'latin1'),
      encryptedKey: base64url(ek, 'encrypted key'),
      iv: base64url(iv, 'IV'),
      ciphertext: base64url(ct, 'ciphertext'),
      tag: base64url(tag, 'authentication tag'),
    };
    if (parsed.encryptedKey.byteLength !== ENCRYPTED_KEY_BYTES) throw bindingError('envelope encrypted key has the wrong length');
    if (parsed.iv.byteLength !== IV_BYTES) throw bindingError('envelope IV has the wrong length');
    if (parsed.tag.byteLength !== TAG_BYTES) throw bindingError('envelope authentication tag has the wrong length');
    return parsed;
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
   * The scope's data key (the A256KW key-encryption key) as a secret KeyObject. The store is
   * consulted on every call (one point lookup) so a key shredded elsewhere, e.g. by another API
   * node, stops working here at once; the unwrap is cached.
   */
  async #dataKey(scope: string, create: boolean): Promise<KeyObject> {
    let wrapped = await this.#store.getWrappedKey(scope);
    if (wrapped === undefined) {
      this.#cache.delete(scope);
      if (!create) throw storageError('VLM_CIPHER_KEY_SHREDDED', 'gone', 'the data key of this key scope has been deleted');
      const fresh = randomBytes(DATA_KEY_BYTES);
      // If another writer got there first, its key wins and ours is discarded.
      wrapped = await this.#store.putWrappedKeyIfAbsent(scope, wrapDataKey(this.#wrapKey, scope, fresh));
      fresh.fill(0);
    }
    const cached = this.#cache.get(scope);
    if (cached !== undefined && bytesEqual(cached.wrapped, wrapped)) {
      this.#cache.delete(scope); // refresh LRU position
      this.#cache.set(scope, cached);
      return cached.key;
    }
    const raw = unwrapWith(this.#wrapKey, scope, wrapped);
    let key: KeyObject;
    try {
      key = createSecretKey(raw); // copies the bytes into the KeyObject
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

interface ParsedJwe {
  header: Record<string, unknown>;
  /** ASCII bytes of the encoded protected header: the GCM AAD. */
  aad: Buffer;
  encryptedKey: Buffer;
  iv: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

/** Run a whole input through a cipher or decipher (update + final). */
function finish(c: { update(data: Uint8Array): Buffer; final(): Buffer }, input: Uint8Array): Buffer {
  const head = c.update(input);
  const last = c.final();
  return last.byteLength === 0 ? head : Buffer.concat([head, last]);
}

/**
 * Strict base64url (RFC 7515 §2): alphabet `A-Z a-z 0-9 - _`, no padding, no whitespace, and the
 * unused low bits of the last character zero, so every byte string has exactly one encoding.
 */
function base64url(segment: string, what: string): Buffer {
  const rem = segment.length % 4;
  if (rem === 1 || !BASE64URL.test(segment)) throw bindingError(`envelope ${what} is not base64url`);
  if (rem !== 0) {
    const mask = rem === 2 ? 0x0f : 0x03;
    if ((sextet(segment.charCodeAt(segment.length - 1)) & mask) !== 0) throw bindingError(`envelope ${what} is not canonical base64url`);
  }
  return Buffer.from(segment, 'base64url');
}

/** Value of one base64url character (the caller has checked the alphabet). */
function sextet(c: number): number {
  if (c >= 0x41 && c <= 0x5a) return c - 0x41; // A-Z
  if (c >= 0x61 && c <= 0x7a) return c - 0x61 + 26; // a-z
  if (c >= 0x30 && c <= 0x39) return c - 0x30 + 52; // 0-9
  return c === 0x2d ? 62 : 63; // '-' or '_'
}

/** The compact serialization as a fresh, unpooled Uint8Array of its ASCII bytes. */
function joinCompact(segments: string[]): Uint8Array {
  let length = segments.length - 1;
  for (const s of segments) length += s.length;
  const out = new Uint8Array(length);
  const view = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  let offset = 0;
  for (const [i, s] of segments.entries()) {
    if (i > 0) out[offset++] = DOT;
    offset += view.write(s, offset, 'latin1');
  }
  return out;
}

/**
 * A plain Uint8Array over the decrypted bytes (callers get what they would from a JOSE library,
 * not a Buffer); copied if the Buffer shares its memory with anything else, e.g. Node's pool.
 */
function plainBytes(b: Buffer): Uint8Array {
  if (b.byteOffset === 0 && b.buffer.byteLength === b.byteLength) return new Uint8Array(b.buffer, 0, b.byteLength);
  return new Uint8Array(b);
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
