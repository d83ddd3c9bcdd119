/**
 * Manifest locators: what lets the holder of the master key — and nobody else — turn a public
 * batch manifest back into an index (`vellum rebuild`).
 *
 * A manifest lists each leaf and its envelope CID, but envelopes carry no ids (see leaf.ts): on
 * its own, a manifest says nothing about which resource a leaf belongs to. Each manifest entry
 * therefore also carries a *locator*: the version's resource type, id, version id, key scope,
 * interaction, and the CID of its scope's wrapped data key, sealed with AES-256-GCM under a key
 * derived from the master key (`KEY_PURPOSE.manifestLocator`). The leaf is the additional
 * authenticated data, so a locator cannot be moved to another leaf.
 *
 * The wrapped data key is a separate block (not inside the locator) so that crypto-shredding a
 * scope stays possible: deleting the key block and the index row makes the scope's envelopes
 * unreadable, while the immutable manifests never held the key.
 *
 * Sealed form: base64url( iv (12 bytes) ‖ ciphertext ‖ tag (16 bytes) ).
 */
import { KeyObject, createCipheriv, createDecipheriv, createSecretKey, timingSafeEqual } from 'node:crypto';
import { storageError } from './errors.ts';
import { pooledRandomBytes } from './random-pool.ts';
import type { WriteMethod } from './index-store.ts';

export interface Locator {
  type: string;
  id: string;
  versionId: number;
  keyScope: string;
  method: WriteMethod;
  /** CID of the block holding the scope's wrapped data key. */
  keyCid: string;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;
const METHODS: readonly WriteMethod[] = ['create', 'update', 'patch', 'delete'];

/**
 * A locator key as raw bytes or as a KeyObject (`locatorKeyObject`). Give a KeyObject where many
 * locators are sealed: node:crypto imports a raw key anew for every cipher, which costs more than
 * sealing a locator.
 */
export type LocatorKey = Uint8Array | KeyObject;

/** Raw keys already imported, by the array given; the bytes are compared on every use (an array changed in place is imported again). */
const imported = new WeakMap<Uint8Array, { bytes: Uint8Array; key: KeyObject }>();

/** The locator key as a KeyObject, checked (32 bytes). Raises StorageError `VLM_LOCATOR_KEY` (invalid). */
export function locatorKeyObject(key: LocatorKey): KeyObject {
  if (key instanceof KeyObject) {
    if (key.type !== 'secret' || key.symmetricKeySize !== 32) {
      throw storageError('VLM_LOCATOR_KEY', 'invalid', 'the locator key must be 32 bytes');
    }
    return key;
  }
  if (!(key instanceof Uint8Array) || key.length !== 32) {
    throw storageError('VLM_LOCATOR_KEY', 'invalid', 'the locator key must be 32 bytes');
  }
  const known = imported.get(key);
  if (known && timingSafeEqual(known.bytes, key)) return known.key;
  const entry = { bytes: new Uint8Array(key), key: createSecretKey(key) };
  imported.set(key, entry);
  return entry.key;
}

/** Seal `locator` for the manifest entry of `leaf`. */
export function sealLocator(key: LocatorKey, leaf: Uint8Array, locator: Locator): string {
  const secret = locatorKeyObject(key);
  const iv = pooledRandomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', secret, iv);
  cipher.setAAD(leaf);
  const body = JSON.stringify({
    t: locator.type,
    i: locator.id,
    v: locator.versionId,
    s: locator.keyScope,
    m: locator.method,
    k: locator.keyCid,
  });
  const ct = Buffer.concat([cipher.update(body, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, ct, cipher.getAuthTag()]).toString('base64url');
}

/**
 * Open the locator of the manifest entry of `leaf`. Raises StorageError `VLM_LOCATOR_INVALID`
 * (fault) when it was sealed under another key, for another leaf, or was altered.
 */
export function openLocator(key: LocatorKey, leaf: Uint8Array, sealed: string): Locator {
  const secret = locatorKeyObject(key);
  const invalid = (cause?: unknown) =>
    storageError('VLM_LOCATOR_INVALID', 'fault', 'the manifest locator does not open under this key for this leaf', cause);
  if (typeof sealed !== 'string' || !/^[A-Za-z0-9_-]+$/.test(sealed)) throw invalid();
  const bytes = Buffer.from(sealed, 'base64url');
  if (bytes.length <= IV_BYTES + TAG_BYTES) throw invalid();
  let parsed: unknown;
  try {
    const decipher = createDecipheriv('aes-256-gcm', secret, bytes.subarray(0, IV_BYTES));
    decipher.setAAD(leaf);
    decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
    const body = Buffer.concat([decipher.update(bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES)), decipher.final()]);
    parsed = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw invalid(err);
  }
  const p = parsed as Record<string, unknown>;
  if (
    typeof p.t !== 'string' ||
    typeof p.i !== 'string' ||
    typeof p.v !== 'number' ||
    !Number.isSafeInteger(p.v) ||
    p.v < 1 ||
    typeof p.s !== 'string' ||
    typeof p.k !== 'string' ||
    !METHODS.includes(p.m as WriteMethod)
  ) {
    throw invalid();
  }
  return { type: p.t, id: p.i, versionId: p.v, keyScope: p.s, method: p.m as WriteMethod, keyCid: p.k };
}
