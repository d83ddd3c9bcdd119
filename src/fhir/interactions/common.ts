/**
 * Helpers shared by the interactions: headers of a versioned resource, `Prefer` handling,
 * `If-Match` parsing and resource lookup with the spec's 404/410 outcomes.
 */
import type { VersionRecord } from '../../storage/index-store.ts';
import { fhirError, operationOutcome } from '../errors.ts';
import type { FhirRequest, FhirResource, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';

/** `ETag` and `Last-Modified` of a version (http://hl7.org/fhir/R4/http.html#versioning). */
export function versionHeaders(record: VersionRecord): Record<string, string> {
  return { ETag: `W/"${record.versionId}"`, 'Last-Modified': new Date(record.lastUpdated).toUTCString() };
}

/** Absolute URL of a version, for `Location` and `Content-Location`. */
export function versionUrl(baseUrl: string, record: VersionRecord): string {
  return `${baseUrl}/${record.type}/${record.id}/_history/${record.versionId}`;
}

export type PreferReturn = 'minimal' | 'representation' | 'OperationOutcome';

/** The `return` preference of the `Prefer` header (representation by default). */
export function preferReturn(request: FhirRequest): PreferReturn {
  const prefer = request.headers['prefer'] ?? '';
  const match = /(?:^|[;,\s])return\s*=\s*"?([A-Za-z]+)"?/.exec(prefer);
  const value = match?.[1];
  if (value === 'minimal' || value === 'OperationOutcome') return value;
  return 'representation';
}

/** Response to a successful write, shaped by `Prefer: return=…`. */
export function writeResponse(
  request: FhirRequest,
  status: number,
  record: VersionRecord,
  resource: FhirResource | undefined,
  message: string,
): FhirResponse {
  const headers: Record<string, string> = { ...versionHeaders(record), Location: versionUrl(request.baseUrl, record) };
  switch (preferReturn(request)) {
    case 'minimal':
      return { status, headers };
    case 'OperationOutcome':
      return {
        status,
        headers,
        raw: true,
        resource: operationOutcome([{ severity: 'information', code: 'informational', diagnostics: message }]),
      };
    default:
      return { status, headers, resource: resource as Record<string, unknown> | undefined };
  }
}

/**
 * The version number of an `If-Match` header (`W/"3"` or `"3"`), `'*'` for `If-Match: *`
 * (any current version, RFC 9110 §13.1.1); undefined when absent.
 * Raises 400 VLM_FHIR_BAD_IF_MATCH when the header is neither.
 */
export function ifMatchVersion(request: FhirRequest): number | '*' | undefined {
  const header = request.headers['if-match'];
  if (header === undefined) return undefined;
  if (header.trim() === '*') return '*';
  const match = /^\s*(?:W\/)?"(\d+)"\s*$/.exec(header);
  if (!match) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_IF_MATCH', 'If-Match must be a version ETag such as W/"1"');
  return Number(match[1]);
}

/**
 * Raise 412 when `If-Match` names another version than the latest one, or is `*` and there is no
 * current resource. The ETag of a deletion matches too: it is how a client brings a deleted
 * resource back to life without racing others (http://hl7.org/fhir/R4/http.html#delete).
 */
export function checkIfMatch(request: FhirRequest, current: VersionRecord | undefined): void {
  const wanted = ifMatchVersion(request);
  if (wanted === undefined) return;
  const matches = wanted === '*' ? current !== undefined && !current.deleted : current?.versionId === wanted;
  if (!matches) {
    throw fhirError(412, 'conflict', 'VLM_FHIR_VERSION_MISMATCH', `If-Match ${wanted} does not name the current version`);
  }
}

const ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** Check a logical id from the URL (http://hl7.org/fhir/R4/datatypes.html#id). */
export function checkId(id: string): string {
  if (!ID.test(id)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_ID', 'The resource id is not a valid FHIR id');
  return id;
}

/** The current version of Type/id; 404 when it never existed, 410 when deleted. */
export async function requireCurrent(services: FhirServices, type: string, id: string): Promise<VersionRecord> {
  const record = await services.repository.index.current(type, checkId(id));
  if (!record) throw fhirError(404, 'not-found', 'VLM_FHIR_NOT_FOUND', `${type}/${id} is not known`);
  if (record.deleted) {
    const error = fhirError(410, 'deleted', 'VLM_FHIR_DELETED', `${type}/${id} was deleted`);
    Object.assign(error.headers, versionHeaders(record));
    throw error;
  }
  return record;
}

/**
 * `{ exact }` for a WriteOp: the body with its decimals kept exactly (json.ts), when the request
 * has one that differs from the plain body; `{}` otherwise.
 */
export function exactOf(request: FhirRequest): { exact?: FhirResource } {
  const exact = request.exactBody;
  return exact !== null && typeof exact === 'object' && !Array.isArray(exact) ? { exact: exact as FhirResource } : {};
}

const RESOURCE_MEDIA_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json+fhir']);

/** The resource body of a write request: a JSON object whose resourceType is `type`. */
export function requireBody(request: FhirRequest, type: string): FhirResource {
  const body = request.body;
  if (body === undefined || body === null || body === '') {
    throw fhirError(400, 'required', 'VLM_FHIR_BODY_MISSING', 'A resource body is required');
  }
  // A form or a JSON Patch document is not a resource (PATCH has its own route).
  if (!RESOURCE_MEDIA_TYPES.has(request.contentType ?? '')) {
    throw fhirError(415, 'not-supported', 'VLM_FHIR_UNSUPPORTED_MEDIA_TYPE', 'Send the resource as application/fhir+json');
  }
  if (typeof body !== 'object' || Array.isArray(body)) {
    throw fhirError(400, 'structure', 'VLM_FHIR_BODY_NOT_RESOURCE', 'The body must be a JSON object');
  }
  const resourceType = (body as { resourceType?: unknown }).resourceType;
  if (resourceType !== type) {
    throw fhirError(400, 'invalid', 'VLM_FHIR_TYPE_MISMATCH', `The body's resourceType must be ${type}`, ['resourceType']);
  }
  return body as FhirResource;
}
