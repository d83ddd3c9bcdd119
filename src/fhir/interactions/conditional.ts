/**
 * Criteria of conditional interactions (If-None-Exist, conditional update/delete/patch):
 * http://hl7.org/fhir/R4/http.html#ccreate. Criteria are a search; unknown parameters are an
 * error here (ignoring them would widen the match), and several matches are 412.
 */
import type { VersionRecord } from '../../storage/index-store.ts';
import { fhirError } from '../errors.ts';
import type { FhirServices } from '../services.ts';
import { planQuery } from './search.ts';

/** Parse `If-None-Exist` (`identifier=x|y` or `Patient?identifier=…`) into name/value pairs. */
export function parseCriteria(header: string): [string, string][] {
  const query = header.includes('?') ? header.slice(header.indexOf('?') + 1) : header;
  return [...new URLSearchParams(query)];
}

/** Resources matching conditional criteria: none or one; several raise 412. */
export async function findMatches(
  services: FhirServices,
  type: string,
  criteria: [string, string][],
  label: string,
): Promise<VersionRecord[]> {
  const params = criteria.filter(([name]) => !['_format', '_pretty'].includes(name));
  if (params.length === 0) {
    throw fhirError(412, 'multiple-matches', 'VLM_FHIR_CRITERIA_EMPTY', `${label} has no search criteria`);
  }
  const { query, unknown } = planQuery(services, type, params, services.baseUrl);
  if (unknown.length) {
    throw fhirError(400, 'not-supported', 'VLM_FHIR_UNKNOWN_PARAMETER', `${label} uses unknown parameters: ${unknown.join(', ')}`);
  }
  const page = await services.repository.index.search({ ...query, count: 2, offset: 0, wantTotal: false });
  if (page.records.length > 1) {
    throw fhirError(412, 'multiple-matches', 'VLM_FHIR_MULTIPLE_MATCHES', `${label} matches more than one resource`);
  }
  return page.records;
}
