/**
 * Page size and `self`/`first`/`previous`/`next` links of searchset and history Bundles
 * (http://hl7.org/fhir/R4/http.html#paging). Links carry the snapshot marker so that later
 * pages are cut from the same set of versions.
 */
import { fhirError } from '../errors.ts';
import { queryValue, type FhirRequest } from '../request.ts';

export const DEFAULT_COUNT = 50;
export const MAX_COUNT = 1000;

/** `_count` (default 50, at most 1,000; larger values are reduced to the maximum). */
export function pageCount(request: FhirRequest): number {
  const raw = queryValue(request, '_count');
  if (raw === undefined) return DEFAULT_COUNT;
  if (!/^\d{1,9}$/.test(raw)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_count must be a whole number', ['_count']);
  return Math.min(Number(raw), MAX_COUNT);
}

export interface PageState {
  count: number;
  offset: number;
  /** History only: the version sequence number the pages are cut from. */
  snapshot?: number;
  total: number | undefined;
  returned: number;
}

/** Bundle.link entries for a page. `keep` are the query parameters every link repeats. */
export function pageLinks(url: string, keep: [string, string][], state: PageState): { relation: string; url: string }[] {
  const link = (offset: number) => {
    const params = new URLSearchParams(keep);
    params.set('_count', String(state.count));
    if (state.snapshot !== undefined) params.set('_snapshot', String(state.snapshot));
    if (offset > 0) params.set('_offset', String(offset));
    return `${url}?${params.toString()}`;
  };
  const links = [
    { relation: 'self', url: link(state.offset) },
    { relation: 'first', url: link(0) },
  ];
  if (state.offset > 0) links.push({ relation: 'previous', url: link(Math.max(0, state.offset - state.count)) });
  const more = state.total !== undefined ? state.offset + state.returned < state.total : state.returned === state.count;
  if (more && state.count > 0) links.push({ relation: 'next', url: link(state.offset + state.count) });
  return links;
}
