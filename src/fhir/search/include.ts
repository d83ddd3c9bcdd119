/**
 * `_include` and `_revinclude` (http://hl7.org/fhir/R4/search.html#include): parse the directives
 * (pure), then gather the included resources of one page through the index.
 *
 * - `_include=Source:param[:Target]` adds the resources that the page's `Source` resources refer
 *   to through `param`; `Source:*` (or `*` alone: every type on the page) every reference parameter.
 * - `_revinclude=Source:param[:Target]` adds the `Source` resources that refer to the page's
 *   resources (of `Target`, when given) through `param`; `Source:*` through any reference parameter.
 * - `:iterate` (and R4's older name `:recurse`) applies the directive again to what was included,
 *   until nothing new comes or the cap is reached.
 *
 * Both directions are index queries over the stored reference rows (`referencedBy` and plain
 * reference conditions), so they agree with what `param=Type/id` finds. A resource already on
 * the page (as a match or an earlier include) is never repeated. At most `MAX_INCLUDES` resources
 * are included per page; beyond it the result says so (`capped`).
 *
 * Error codes:
 *   VLM_SEARCH_BAD_INCLUDE     not `Type:param[:Target]` / `Type:*` / `*`, an unknown type, a
 *                              parameter that is not a reference, or a target it cannot point to
 *   VLM_SEARCH_BAD_MODIFIER    a modifier other than `:iterate` / `:recurse`
 */

import type { Page, VersionRecord } from '../../storage/index-store.ts';
import type { IndexCondition, IndexQuery } from '../../storage/search-types.ts';
import type { SearchError } from './parse.ts';
import type { SearchRegistry } from './registry.ts';

/** Most resources included in one page (matches do not count). */
export const MAX_INCLUDES = 1000;

/** Most rounds of `:iterate`; each round must add something, so this only bounds pathological graphs. */
const MAX_ROUNDS = 10;

/** One `_include` / `_revinclude` value. */
export interface IncludeDirective {
  /** The parameter name as written (`_include:iterate`). */
  readonly name: string;
  readonly reverse: boolean;
  readonly iterate: boolean;
  /** Null: `_include=*`, every type on the page. */
  readonly sourceType: string | null;
  /** Reference parameter codes of `sourceType`; null: all of the source type's (`*`). */
  readonly params: readonly string[] | null;
  readonly targetType?: string;
}

export interface ParsedIncludes {
  readonly directives: IncludeDirective[];
  /** Directives naming a parameter the source type does not have (names as written). */
  readonly unknown: string[];
  readonly errors: SearchError[];
}

/** Parse the `_include` / `_revinclude` pairs among `params` (others are ignored); never throws. */
export function parseIncludes(registry: SearchRegistry, params: Iterable<readonly [string, string]>): ParsedIncludes {
  const directives: IncludeDirective[] = [];
  const unknown: string[] = [];
  const errors: SearchError[] = [];
  for (const [name, value] of params) {
    const [code, modifier, ...more] = name.split(':');
    if (code !== '_include' && code !== '_revinclude') continue;
    if (more.length || (modifier !== undefined && modifier !== 'iterate' && modifier !== 'recurse')) {
      errors.push({ param: name, code: 'VLM_SEARCH_BAD_MODIFIER' });
      continue;
    }
    const reverse = code === '_revinclude';
    const directive = parseDirective(registry, name, reverse, modifier !== undefined, value);
    if (directive === 'unknown') unknown.push(name);
    else if (typeof directive === 'string') errors.push({ param: name, code: directive });
    else directives.push(directive);
  }
  return { directives, unknown, errors };
}

function parseDirective(
  registry: SearchRegistry,
  name: string,
  reverse: boolean,
  iterate: boolean,
  value: string,
): IncludeDirective | 'unknown' | string {
  const bad = 'VLM_SEARCH_BAD_INCLUDE';
  if (value === '*') {
    // `_revinclude=*` would ask every type of the server: not supported, reported like an unknown parameter.
    return reverse ? 'unknown' : { name, reverse, iterate, sourceType: null, params: null };
  }
  const [sourceType, code, targetType, ...rest] = value.split(':');
  if (sourceType === undefined || code === undefined || code === '' || rest.length) return bad;
  if (!registry.resourceTypes.includes(sourceType)) return bad;
  if (targetType !== undefined && !registry.resourceTypes.includes(targetType)) return bad;
  if (code === '*') {
    return { name, reverse, iterate, sourceType, params: null, ...(targetType !== undefined ? { targetType } : {}) };
  }
  const def = registry.get(sourceType, code);
  if (def === undefined) return 'unknown';
  if (def.kind !== 'reference') return bad;
  if (targetType !== undefined && def.targets.length && !def.targets.includes(targetType)) return bad;
  return { name, reverse, iterate, sourceType, params: [def.code], ...(targetType !== undefined ? { targetType } : {}) };
}

