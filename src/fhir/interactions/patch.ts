/**
 * patch — http://hl7.org/fhir/R4/http.html#patch
 * PATCH [base]/[type]/[id] with `application/json-patch+json` (RFC 6902). The patched
 * resource is validated like any update; the patch may not change resourceType or id.
 * If-Match → 412 on mismatch. Conditional patch PATCH [base]/[type]?criteria is supported too.
 */
import jsonPatch from 'fast-json-patch';
import type { VersionRecord } from '../../storage/index-store.ts';
import { fhirError } from '../errors.ts';
import { hasInexactNumbers } from '../json.ts';
import type { FhirRequest, FhirResource, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import type { WriteContext } from '../writer.ts';
import { checkIfMatch, requireCurrent, writeResponse } from './common.ts';
import { findMatches } from './conditional.ts';

/**
 * Run fast-json-patch. Besides its own JsonPatchError (returned by `validate`), it throws a
 * TypeError for paths through `__proto__` / `constructor/prototype`, and a RangeError when a
 * value is nested too deeply for its recursive checks: both are the client's patch, not a fault.
 */
function runPatch<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof TypeError) {
      throw fhirError(400, 'invalid', 'VLM_FHIR_PATCH_INVALID', 'The JSON Patch path is not allowed');
    }
    if (err instanceof RangeError) {
      throw fhirError(400, 'structure', 'VLM_FHIR_PATCH_INVALID', 'The JSON Patch value is too deeply nested');
    }
    throw err;
  }
}

function applyPatch(resource: FhirResource, operations: unknown): FhirResource {
  if (!Array.isArray(operations)) {
    throw fhirError(400, 'structure', 'VLM_FHIR_PATCH_NOT_ARRAY', 'A JSON Patch document is an array of operations');
  }
  const ops = operations as jsonPatch.Operation[];
  const error = runPatch(() => jsonPatch.validate(ops, structuredClone(resource)));
  if (error) {
    const code = error.name === 'TEST_OPERATION_FAILED' ? 'VLM_FHIR_PATCH_TEST_FAILED' : 'VLM_FHIR_PATCH_INVALID';
    throw fhirError(error.name === 'TEST_OPERATION_FAILED' ? 422 : 400, 'invalid', code, `JSON Patch operation ${error.index} failed`);
  }
  const result = runPatch(() => jsonPatch.applyPatch(structuredClone(resource), ops, false, false).newDocument);
  if (!result || typeof result !== 'object' || Array.isArray(result)) {
    throw fhirError(422, 'processing', 'VLM_FHIR_PATCH_NOT_RESOURCE', 'The patched document is not a resource');
  }
  const patched = result as FhirResource;
  if (patched.resourceType !== resource.resourceType || patched.id !== resource.id) {
    throw fhirError(422, 'processing', 'VLM_FHIR_PATCH_IDENTITY', 'A patch may not change resourceType or id');
  }
  return patched;
}

/** A deep copy that keeps exact (raw JSON) numbers as they are; structuredClone refuses them. */
function copyExact<T>(value: T): T {
  if (value === null || typeof value !== 'object' || JSON.isRawJSON(value)) return value;
  if (Array.isArray(value)) return value.map(copyExact) as T;
  return Object.fromEntries(Object.entries(value).map(([key, child]) => [key, copyExact(child)])) as T;
}

/**
 * The patch applied to the exact form of a resource, after it succeeded on the plain form (so
 * `test` operations, already passed, are skipped). Undefined if it cannot be applied exactly:
 * the plain result is then stored.
 */
function applyExactly(resource: FhirResource, operations: unknown): FhirResource | undefined {
  if (!Array.isArray(operations)) return undefined;
  const ops = (operations as jsonPatch.Operation[]).filter((op) => op?.op !== 'test');
  try {
    const result = jsonPatch.applyPatch(copyExact(resource), ops, false, true).newDocument;
    return result && typeof result === 'object' && !Array.isArray(result) ? (result as FhirResource) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Apply a JSON Patch document (`operations`, and `exactOperations` when it holds exact decimals)
 * to a stored resource: the patched content to commit, with `exact` when it differs from the
 * plain form. Raises 400 VLM_FHIR_PATCH_NOT_ARRAY / VLM_FHIR_PATCH_INVALID, 422
 * VLM_FHIR_PATCH_TEST_FAILED / VLM_FHIR_PATCH_NOT_RESOURCE / VLM_FHIR_PATCH_IDENTITY.
 */
export function patchedContent(
  stored: FhirResource,
  operations: unknown,
  exactOperations: unknown,
): { patched: FhirResource; exact?: FhirResource } {
  // The patch is checked and applied on the plain form (ordinary numbers: what `test` compares
  // and validation checks); when the stored version or the patch holds exact decimals
  // (json.ts), it is applied once more to the exact form, which is what is stored.
  const inexact = hasInexactNumbers(stored);
  const patched = applyPatch(inexact ? (JSON.parse(JSON.stringify(stored)) as FhirResource) : stored, operations);
  const exactWanted = inexact || exactOperations !== undefined;
  const exact = exactWanted ? applyExactly(stored, exactOperations ?? operations) : undefined;
  for (const version of [patched, exact]) {
    delete version?.meta?.versionId;
    delete version?.meta?.lastUpdated;
  }
  return { patched, ...(exact ? { exact } : {}) };
}

async function patchRecord(
  services: FhirServices,
  request: FhirRequest,
  context: WriteContext,
  current: VersionRecord,
): Promise<FhirResponse> {
  checkIfMatch(request, current);
  const stored = (await services.loadResource(current, request.signal))!;
  const { patched, exact } = patchedContent(stored, request.body, request.exactBody);
  const op = { method: 'patch' as const, type: current.type, id: current.id, resource: patched, expectedVersion: current.versionId };
  const [written] = await services.writer.commit([{ ...op, ...(exact ? { exact } : {}) }], context);
  return writeResponse(request, 200, written!.record, written!.resource, 'Patched');
}

function requirePatchBody(request: FhirRequest): void {
  if (request.contentType !== 'application/json-patch+json') {
    throw fhirError(415, 'not-supported', 'VLM_FHIR_PATCH_MEDIA_TYPE', 'PATCH takes application/json-patch+json');
  }
}

export async function patch(services: FhirServices, request: FhirRequest, context: WriteContext): Promise<FhirResponse> {
  requirePatchBody(request);
  return services.writer.exclusive(async () =>
    patchRecord(services, request, context, await requireCurrent(services, request.resourceType!, request.id!)),
  );
}

export async function conditionalPatch(services: FhirServices, request: FhirRequest, context: WriteContext): Promise<FhirResponse> {
  requirePatchBody(request);
  return services.writer.exclusive(async () => {
    const [match] = await findMatches(services, request.resourceType!, request.query, 'criteria', { request, interaction: 'patch' });
    if (!match) throw fhirError(404, 'not-found', 'VLM_FHIR_NOT_FOUND', 'No resource matches the criteria');
    return patchRecord(services, request, context, match);
  });
}
