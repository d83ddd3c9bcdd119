/**
 * update — http://hl7.org/fhir/R4/http.html#update
 * PUT [base]/[type]/[id]. Update-as-create with a client-chosen id (201), otherwise a new
 * version (200). The body id must equal the URL id. If-Match → 412 on mismatch
 * (http://hl7.org/fhir/R4/http.html#concurrency).
 * Conditional update PUT [base]/[type]?criteria (http://hl7.org/fhir/R4/http.html#cond-update):
 * no match → create (with the body's id if it has one); one match → update it; several → 412.
 */
import { randomUUID } from 'node:crypto';
import { fhirError } from '../errors.ts';
import type { FhirRequest, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import type { WriteContext } from '../writer.ts';
import { checkId, checkIfMatch, exactOf, requireBody, writeResponse } from './common.ts';
import { findMatches } from './conditional.ts';

export async function update(services: FhirServices, request: FhirRequest, context: WriteContext): Promise<FhirResponse> {
  const type = request.resourceType!;
  const id = checkId(request.id!);
  const body = requireBody(request, type);
  if (body.id === undefined) throw fhirError(400, 'required', 'VLM_FHIR_ID_MISSING', 'The body must carry the id of the URL', ['id']);
  if (body.id !== id) throw fhirError(400, 'invalid', 'VLM_FHIR_ID_MISMATCH', 'The body id differs from the URL id', ['id']);
  return services.writer.exclusive(async () => {
    const current = await services.repository.index.current(type, id);
    checkIfMatch(request, current);
    const expectedVersion = current?.versionId ?? 0;
    // A PUT is recorded as an update; the index marks versions that (re)create a resource, so history
    // shows `PUT` with `201 Created` for update-as-create and re-creation after a delete.
    const created = !current || current.deleted;
    const op = { method: 'update', type, id, resource: body, ...exactOf(request), expectedVersion } as const;
    const [written] = await services.writer.commit([op], context);
    return writeResponse(request, created ? 201 : 200, written!.record, written!.resource, created ? 'Created' : 'Updated');
  });
}

export async function conditionalUpdate(
  services: FhirServices,
  request: FhirRequest,
  context: WriteContext,
): Promise<FhirResponse> {
  const type = request.resourceType!;
  const body = requireBody(request, type);
  return services.writer.exclusive(async () => {
    const matches = await findMatches(services, type, request.query, 'criteria', { request, interaction: 'update' });
    if (matches.length === 0) {
      const id = body.id === undefined ? randomUUID() : checkId(String(body.id));
      const current = await services.repository.index.current(type, id);
      if (current && !current.deleted) {
        throw fhirError(409, 'conflict', 'VLM_FHIR_ID_EXISTS', 'The body id names a resource that does not match the criteria');
      }
      checkIfMatch(request, current);
      const [written] = await services.writer.commit(
        [{ method: 'update', type, id, resource: body, ...exactOf(request), expectedVersion: current?.versionId ?? 0 }],
        context,
      );
      return writeResponse(request, 201, written!.record, written!.resource, 'Created');
    }
    const match = matches[0]!;
    if (body.id !== undefined && body.id !== match.id) {
      throw fhirError(400, 'invalid', 'VLM_FHIR_ID_MISMATCH', 'The body id differs from the id of the matching resource', ['id']);
    }
    checkIfMatch(request, match);
    const [written] = await services.writer.commit(
      [{ method: 'update', type, id: match.id, resource: body, ...exactOf(request), expectedVersion: match.versionId }],
      context,
    );
    return writeResponse(request, 200, written!.record, written!.resource, 'Updated');
  });
}