/**
 * CapabilityStatement.rest.resource.searchInclude / searchRevInclude of `type`: every
 * `type:param` over its reference parameters (and `*`), and every `Source:param` whose reference
 * parameter can target `type`.
 */
export function supportedIncludes(registry: SearchRegistry, type: string): { searchInclude: string[]; searchRevInclude: string[] } {
  const references = (t: string) => registry.forType(t).filter((p) => p.kind === 'reference');
  const searchInclude = [...references(type).map((p) => `${type}:${p.code}`).sort(), '*'];
  const searchRevInclude: string[] = [];
  for (const source of registry.resourceTypes) {
    for (const p of references(source)) if (p.targets.includes(type)) searchRevInclude.push(`${source}:${p.code}`);
  }
  return { searchInclude, searchRevInclude: searchRevInclude.sort() };
}

/** What gathering includes needs: the index search and the resource loader. */
export interface IncludeSource {
  readonly registry: SearchRegistry;
  search(query: IndexQuery): Promise<Page<VersionRecord>>;
}

export interface IncludeResult {
  /** Included versions, in the order found (each once, none of them a match). */
  readonly records: VersionRecord[];
  /** True when MAX_INCLUDES (or `limit`) stopped the gathering: some includes are missing. */
  readonly capped: boolean;
}

/**
 * The resources `directives` include for the page `matches`, at most `limit` of them.
 * Index errors propagate (see IndexStore.search).
 */
export async function gatherIncludes(
  source: IncludeSource,
  directives: readonly IncludeDirective[],
  matches: readonly VersionRecord[],
  limit: number = MAX_INCLUDES,
): Promise<IncludeResult> {
  const seen = new Set(matches.map(key));
  const records: VersionRecord[] = [];
  let frontier: readonly VersionRecord[] = matches;
  for (let round = 0; round < MAX_ROUNDS && frontier.length > 0; round++) {
    const next: VersionRecord[] = [];
    for (const directive of directives) {
      if (round > 0 && !directive.iterate) continue;
      for (const query of directiveQueries(source.registry, directive, frontier)) {
        // Enough rows that, after skipping those already on the page, `limit` can still be passed.
        const count = limit - records.length + seen.size + 1;
        const page = await source.search({ ...query, sort: [], count, offset: 0, wantTotal: false });
        for (const record of page.records) {
          const k = key(record);
          if (seen.has(k)) continue;
          if (records.length >= limit) return { records, capped: true };
          seen.add(k);
          records.push(record);
          next.push(record);
        }
      }
    }
    frontier = next;
  }
  return { records, capped: false };
}

function key(record: VersionRecord): string {
  return `${record.type}/${record.id}`;
}

type Where = Pick<IndexQuery, 'resourceType' | 'where'>;

/** The index queries of one directive over `frontier` (one per source type for `_include`). */
function directiveQueries(registry: SearchRegistry, d: IncludeDirective, frontier: readonly VersionRecord[]): Where[] {
  const referenceParams = (type: string) =>
    d.params ?? registry.forType(type).filter((p) => p.kind === 'reference').map((p) => p.code);
  if (!d.reverse) {
    const byType = new Map<string, string[]>();
    for (const r of frontier) {
      if (d.sourceType !== null && r.type !== d.sourceType) continue;
      byType.set(r.type, [...(byType.get(r.type) ?? []), r.id]);
    }
    const out: Where[] = [];
    for (const [sourceType, sourceIds] of byType) {
      const params = referenceParams(sourceType);
      if (params.length === 0) continue;
      const condition: IndexCondition = { kind: 'referencedBy', params, sourceType, sourceIds };
      out.push({ resourceType: d.targetType ?? null, where: [{ negate: false, anyOf: [condition] }] });
    }
    return out;
  }
  const sourceType = d.sourceType!;
  const params = referenceParams(sourceType);
  const anyOf: IndexCondition[] = [];
  for (const code of params) {
    const targets = registry.get(sourceType, code)?.targets ?? [];
    for (const r of frontier) {
      if (d.targetType !== undefined && r.type !== d.targetType) continue;
      if (targets.length && !targets.includes(r.type)) continue;
      anyOf.push({ kind: 'reference', param: code, id: r.id, types: [r.type] });
    }
  }
  return anyOf.length ? [{ resourceType: sourceType, where: [{ negate: false, anyOf }] }] : [];
}
