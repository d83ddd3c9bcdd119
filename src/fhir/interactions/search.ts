/**
 * search — http://hl7.org/fhir/R4/http.html#search, http://hl7.org/fhir/R4/search.html
 * GET [base]/[type]?params, POST [base]/[type]/_search (form-encoded, merged with the URL
 * query) and GET [base]?params (system level, `_type` to choose types). A `searchset` Bundle
 * with `fullUrl`, `search.mode` (`match`, `include`, `outcome`), `total` and paging links.
 * `_include` / `_revinclude` add at most MAX_INCLUDES resources per page: a page whose includes
 * would pass it ends early (fewer matches, `next` continues), so nothing is dropped; only a single
 * match with more is cut, and an outcome entry says so (`too-costly`, VLM_FHIR_INCLUDES_CAPPED).
 * Unknown parameters are ignored and reported in an OperationOutcome entry, or rejected with 400
 * under `Prefer: handling=strict`. Malformed values are 400 naming the parameter
 * (VLM_FHIR_BAD_SEARCH_PARAMETER; the parser's own code is in the diagnostics).
 */
import type { IndexClause, IndexCondition, IndexQuery } from '../../storage/search-types.ts';
import { compartmentClause, linkScopes, restrictionClause, screened, screenRecords, totalDisclosed } from '../access.ts';
import { FhirError, fhirError, VELLUM_ERROR_SYSTEM } from '../errors.ts';
import { elementsList, subset, summaryMode } from '../format.ts';
import { queryValue, type FhirRequest, type FhirResource, type FhirResponse } from '../request.ts';
import type { VersionRecord } from '../../storage/index-store.ts';
import { gatherIncludes, MAX_INCLUDES, parseIncludes, type IncludeDirective } from '../search/include.ts';
import { parseSearchRequest } from '../search/parse.ts';
import type { FhirServices } from '../services.ts';
import { bindingParams, DEFAULT_COUNT, MAX_COUNT, openCursor, pageLinks, type CursorBinding } from './paging.ts';

/**
 * When a searchset carries `total` (also in the CapabilityStatement's documentation): counting
 * costs every match, so a page is not made to pay for it unless the client asks.
 */
export const TOTAL_POLICY =
  'Searchset Bundles carry total when _total=accurate is asked for (counted at each page request), ' +
  'with _total=estimate when at most 10,000 resources match, with _summary=count, and whenever the whole result fits on the first page; ' +
  'otherwise total is absent and the next links page through the matches. Pages are read from an index in the search order ' +
  '(default: creation order; _sort on _id, _lastUpdated and string, token, date, number, quantity and uri parameters), ' +
  'so a page costs the same however many resources match.';

/** Most matches `_total=estimate` counts; beyond it the total is left out. */
export const ESTIMATE_LIMIT = 10_000;

/** Parameters that shape the result rather than select resources (handled here, not by the parser). */
const RESULT_PARAMS = new Set(['_count', '_offset', '_cursor', '_summary', '_elements', '_format', '_pretty', '_total', '_snapshot']);

/**
 * Result parameters the parser passes through that Vellum does not implement: reported like any
 * unknown parameter (ignored with an outcome entry, or 400 under `handling=strict`), never
 * silently dropped.
 */
const UNSUPPORTED_RESULT_PARAMS = new Set(['_contained', '_containedType']);

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

