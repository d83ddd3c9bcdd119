/**
 * Criteria of conditional interactions (If-None-Exist, conditional update/delete/patch):
 * http://hl7.org/fhir/R4/http.html#ccreate. Criteria are a search; unknown parameters are an
 * error here (ignoring them would widen the match), and several matches are 412.
 */
import type { VersionRecord } from '../../storage/index-store.ts';
import { linkScopes, matchingRequest, restrictionClause, screened, screenRecords } from '../access.ts';
import type { Interaction } from '../auth/scopes.ts';
import { fhirError } from '../errors.ts';
import type { FhirRequest } from '../request.ts';
import type { FhirServices } from '../services.ts';
import { planQuery } from './search.ts';

/** Matches read per page when consent decides them one by one. */
const GATED_PAGE = 100;
/** Most matches looked at for a consent-gated caller before the criteria are refused as too broad. */
const GATED_SCAN_LIMIT = 5_000;

/** Whose view of the store the matching takes: the caller's (see access.ts `matchingRequest`). */
export interface MatchingAs {
  request: FhirRequest;
  /** The interaction the match serves (its scopes decide a patient confinement). */
  interaction: Interaction;
}

/** Parse `If-None-Exist` (`identifier=x|y` or `Patient?identifier=…`) into name/value pairs. */
export function parseCriteria(header: string): [string, string][] {
  const query = header.includes('?') ? header.slice(header.indexOf('?') + 1) : header;
  return [...new URLSearchParams(query)];
}

/**
 * Resources matching conditional criteria: none or one; several raise 412. With `as`, only
 * resources that caller may see count: its patient confinement joins the query, chains and `_has`
 * traverse only what it may see, and a consent-gated caller's matches are decided one by one (as
 * are those of a caller AuditEvents are withheld from: access.ts `visible`).
 */
export async function findMatches(
  services: FhirServices,
  type: string,
  criteria: [string, string][],
  label: string,
  as?: MatchingAs,
): Promise<VersionRecord[]> {
  const params = criteria.filter(([name]) => !['_format', '_pretty'].includes(name));
  if (params.length === 0) {
    throw fhirError(412, 'multiple-matches', 'VLM_FHIR_CRITERIA_EMPTY', `${label} has no search criteria`);
  }
  const { query, unknown } = planQuery(services, type, params, services.baseUrl);
  if (unknown.length) {
    throw fhirError(400, 'not-supported', 'VLM_FHIR_UNKNOWN_PARAMETER', `${label} uses unknown parameters: ${unknown.join(', ')}`);
  }
  const several = () => fhirError(412, 'multiple-matches', 'VLM_FHIR_MULTIPLE_MATCHES', `${label} matches more than one resource`);
  const request = as ? await matchingRequest(services, as.request, type, as.interaction) : undefined;
  // A request that sees every record (the administrator, or no authorization): the index's matches.
  if (!request || (!request.restriction && !screened(request))) {
    const page = await services.repository.index.search({ ...query, count: 2, offset: 0, wantTotal: false });
    if (page.records.length > 1) throw several();
    return page.records;
  }
  const confined = restrictionClause(services, request, type);
  const traversed = await linkScopes(services, request, query.where);
  const seen = {
    ...query,
    where: confined ? [...query.where, confined] : query.where,
    ...(traversed ? { linkScopes: traversed } : {}),
  };
  const found: VersionRecord[] = [];
  for (let offset = 0; ; offset += GATED_PAGE) {
    if (offset >= GATED_SCAN_LIMIT) {
      throw fhirError(412, 'multiple-matches', 'VLM_FHIR_CRITERIA_TOO_BROAD', `${label} matches too many resources to decide which may be seen`);
    }
    const page = await services.repository.index.search({ ...seen, count: GATED_PAGE, offset, wantTotal: false });
    for (const { record } of await screenRecords(services, request, page.records)) found.push(record);
    if (found.length > 1) throw several();
    if (page.records.length < GATED_PAGE) return found;
  }
}
