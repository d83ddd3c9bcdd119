/**
 * The FHIR layer's error catalogue: every failure becomes an OperationOutcome with an HTTP status
 * and an issue code (http://hl7.org/fhir/R4/valueset-issue-type.html). Storage errors are mapped by
 * category in one table; anything else is a fault: 500 with a generic message, details in the log.
 */
import { isStorageError, type StorageErrorCategory } from '../storage/errors.ts';

export type IssueCode =
  | 'invalid'
  | 'structure'
  | 'required'
  | 'value'
  | 'invariant'
  | 'security'
  | 'login'
  | 'forbidden'
  | 'processing'
  | 'not-supported'
  | 'duplicate'
  | 'multiple-matches'
  | 'not-found'
  | 'deleted'
  | 'too-long'
  | 'conflict'
  | 'exception'
  | 'timeout'
  | 'transient'
  | 'informational'
  | 'incomplete'
  | 'business-rule'
  | 'code-invalid'
  | 'throttled'
  | 'too-costly';

export interface Issue {
  severity: 'fatal' | 'error' | 'warning' | 'information';
  code: IssueCode;
  diagnostics?: string;
  expression?: string[];
  /** Vellum's own error code (VLM_…), carried as issue.details.coding. */
  vellumCode?: string;
}

export const VELLUM_ERROR_SYSTEM = 'https://vellum.dev/fhir/CodeSystem/error';

export class FhirError extends Error {
  override readonly name = 'FhirError';
  constructor(
    readonly status: number,
    readonly issues: Issue[],
    readonly headers: Record<string, string> = {},
  ) {
    super(issues[0]?.diagnostics ?? `HTTP ${status}`);
  }
}

/** Raise a coded FHIR error in one line: `throw fhirError(404, 'not-found', 'VLM_FHIR_NOT_FOUND', 'Patient/1 is not known')`. */
export function fhirError(status: number, code: IssueCode, vellumCode: string, diagnostics: string, expression?: string[]): FhirError {
  return new FhirError(status, [{ severity: 'error', code, vellumCode, diagnostics, ...(expression ? { expression } : {}) }]);
}

const CATEGORY: Record<StorageErrorCategory, { status: number; code: IssueCode }> = {
  'not-found': { status: 404, code: 'not-found' },
  gone: { status: 410, code: 'deleted' },
  conflict: { status: 409, code: 'conflict' },
  invalid: { status: 400, code: 'invalid' },
  unavailable: { status: 503, code: 'transient' },
  fault: { status: 500, code: 'exception' },
};

/** Storage codes that mean stored data was altered (tampering or corruption), reported as VLM_INTEGRITY. */
const INTEGRITY_CODES = new Set(['VLM_BLOB_CORRUPT', 'VLM_CIPHER_BINDING']);

/** SQLite's result code for a full disk (SQLITE_FULL). */
const SQLITE_FULL = 13;

/** Whether an error — or one it wraps — says the disk is full: ENOSPC from the file system, SQLITE_FULL from SQLite. */
export function isStorageFull(err: unknown): boolean {
  for (let e = err as { code?: unknown; errcode?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 8; e = e.cause as typeof e, depth++) {
    if (typeof e !== 'object') return false;
    // PostgreSQL's SQLSTATE 53100 (disk_full).
    if (e.code === 'ENOSPC' || e.code === '53100' || e.errcode === SQLITE_FULL || (typeof e.errcode === 'number' && (e.errcode & 0xff) === SQLITE_FULL)) return true;
    if (typeof e.message === 'string' && /database or disk is full|no space left on device|ENOSPC/i.test(e.message)) return true;
  }
  return false;
}

/**
 * Turn any thrown value into a FhirError; `fault` is true when the details belong in the log only;
 * `full` when the disk is full (507 VLM_STORAGE_FULL: the caller logs the cause once, not per request).
 */
export function toFhirError(err: unknown): { error: FhirError; fault: boolean; full?: boolean } {
  if (err instanceof FhirError) return { error: err, fault: err.status >= 500 };
  if (isStorageFull(err)) {
    return {
      error: fhirError(507, 'transient', 'VLM_STORAGE_FULL', 'The server is out of storage space; nothing was changed. Try again later.'),
      fault: false,
      full: true,
    };
  }
  if (isStorageError(err)) {
    if (INTEGRITY_CODES.has(err.code)) {
      // Stored data failed its content address or its envelope binding: never serve it.
      return {
        error: fhirError(500, 'exception', 'VLM_INTEGRITY', 'Integrity check failed: the stored version does not match its address or binding'),
        fault: true,
      };
    }
    const mapped = CATEGORY[err.category];
    const fault = mapped.status >= 500;
    return {
      error: fhirError(
        mapped.status,
        mapped.code,
        mapped.status === 500 ? 'VLM_FAULT' : err.code,
        fault ? 'The server could not complete the request' : err.message,
      ),
      fault,
    };
  }
  return { error: fhirError(500, 'exception', 'VLM_FAULT', 'The server could not complete the request'), fault: true };
}

/** Build an OperationOutcome resource from issues. */
export function operationOutcome(issues: Issue[]): Record<string, unknown> {
  return {
    resourceType: 'OperationOutcome',
    issue: issues.map((i) => ({
      severity: i.severity,
      code: i.code,
      ...(i.vellumCode ? { details: { coding: [{ system: VELLUM_ERROR_SYSTEM, code: i.vellumCode }] } } : {}),
      ...(i.diagnostics ? { diagnostics: i.diagnostics } : {}),
      ...(i.expression?.length ? { expression: i.expression } : {}),
    })),
  };
}
