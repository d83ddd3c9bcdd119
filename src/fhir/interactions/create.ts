/**
 * create — http://hl7.org/fhir/R4/http.html#create
 * POST [base]/[type]. The server assigns the id (any id in the body is ignored).
 * Conditional create (If-None-Exist, http://hl7.org/fhir/R4/http.html#ccreate): no match →
 * create; one match → 200 with the existing resource; several → 412.
 */
import { randomUUID } from 'node:crypto';
import type { FhirRequest, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import type { WriteContext } from '../writer.ts';
import { exactOf, requireBody, versionHeaders, versionUrl, writeResponse } from './common.ts';
import { findMatches, parseCriteria } from './conditional.ts';

export async function create(services: FhirServices, request: FhirRequest, context: WriteContext): Promise<FhirResponse> {
  const type = request.resourceType!;
  const body = requireBody(request, type);
  const ifNoneExist = request.headers['if-none-exist'];
  const criteria = ifNoneExist !== undefined ? parseCriteria(ifNoneExist) : undefined;
  return services.writer.exclusive(async () => {
    if (criteria) {
      const matches = await findMatches(services, type, criteria, 'If-None-Exist', { request, interaction: 'create' });
      if (matches.length === 1) {
        const existing = matches[0]!;
        const headers = { ...versionHeaders(existing), Location: versionUrl(request.baseUrl, existing) };
        return { status: 200, headers, resource: await services.loadResource(existing, request.signal) };
      }
    }
    const [written] = await services.writer.commit(
      [{ method: 'create', type, id: randomUUID(), resource: body, ...exactOf(request), expectedVersion: 0 }],
      context,
    );
    return writeResponse(request, 201, written!.record, written!.resource, 'Created');
  });
}