/** Plan the index query of a search on `type` (null: system level); 400 for malformed values. */
export function planQuery(
  services: FhirServices,
  type: string | null,
  params: [string, string][],
  baseUrl: string,
): { query: IndexQuery; unknown: string[]; includes: IncludeDirective[] } {
  const selecting = params.filter(([name]) => !RESULT_PARAMS.has(name));
  const parsed = parseSearchRequest(services.registry, type, selecting, { baseUrl });
  const includes = parseIncludes(services.registry, parsed.result);
  const errors = [...parsed.errors, ...includes.errors];
  if (errors.length) {
    throw new FhirError(
      400,
      errors.map((e) => ({
        severity: 'error' as const,
        code: 'invalid' as const,
        vellumCode: 'VLM_FHIR_BAD_SEARCH_PARAMETER',
        diagnostics: `Search parameter ${e.param}: ${e.code}`,
        expression: [e.param],
      })),
    );
  }
  if (countValues(parsed.query.where) > MAX_SEARCH_VALUES) {
    throw fhirError(400, 'too-costly', 'VLM_FHIR_SEARCH_TOO_COMPLEX', `A search may carry at most ${MAX_SEARCH_VALUES} values`);
  }
  const unsupported = parsed.result.map(([name]) => name).filter((name) => UNSUPPORTED_RESULT_PARAMS.has(name.split(':')[0]!));
  return { query: parsed.query, unknown: [...parsed.unknown, ...includes.unknown, ...unsupported], includes: includes.directives };
}

