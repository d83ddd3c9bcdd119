/**
 * delete — http://hl7.org/fhir/R4/http.html#delete
 * DELETE [base]/[type]/[id] → 204 (a deletion version is recorded; history keeps every version;
 * a later read is 410). Deleting an unknown or already deleted resource is also 204, with no new
 * version. Conditional delete DELETE [base]/[type]?criteria
 * (http://hl7.org/fhir/R4/http.html#cdelete): one match deleted, none → 204, several → 412.
 */
import type { VersionRecord } from '../../storage/index-store.ts';
import { operationOutcome } from '../errors.ts';
import type { FhirRequest, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import type { WriteContext } from '../writer.ts';
import { checkId, checkIfMatch, preferReturn, versionHeaders } from './common.ts';
import { findMatches } from './conditional.ts';

async function deleteRecord(
  services: FhirServices,
  request: FhirRequest,
  context: WriteContext,
  current: VersionRecord | undefined,
): Promise<FhirResponse> {
  checkIfMatch(request, current);
  let headers: Record<string, string> = {};
  let message = 'Nothing to delete';
  if (current && !current.deleted) {
    const [written] = await services.writer.commit(
      [{ method: 'delete', type: current.type, id: current.id, expectedVersion: current.versionId }],
      context,
    );
    headers = versionHeaders(written!.record);
    message = 'Deleted';
  }
  if (preferReturn(request) === 'OperationOutcome') {
    return {
      status: 200,
      headers,
      raw: true,
      resource: operationOutcome([{ severity: 'information', code: 'informational', diagnostics: message }]),
    };
  }
  return { status: 204, headers };
}

export async function deleteInteraction(
  services: FhirServices,
  request: FhirRequest,
  context: WriteContext,
): Promise<FhirResponse> {
  const type = request.resourceType!;
  const id = checkId(request.id!);
  return services.writer.exclusive(async () =>
    deleteRecord(services, request, context, await services.repository.index.current(type, id)),
  );
}

export async function conditionalDelete(
  services: FhirServices,
  request: FhirRequest,
  context: WriteContext,
): Promise<FhirResponse> {
  const type = request.resourceType!;
  return services.writer.exclusive(async () => {
    const matches = await findMatches(services, type, request.query, 'criteria', { request, interaction: 'delete' });
    return deleteRecord(services, request, context, matches[0]);
  });
}
