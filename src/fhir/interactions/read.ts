/**
 * read — http://hl7.org/fhir/R4/http.html#read
 * GET [base]/[type]/[id]. 404 when unknown, 410 when deleted, 304 for a matching
 * If-None-Match / If-Modified-Since (http://hl7.org/fhir/R4/http.html#cread).
 */
import type { FhirRequest, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import type { VersionRecord } from '../../storage/index-store.ts';
import { assertVisibleLoaded } from '../access.ts';
import { requireCurrent, versionHeaders } from './common.ts';

/** 304 when the client's copy (If-None-Match / If-Modified-Since) is still current. */
export function notModified(request: FhirRequest, record: VersionRecord): boolean {
  const ifNoneMatch = request.headers['if-none-match'];
  if (ifNoneMatch !== undefined) {
    const tags = ifNoneMatch.split(',').map((t) => t.trim().replace(/^W\//, ''));
    return tags.includes('*') || tags.includes(`"${record.versionId}"`);
  }
  const ifModifiedSince = request.headers['if-modified-since'];
  if (ifModifiedSince !== undefined) {
    const since = Date.parse(ifModifiedSince);
    // HTTP dates have second precision: compare on whole seconds.
    if (!Number.isNaN(since)) return Math.floor(record.lastUpdated / 1000) * 1000 <= since;
  }
  return false;
}

export async function read(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const record = await requireCurrent(services, request.resourceType!, request.id!);
  const loaded = await assertVisibleLoaded(services, request, record);
  const headers = versionHeaders(record);
  if (notModified(request, record)) return { status: 304, headers };
  const resource = loaded ?? (await services.loadResource(record, request.signal));
  return { status: 200, headers, resource };
}