/** Values of a search, those of chained and `_has` searches and composite components included. */
function countValues(where: readonly IndexClause[]): number {
  const ofCondition = (c: IndexCondition): number => {
    switch (c.kind) {
      case 'chain':
        return c.targets.reduce((n, t) => n + countValues(t.where), 0);
      case 'has':
        return countValues(c.source.where);
      case 'composite':
        return c.components.length;
      default:
        return 1;
    }
  };
  return where.reduce((n, clause) => n + Math.max(1, clause.anyOf.reduce((m, c) => m + ofCondition(c), 0)), 0);
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
  // Compartment search, GET [base]/Patient/[id]/[type] (http://hl7.org/fhir/R4/compartmentdefinition.html):
  // a search of [type] confined to the compartment. No type: the system-level search,
  // GET [base]?_type=… (http://hl7.org/fhir/R4/http.html#search).
  const compartment = request.compartmentType !== undefined ? { type: request.resourceType!, id: request.id! } : undefined;
  const type = compartment ? request.compartmentType! : (request.resourceType ?? null);
  const confine: IndexClause[] = [];
  if (compartment) {
    if (compartment.type !== 'Patient') {
      throw fhirError(400, 'not-supported', 'VLM_FHIR_COMPARTMENT_UNSUPPORTED', 'Only the Patient compartment can be searched');
    }
    const clause = compartmentClause(services, type!, compartment.id);
    if (!clause) throw fhirError(400, 'invalid', 'VLM_FHIR_NOT_IN_COMPARTMENT', `${type} is not in the Patient compartment`);
    confine.push(clause);
  }
  const restricted = restrictionClause(services, request, type);
  if (restricted) confine.push(restricted);
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
  const totalMode = queryValue(request, '_total');
  if (totalMode !== undefined && !['none', 'estimate', 'accurate'].includes(totalMode)) {
    throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_total must be none, estimate or accurate', ['_total']);
  }
  const planned = planQuery(services, type, request.query, request.baseUrl);
  const { unknown, includes } = planned;
  if (unknown.length && strict(request)) {
    throw fhirError(400, 'not-supported', 'VLM_FHIR_UNKNOWN_PARAMETER', `Unknown search parameters: ${unknown.join(', ')}`, unknown);
  }
  // What chains and `_has` traverse must itself be visible to a consent-gated or confined caller
  // (access.ts `linkScopes`): otherwise a visible match could be found through withheld data.
  const traversed = await linkScopes(services, request, planned.query.where);
  const query: IndexQuery = traversed ? { ...planned.query, linkScopes: traversed } : planned.query;
  const countOnly = summary === 'count';
  // A consent-gated caller searching patient data: matches are decided one by one, so the index's
  // total would count what is withheld. Counts are made from the matches it may see instead.
  const disclosed = totalDisclosed(services, request, type);
  if (countOnly && !disclosed) return gatedCount(services, request, { ...query, where: [...query.where, ...confine] });
  // Keyset paging (paging.ts): the links carry a sealed cursor bound to this query.
  const ignored = new Set(unknown);
  const keep = request.query.filter(([name]) => !['_count', '_offset', '_snapshot', '_cursor'].includes(name) && !ignored.has(name));
  const path = compartment ? `${compartment.type}/${compartment.id}/${type}` : type;
  const binding: CursorBinding = { interaction: 'search', path: path ?? '', params: bindingParams(keep) };
  const position = openCursor(services, binding, request, [query.sort.length + 2]);
  // One match more than the page tells whether another page follows (or, before a position, precedes).
  const fetch = countOnly ? 0 : count > 0 ? count + 1 : 0;
  const page = await services.repository.index.search({
    ...query,
    where: [...query.where, ...confine],
    count: fetch,
    offset,
    // `total` costs the matches, so it is counted only when asked for (TOTAL_POLICY).
    wantTotal: disclosed && (countOnly || totalMode === 'accurate' || totalMode === 'estimate'),
    ...(totalMode === 'estimate' && !countOnly ? { totalLimit: ESTIMATE_LIMIT } : {}),
    ...(position ? { keyset: { direction: position.direction, key: position.key, inclusive: position.inclusive === true } } : {}),
  });
  const backwards = position?.direction === 'before';
  const extra = page.records.length > count;
  // The whole result on the first page: its size is the total, exact and free.
  if (page.total === undefined && disclosed && totalMode !== 'none' && !position && offset === 0 && count > 0 && !extra) {
    page.total = page.records.length;
  }
  if (extra) {
    page.records = backwards ? page.records.slice(1) : page.records.slice(0, count);
    page.keys = backwards ? page.keys.slice(1) : page.keys.slice(0, count);
  }
  const entry: Record<string, unknown>[] = [];
  // What this caller may see (patient consent, the audit trail's rule); the page's keys still advance over every match.
  let screenedMatches = screened(request) ? await screenRecords(services, request, page.records) : page.records.map((record): { record: VersionRecord; resource?: FhirResource } => ({ record }));
  // Includes are never dropped: a page whose includes would pass MAX_INCLUDES ends early (fewer
  // matches, and a `next` link from the last one kept), so following `next` yields every one.
  const gather = (records: readonly VersionRecord[]) =>
    gatherIncludes({ registry: services.registry, search: (q) => services.repository.index.search(q) }, includes, records);
  let included: Awaited<ReturnType<typeof gather>> | undefined;
  let cut = false;
  if (includes.length && !countOnly && screenedMatches.length) {
    const all = screenedMatches.map((s) => s.record);
    included = await gather(all);
    if (included.capped && all.length > 1 && !backwards) {
      // The most matches whose includes fit (at least one: a single match's includes are capped with an outcome).
      let lo = 1;
      let hi = all.length - 1;
      let best = await gather(all.slice(0, 1));
      while (lo < hi) {
        const mid = Math.ceil((lo + hi + 1) / 2);
        const attempt = await gather(all.slice(0, mid));
        if (attempt.capped) hi = mid - 1;
        else {
          lo = mid;
          best = attempt;
        }
      }
      // `lo` matches are kept; the page ends at the last of them.
      const last = page.records.indexOf(all[lo - 1]!);
      page.records = page.records.slice(0, last + 1);
      page.keys = page.keys.slice(0, last + 1);
      screenedMatches = screenedMatches.slice(0, lo);
      included = best;
      cut = true;
    }
  }
  const matches = screenedMatches.map((s) => s.record);
  for (const { record, resource: loaded } of screenedMatches) {
    const resource = loaded ?? (await services.loadResource(record, request.signal));
    if (!resource) continue;
    entry.push({
      fullUrl: `${request.baseUrl}/${record.type}/${record.id}`,
      resource: summary || elements ? subset(resource, summary, elements, services.definitions) : resource,
      search: { mode: 'match' },
    });
  }
  const issues: Record<string, unknown>[] = unknown.map((name) => ({
    severity: 'warning',
    code: 'not-supported',
    details: { coding: [{ system: VELLUM_ERROR_SYSTEM, code: 'VLM_FHIR_UNKNOWN_PARAMETER' }] },
    diagnostics: `Search parameter ${name} is not supported and was ignored`,
    expression: [name],
  }));
  if (included) {
    for (const { record, resource: loaded } of await screenRecords(services, request, included.records)) {
      // A patient-confined token sees included resources of its own compartment (and those outside any).
      const resource = loaded ?? (await services.loadResource(record, request.signal));
      if (!resource) continue;
      // `_elements` names elements of the searched type: included resources are only summarised.
      entry.push({
        fullUrl: `${request.baseUrl}/${record.type}/${record.id}`,
        resource: summary ? subset(resource, summary, undefined, services.definitions) : resource,
        search: { mode: 'include' },
      });
    }
    if (included.capped) {
      issues.push({
        severity: 'warning',
        code: 'too-costly',
        details: { coding: [{ system: VELLUM_ERROR_SYSTEM, code: 'VLM_FHIR_INCLUDES_CAPPED' }] },
        diagnostics: `Only the first ${MAX_INCLUDES} included resources of this page are returned`,
        expression: [...new Set(includes.map((d) => d.name))],
      });
    }
  }
  if (issues.length) {
    entry.push({
      fullUrl: `urn:uuid:${crypto.randomUUID()}`,
      resource: { resourceType: 'OperationOutcome', issue: issues },
      search: { mode: 'outcome' },
    });
  }
  const links = pageLinks(services, request, path === null ? request.baseUrl : `${request.baseUrl}/${path}`, keep, binding, {
    count,
    offset,
    position,
    firstKey: page.keys[0],
    lastKey: page.keys[page.keys.length - 1],
    hasPrevious: backwards ? extra : position !== undefined || offset > 0,
    hasNext: backwards ? true : extra || cut,
  });
  return {
    status: 200,
    resource: {
      resourceType: 'Bundle',
      type: 'searchset',
      ...(page.total !== undefined ? { total: page.total } : {}),
      link: countOnly ? links.filter((l) => l.relation === 'self') : links,
      // R4 JSON has no empty arrays: no matches, no `entry`.
      ...(entry.length ? { entry } : {}),
    },
  };
}

