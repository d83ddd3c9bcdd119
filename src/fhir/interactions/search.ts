/**
 * search — http://hl7.org/fhir/R4/http.html#search, http://hl7.org/fhir/R4/search.html
 * GET [base]/[type]?params and POST [base]/[type]/_search (form-encoded, merged with the URL
 * query). A `searchset` Bundle with `fullUrl`, `search.mode`, `total` and paging links.
 * Unknown parameters are ignored and reported in an OperationOutcome entry, or rejected with 400
 * under `Prefer: handling=strict`. Malformed values are 400 naming the parameter.
 */
import type { IndexQuery } from '../../storage/search-types.ts';
import { FhirError, fhirError } from '../errors.ts';
import { elementsList, subset, summaryMode } from '../format.ts';
import { queryValue, type FhirRequest, type FhirResponse } from '../request.ts';
import { parseSearchRequest } from '../search/parse.ts';
import type { FhirServices } from '../services.ts';
import { DEFAULT_COUNT, MAX_COUNT, pageLinks } from './paging.ts';

/** Parameters that shape the result rather than select resources (handled here, not by the parser). */
const RESULT_PARAMS = new Set(['_count', '_offset', '_summary', '_elements', '_format', '_pretty', '_total', '_snapshot']);

/**
 * Result parameters the parser passes through that Vellum does not implement: reported like any
 * unknown parameter (ignored with an outcome entry, or 400 under `handling=strict`), never
 * silently dropped.
 */
const UNSUPPORTED_RESULT_PARAMS = new Set(['_include', '_revinclude', '_contained', '_containedType']);

/**
 * The most values (OR items and AND repetitions together) one search may carry; beyond it the
 * search is refused as too costly (400 `too-costly`, VLM_FHIR_SEARCH_TOO_COMPLEX).
 *
 * Why 1,000: SQLite's own limits no longer bind (the index binds a token, string, reference, uri,
 * `_id` or `_type` OR list as one JSON array parameter, whatever its length, and nests the
 * remaining OR and AND terms as balanced trees; see src/storage/sqlite/search-sql.ts). The cap
 * bounds the work of one request instead: 1,000 values are the largest list clients send in
 * practice (a page of ids or codes from another query), and plan and run in a few milliseconds on
 * 20k resources (a 1,000-code OR list with 19k matches: ~7 ms per page, ~7 ms for the total).
 * Values that still cost one SQL term each (date, number, quantity, `_lastUpdated`, AND
 * repetitions) stay well inside SQLite's 32,766 bound variables and expression depth of 1,000.
 * A search the index still cannot plan fails as VLM_INDEX_QUERY_TOO_COMPLEX (400 `invalid`).
 */
export const MAX_SEARCH_VALUES = 1000;

/** Plan the index query of a search on `type`; 400 for malformed values. */
export function planQuery(
  services: FhirServices,
  type: string,
  params: [string, string][],
  baseUrl: string,
): { query: IndexQuery; unknown: string[] } {
  const selecting = params.filter(([name]) => !RESULT_PARAMS.has(name));
  const parsed = parseSearchRequest(services.registry, type, selecting, { baseUrl });
  if (parsed.errors.length) {
    throw new FhirError(
      400,
      parsed.errors.map((e) => ({
        severity: 'error' as const,
        code: 'invalid' as const,
        vellumCode: 'VLM_FHIR_BAD_SEARCH_PARAMETER',
        diagnostics: `Search parameter ${e.param}: ${e.code}`,
        expression: [e.param],
      })),
    );
  }
  const values = parsed.query.where.reduce((n, clause) => n + Math.max(1, clause.anyOf.length), 0);
  if (values > MAX_SEARCH_VALUES) {
    throw fhirError(400, 'too-costly', 'VLM_FHIR_SEARCH_TOO_COMPLEX', `A search may carry at most ${MAX_SEARCH_VALUES} values`);
  }
  const unsupported = parsed.result.map(([name]) => name).filter((name) => UNSUPPORTED_RESULT_PARAMS.has(name.split(':')[0]!));
  return { query: parsed.query, unknown: [...parsed.unknown, ...unsupported] };
}

function strict(request: FhirRequest): boolean {
  return /(?:^|[;,\s])handling\s*=\s*strict/.test(request.headers['prefer'] ?? '');
}

function whole(request: FhirRequest, name: string, fallback: number): number {
  const raw = queryValue(request, name);
  if (raw === undefined) return fallback;
  if (!/^\d{1,9}$/.test(raw)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', `${name} must be a whole number`, [name]);
  return Number(raw);
}

export async function search(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const type = request.resourceType!;
  // POST _search: form parameters join the URL's (http://hl7.org/fhir/R4/http.html#search).
  if (request.method === 'POST') {
    if (request.body !== undefined && request.contentType !== 'application/x-www-form-urlencoded') {
      throw fhirError(415, 'not-supported', 'VLM_FHIR_UNSUPPORTED_MEDIA_TYPE', 'POST _search takes application/x-www-form-urlencoded');
    }
    request = { ...request, query: [...request.query, ...((request.body as [string, string][] | undefined) ?? [])] };
  }
  const summary = summaryMode(request);
  const elements = elementsList(request);
  const count = Math.min(whole(request, '_count', DEFAULT_COUNT), MAX_COUNT);
  const offset = whole(request, '_offset', 0);
  const totalMode = queryValue(request, '_total') ?? 'accurate';
  if (!['none', 'estimate', 'accurate'].includes(totalMode)) {
    throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_total must be none, estimate or accurate', ['_total']);
  }
  const { query, unknown } = planQuery(services, type, request.query, request.baseUrl);
  if (unknown.length && strict(request)) {
    throw fhirError(400, 'not-supported', 'VLM_FHIR_UNKNOWN_PARAMETER', `Unknown search parameters: ${unknown.join(', ')}`, unknown);
  }
  const countOnly = summary === 'count';
  const page = await services.repository.index.search({
    ...query,
    count: countOnly ? 0 : count,
    offset,
    wantTotal: countOnly || totalMode !== 'none',
  });
  const entry: Record<string, unknown>[] = [];
  for (const record of page.records) {
    const resource = await services.loadResource(record, request.signal);
    if (!resource) continue;
    entry.push({
      fullUrl: `${request.baseUrl}/${record.type}/${record.id}`,
      resource: summary || elements ? subset(resource, summary, elements, services.definitions) : resource,
      search: { mode: 'match' },
    });
  }
  if (unknown.length) {
    entry.push({
      fullUrl: `urn:uuid:${crypto.randomUUID()}`,
      resource: {
        resourceType: 'OperationOutcome',
        issue: unknown.map((name) => ({
          severity: 'warning',
          code: 'not-supported',
          details: { coding: [{ system: 'https://vellum.dev/fhir/CodeSystem/error', code: 'VLM_FHIR_UNKNOWN_PARAMETER' }] },
          diagnostics: `Search parameter ${name} is not supported and was ignored`,
          expression: [name],
        })),
      },
      search: { mode: 'outcome' },
    });
  }
  const ignored = new Set(unknown);
  const keep = request.query.filter(([name]) => !['_count', '_offset', '_snapshot'].includes(name) && !ignored.has(name));
  const links = pageLinks(`${request.baseUrl}/${type}`, keep, {
    count,
    offset,
    total: page.total,
    returned: page.records.length,
  });
  return {
    status: 200,
    resource: {
      resourceType: 'Bundle',
      type: 'searchset',
      ...(page.total !== undefined ? { total: page.total } : {}),
      link: countOnly ? links.filter((l) => l.relation === 'self') : links,
      entry,
    },
  };
}
