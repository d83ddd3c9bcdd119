/**
 * vread — http://hl7.org/fhir/R4/http.html#vread
 * GET [base]/[type]/[id]/_history/[vid]. 404 for an unknown version, 410 for a deletion version.
 */
import { fhirError } from '../errors.ts';
import type { FhirRequest, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import { assertVisibleLoaded } from '../access.ts';
import { checkId, versionHeaders } from './common.ts';
import { notModified } from './read.ts';

export async function vread(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const type = request.resourceType!;
  const id = checkId(request.id!);
  const vid = request.versionId!;
  if (!/^[1-9]\d{0,15}$/.test(vid)) throw fhirError(404, 'not-found', 'VLM_FHIR_VERSION_NOT_FOUND', `Version ${vid} is not known`);
  const record = await services.repository.index.version(type, id, Number(vid));
  if (!record) throw fhirError(404, 'not-found', 'VLM_FHIR_VERSION_NOT_FOUND', `${type}/${id} has no version ${vid}`);
  const headers = versionHeaders(record);
  if (record.deleted) {
    const error = fhirError(410, 'deleted', 'VLM_FHIR_DELETED', `Version ${vid} of ${type}/${id} is a deletion`);
    Object.assign(error.headers, headers);
    throw error;
  }
  const loaded = await assertVisibleLoaded(services, request, record);
  if (notModified(request, record)) return { status: 304, headers };
  return { status: 200, headers, resource: loaded ?? (await services.loadResource(record, request.signal)) };
}