/** Most matches a consent-gated `_summary=count` decides one by one; beyond it the count is not given. */
const GATED_COUNT_LIMIT = 10_000;

/** `_summary=count` for a consent-gated caller: the matches it may see, counted (no withheld ones). */
async function gatedCount(services: FhirServices, request: FhirRequest, query: IndexQuery): Promise<FhirResponse> {
  const page = await services.repository.index.search({ ...query, count: GATED_COUNT_LIMIT + 1, offset: 0, wantTotal: false });
  const within = page.records.length <= GATED_COUNT_LIMIT;
  const total = within ? (await screenRecords(services, request, page.records)).length : undefined;
  return {
    status: 200,
    resource: {
      resourceType: 'Bundle',
      type: 'searchset',
      ...(total !== undefined ? { total } : {}),
      ...(within
        ? {}
        : {
            entry: [
              {
                fullUrl: `urn:uuid:${crypto.randomUUID()}`,
                resource: {
                  resourceType: 'OperationOutcome',
                  issue: [
                    {
                      severity: 'warning',
                      code: 'too-costly',
                      details: { coding: [{ system: VELLUM_ERROR_SYSTEM, code: 'VLM_CONSENT_COUNT_TOO_COSTLY' }] },
                      diagnostics: `More than ${GATED_COUNT_LIMIT} matches: narrow the search to get a count`,
                    },
                  ],
                },
                search: { mode: 'outcome' },
              },
            ],
          }),
    },
  };
}
