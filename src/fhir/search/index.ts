/**
 * FHIR search (http://hl7.org/fhir/R4/search.html) in three stages, one file each:
 *
 * - `registry.ts` — the R4 SearchParameters, loaded once and narrowed per resource type
 *   (`createSearchRegistry`), plus the CapabilityStatement view (`supportedSearchParams`).
 * - `extract.ts`  — on every write, a resource → its index rows (`createExtractor`), by
 *   evaluating each parameter's FHIRPath once compiled per type.
 * - `parse.ts`    — on every search, `[name, value]` pairs → an `IndexQuery` (pure), with
 *   unknown parameters, coded errors and the result parameters set apart; chains and `_has`
 *   become nested searches, composites and `:of-type` conditions on one element group.
 * - `include.ts`  — `_include` / `_revinclude` directives (pure parse), and the gathering of a
 *   page's included resources through index queries, capped per page.
 *
 * The storage side — row and query shapes (`storage/search-types.ts`) and the SQL planner
 * (`storage/sqlite/search-sql.ts`) — knows nothing of FHIR beyond the seven row kinds, composite
 * element groups, and references between resources.
 */

export { createSearchRegistry, supportedSearchParams, splitUnion } from './registry.ts';
export type { CompositeComponent, ExpressionPart, SearchParamDef, SearchParamType, SearchRegistry } from './registry.ts';
export { createExtractor, searchDateRange, splitReference } from './extract.ts';
export type { Extractor, ExtractorOptions } from './extract.ts';
export { DEFAULT_COUNT, MAX_CHAIN, MAX_COUNT, parseSearchRequest, splitEscaped, unescape } from './parse.ts';
export { gatherIncludes, MAX_INCLUDES, parseIncludes, supportedIncludes } from './include.ts';
export type { IncludeDirective, IncludeResult, IncludeSource, ParsedIncludes } from './include.ts';
export type { ParsedSearch, ParseOptions, SearchError } from './parse.ts';
