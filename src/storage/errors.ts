/**
 * Storage error catalogue. Storage never speaks OperationOutcome: it raises a
 * StorageError with a category, and the FHIR layer maps category → issue code → status.
 */

export type StorageErrorCategory =
  | 'not-found'
  | 'gone'
  | 'conflict'
  | 'invalid'
  | 'unavailable'
  | 'fault';

export class StorageError extends Error {
  override readonly name = 'StorageError';
  constructor(
    readonly code: string,
    readonly category: StorageErrorCategory,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Raise a coded storage error in one line: `throw storageError('VLM_STORE_BLOCK_MISSING', 'not-found', '...')`. */
export function storageError(code: string, category: StorageErrorCategory, message: string, cause?: unknown): StorageError {
  return new StorageError(code, category, message, cause === undefined ? undefined : { cause });
}

export function isStorageError(err: unknown, code?: string): err is StorageError {
  return err instanceof StorageError && (code === undefined || err.code === code);
}
