/**
 * Master key handling and keyed pseudonyms.
 *
 * The master key is 32 random bytes. Production passes it in the environment
 * (VELLUM_MASTER_KEY: base64url, base64 or 64 hex digits); the embedded default keeps it in a
 * key file created on first start with mode 0600. Key material never appears in error messages.
 */
import { createHmac, createSecretKey, hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { link, mkdir, open, readFile, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { storageError } from './errors.ts';

/** Length of the master key and of every derived key, in bytes. */
export const MASTER_KEY_BYTES = 32;

/** HKDF `info` labels: one per purpose, so derived keys never collide across uses. */
export const KEY_PURPOSE = {
  keyScope: 'vellum/v1/key-scope-pseudonym',
  binding: 'vellum/v1/envelope-binding',
  dataKeyWrap: 'vellum/v1/data-key-wrap',
  leafPseudonym: 'vellum/v1/anchor-leaf-pseudonym',
  manifestLocator: 'vellum/v1/manifest-locator',
  auditQueue: 'vellum/v1/audit-queue',
  consentPseudonym: 'vellum/v1/consent-pseudonym',
  exportFiles: 'vellum/v1/export-files',
} as const;

/** Key scope of resources outside any patient compartment. */
export const SHARED_SCOPE = 'shared';

/** Where to find the master key. */
export interface MasterKeySource {
  /** The VELLUM_MASTER_KEY value, when set: 32 bytes as base64url, base64 or 64 hex digits. */
  env?: string | undefined;
  /** Key file used (and created on first use, mode 0600) when `env` is undefined. */
  keyFile: string;
}

/**
 * Load the master key: from `env` if given (`VLM_KEY_INVALID` when malformed), else from the key
 * file, creating it atomically with a fresh random key (mode 0600) when it does not exist yet.
 */
export async function loadMasterKey(source: MasterKeySource): Promise<Uint8Array> {
  if (source.env !== undefined) return parseMasterKey(source.env, 'VELLUM_MASTER_KEY');
  const existing = await readKeyFile(source.keyFile);
  if (existing !== undefined) return parseMasterKey(existing, `key file ${source.keyFile}`);
  await createKeyFile(source.keyFile);
  // Re-read: if another process won the creation race, its key is the one to use.
  const created = await readKeyFile(source.keyFile);
  if (created === undefined) {
    throw storageError('VLM_KEY_FILE', 'unavailable', `key file ${source.keyFile} vanished after creation`);
  }
  return parseMasterKey(created, `key file ${source.keyFile}`);
}

/**
 * Decode a textual 32-byte key (64 hex digits, or base64url / base64 with or without padding).
 * Raises `VLM_KEY_INVALID` (invalid); `where` names the source in the message, never the value.
 */
export function parseMasterKey(text: string, where = 'master key'): Uint8Array {
  const s = text.trim();
  let key: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(s)) {
    key = Buffer.from(s, 'hex');
  } else if (/^[A-Za-z0-9+/_-]{43}=?$/.test(s)) {
    const url = s.replace(/=$/, '').replace(/\+/g, '-').replace(/\//g, '_');
    const decoded = Buffer.from(url, 'base64url');
    // 43 characters carry 258 bits: re-encoding rejects non-canonical spare bits.
    if (decoded.length === MASTER_KEY_BYTES && decoded.toString('base64url') === url) key = decoded;
  }
  if (key === undefined || key.length !== MASTER_KEY_BYTES) {
    throw storageError(
      'VLM_KEY_INVALID',
      'invalid',
      `${where} is not a 32-byte key (expected 64 hex digits or 43 base64url/base64 characters)`,
    );
  }
  return new Uint8Array(key);
}

/** Encode a master key the way key files store it (base64url, no padding). */
export function formatMasterKey(key: Uint8Array): string {
  assertMasterKey(key);
  return Buffer.from(key).toString('base64url');
}

/** Derive a 32-byte purpose-specific key from the master key (HKDF-SHA256, `info` = purpose label). */
export function deriveKey(masterKey: Uint8Array, purpose: string): Uint8Array {
  assertMasterKey(masterKey);
  return new Uint8Array(hkdfSync('sha256', masterKey, new Uint8Array(0), purpose, MASTER_KEY_BYTES));
}

/**
 * Key scope of a patient: a keyed pseudonym (first 32 hex digits of HMAC-SHA256 under a
 * master-derived key) of a reference like 'Patient/123', or 'shared' when `patientRef` is null.
 */
export function keyScopeFor(masterKey: Uint8Array, patientRef: string | null): string {
  if (patientRef === null) {
    assertMasterKey(masterKey);
    return SHARED_SCOPE;
  }
  if (patientRef.length === 0) throw storageError('VLM_KEY_SCOPE_INVALID', 'invalid', 'empty patient reference');
  const k = deriveKey(masterKey, KEY_PURPOSE.keyScope);
  return createHmac('sha256', k).update(patientRef, 'utf8').digest('hex').slice(0, 32);
}

/** `keyScopeFor` with the pseudonym key derived once, for the write path's hot loop. */
export function keyScoper(masterKey: Uint8Array): (patientRef: string | null) => string {
  assertMasterKey(masterKey);
  const k = createSecretKey(deriveKey(masterKey, KEY_PURPOSE.keyScope));
  return (patientRef) => {
    if (patientRef === null) return SHARED_SCOPE;
    if (patientRef.length === 0) throw storageError('VLM_KEY_SCOPE_INVALID', 'invalid', 'empty patient reference');
    return createHmac('sha256', k).update(patientRef, 'utf8').digest('hex').slice(0, 32);
  };
}

function assertMasterKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.byteLength !== MASTER_KEY_BYTES) {
    throw storageError('VLM_KEY_INVALID', 'invalid', 'master key must be 32 bytes');
  }
}

async function readKeyFile(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw storageError('VLM_KEY_FILE', 'unavailable', `cannot read key file ${path}`, err);
  }
}

/**
 * Create the key file without ever exposing a partial file: write a private temp file
 * (`wx`, mode 0600), fsync it, then hard-link it into place. `link` fails if the target exists,
 * so a concurrent creator's key is never overwritten; the loser just re-reads the winner's file.
 */
async function createKeyFile(path: string): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomUUID()}.tmp`);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const handle = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
    try {
      await handle.writeFile(`${formatMasterKey(randomBytes(MASTER_KEY_BYTES))}\n`, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await link(tmp, path);
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
    }
    await syncDir(dir);
  } catch (err) {
    throw storageError('VLM_KEY_FILE', 'unavailable', `cannot create key file ${path}`, err);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

async function syncDir(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // Directory fsync is not supported everywhere (e.g. Windows); the file itself is synced.
  } finally {
    await handle?.close();
  }
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}
