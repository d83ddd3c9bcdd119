/**
 * Envelope encryption of resource-version bundles.
 *
 * The stored form of every version is an encrypted envelope. The binding (resource type, id,
 * version) is authenticated, so an envelope cannot be swapped for another version's. Data keys
 * are per key scope (a patient pseudonym, or "shared" for resources outside any patient
 * compartment) and are themselves wrapped by the master key, allowing crypto-shredding.
 */
import type { AbortOptions } from './blob-store.ts';

export interface EnvelopeBinding {
  resourceType: string;
  id: string;
  versionId: string;
  /** Which data key encrypts this version: a patient pseudonym, or 'shared'. */
  keyScope: string;
}

export interface Cipher {
  /** Encrypt `plaintext` bound to `binding`; returns the serialized envelope bytes. */
  seal(plaintext: Uint8Array, binding: EnvelopeBinding, options?: AbortOptions): Promise<Uint8Array>;
  /** Decrypt an envelope. Raises StorageError `VLM_CIPHER_BINDING` (fault) when the envelope was made for another binding or was tampered with. */
  open(envelope: Uint8Array, binding: EnvelopeBinding, options?: AbortOptions): Promise<Uint8Array>;
}

/**
 * Where wrapped (master-key-encrypted) data keys are kept; the index database in production.
 * Embedded stores answer at once, a database server's asynchronously: callers await either.
 */
export interface DataKeyStore {
  getWrappedKey(scope: string): Uint8Array | undefined | Promise<Uint8Array | undefined>;
  /** Store the wrapped key for `scope` if none exists yet; returns the one that is stored. */
  putWrappedKeyIfAbsent(scope: string, wrapped: Uint8Array): Uint8Array | Promise<Uint8Array>;
  deleteWrappedKey(scope: string): void | Promise<void>;
}
