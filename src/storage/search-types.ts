/**
 * Storage-level shapes of the search index: the rows extracted from a resource version
 * (`SearchRow`) and the planned query over them (`IndexQuery`).
 *
 * Storage knows the seven indexable kinds of FHIR search parameter and nothing else about
 * FHIR: the FHIR layer (src/fhir/search) extracts rows and parses search URLs into these
 * shapes, and the SQL backends turn them into tables and bound-parameter queries.
 * See http://hl7.org/fhir/R4/search.html for the semantics each kind carries.
 */

/** The search parameter kinds that have index rows of their own (composites: CompositeRow). */
export type SearchKind = 'string' | 'token' | 'date' | 'reference' | 'number' | 'quantity' | 'uri';

/** Lowest and highest instants a date range can hold (ms since epoch): open period ends. */
export const DATE_MIN = -8_640_000_000_000_000;
export const DATE_MAX = 8_640_000_000_000_000;

/**
 * A string value: `norm` is lower-cased with accents removed (NFD, combining marks
 * stripped) for the default and `:contains` matches; `exact` is the value as written, for `:exact`.
 */
export interface StringRow {
  readonly kind: 'string';
  readonly param: string;
  readonly norm: string;
  readonly exact: string;
}

/**
 * A coded value. `code` null means a text-only row (CodeableConcept.text) that only
 * `:text` can match; `text` is normalised like StringRow.norm (display, text or type text).
 */
export interface TokenRow {
  readonly kind: 'token';
  readonly param: string;
  readonly system: string | null;
  readonly code: string | null;
  readonly text: string | null;
}

/** A date, dateTime, instant or Period as the inclusive range [low, high] in ms since epoch. */
export interface DateRow {
  readonly kind: 'date';
  readonly param: string;
  readonly low: number;
  readonly high: number;
}

/**
 * A reference. Local targets (relative `Type/id`, or absolute under this server's base)
 * carry `targetType` and `targetId`; external ones (other servers, `urn:`, canonicals)
 * carry only `url`.
 */
export interface ReferenceRow {
  readonly kind: 'reference';
  readonly param: string;
  readonly targetType: string | null;
  readonly targetId: string | null;
  readonly url: string | null;
}

/** A decimal or integer value. */
export interface NumberRow {
  readonly kind: 'number';
  readonly param: string;
  readonly value: number;
}

/** A Quantity / Money / Range bound: `code` is the coded unit (or the unit text when no code). */
export interface QuantityRow {
  readonly kind: 'quantity';
  readonly param: string;
  readonly value: number;
  readonly system: string | null;
  readonly code: string | null;
  readonly unit: string | null;
}

/** A uri, url or canonical value, as written. */
export interface UriRow {
  readonly kind: 'uri';
  readonly param: string;
  readonly value: string;
}

/** A row of one of the seven indexable kinds. */
export type BasicRow = StringRow | TokenRow | DateRow | ReferenceRow | NumberRow | QuantityRow | UriRow;

/**
 * One value of one component of a composite parameter (http://hl7.org/fhir/R4/search.html#composite)
 * or of `:of-type` (identifier type + value). The components of one element share `group` (unique
 * within the resource), so a composite search matches components of the SAME element, never one
 * component here and another there. `part.param` is `<code>$<component index>` (e.g.
 * `component-code-value-quantity$1`, `identifier:of-type$0`): no search parameter code contains `$`.
 */
export interface CompositeRow {
  readonly kind: 'composite';
  readonly param: string;
  readonly group: number;
  readonly part: BasicRow;
}

/** One index row of a resource's current version; `param` is the search parameter code. */
export type SearchRow = BasicRow | CompositeRow;

/** The parameter code of component `index` of composite `code` (see CompositeRow). */
export function componentParam(code: string, index: number): string {
  return `${code}$${index}`;
}

/** Comparison prefixes of ordered kinds (http://hl7.org/fhir/R4/search.html#prefix). */
export type Prefix = 'eq' | 'ne' | 'gt' | 'lt' | 'ge' | 'le' | 'sa' | 'eb' | 'ap';

/** `starts` is the default string match; `exact` and `contains` are the modifiers. */
export interface StringCondition {
  readonly kind: 'string';
  readonly param: string;
  readonly op: 'starts' | 'exact' | 'contains';
  /** Normalised for `starts`/`contains`, as written for `exact`. */
  readonly value: string;
}

/**
 * Token match. `system` undefined = any system, null = no system (`|code`);
 * `code` undefined = any code (`system|`). `text` set = `:text` (normalised prefix match).
 */
export interface TokenCondition {
  readonly kind: 'token';
  readonly param: string;
  readonly system?: string | null;
  readonly code?: string;
  readonly text?: string;
}

/** Date match of a stored range against the search range [low, high] under `prefix`. */
export interface DateCondition {
  readonly kind: 'date';
  readonly param: string;
  readonly prefix: Prefix;
  readonly low: number;
  readonly high: number;
}

/**
 * Reference match: either a local target (`id`, with `types` the allowed target types —
 * empty means any type) or an external `url`.
 */
export type ReferenceCondition =
  | { readonly kind: 'reference'; readonly param: string; readonly id: string; readonly types: readonly string[] }
  | { readonly kind: 'reference'; readonly param: string; readonly url: string };

/**
 * Number match. `value` is the number as written; [low, high) the range its precision
 * implies (used by eq/ne/ap), so `100` gives [99.5, 100.5).
 */
export interface NumberCondition {
  readonly kind: 'number';
  readonly param: string;
  readonly prefix: Prefix;
  readonly value: number;
  readonly low: number;
  readonly high: number;
}

/** Quantity match: like NumberCondition plus optional unit system and code (code also matches unit text). */
export interface QuantityCondition {
  readonly kind: 'quantity';
  readonly param: string;
  readonly prefix: Prefix;
  readonly value: number;
  readonly low: number;
  readonly high: number;
  readonly system?: string;
  readonly code?: string;
}

/** Uri match: `eq` exact; `below` stored value starts with `value`; `above` stored value is one of `prefixes`. */
export type UriCondition =
  | { readonly kind: 'uri'; readonly param: string; readonly op: 'eq' | 'below'; readonly value: string }
  | { readonly kind: 'uri'; readonly param: string; readonly op: 'above'; readonly prefixes: readonly string[] };

/** `_id`: the logical id column. */
export interface IdCondition {
  readonly kind: 'id';
  readonly id: string;
}

/** `_lastUpdated`: the resources.last_updated column (a point in time) against [low, high]. */
export interface LastUpdatedCondition {
  readonly kind: 'lastUpdated';
  readonly prefix: Prefix;
  readonly low: number;
  readonly high: number;
}

/** `_type` at system level: the resources.type column. */
export interface TypeCondition {
  readonly kind: 'type';
  readonly type: string;
}

/**
 * `:missing`: the resource has (missing=false) or has no (missing=true) row for `param` in table
 * `of` (`composite`: `param` is the composite's first component, see CompositeRow).
 */
export interface MissingCondition {
  readonly kind: 'missing';
  readonly of: SearchKind | 'composite';
  readonly param: string;
  readonly missing: boolean;
}

/** A condition on the rows of one of the seven indexable kinds. */
export type RowCondition =
  | StringCondition
  | TokenCondition
  | DateCondition
  | ReferenceCondition
  | NumberCondition
  | QuantityCondition
  | UriCondition;

/** A search nested in another: current resources of `resourceType` matching every clause. */
export interface SubQuery {
  readonly resourceType: string;
  readonly where: readonly IndexClause[];
}

/**
 * Chained parameter (http://hl7.org/fhir/R4/search.html#chaining): the resource has a reference
 * `param` whose local target is a resource matching one of `targets` (one per target type).
 */
export interface ChainCondition {
  readonly kind: 'chain';
  readonly param: string;
  readonly targets: readonly SubQuery[];
}

/**
 * Reverse chain `_has` (http://hl7.org/fhir/R4/search.html#has): some resource matching `source`
 * refers to this one through its reference parameter `param`.
 */
export interface HasCondition {
  readonly kind: 'has';
  readonly param: string;
  readonly source: SubQuery;
}

/**
 * Composite (and `:of-type`): one element group of `param` where component i matches
 * `components[i]` (whose `param` is the component's, see CompositeRow).
 */
export interface CompositeCondition {
  readonly kind: 'composite';
  readonly param: string;
  readonly components: readonly RowCondition[];
}

/**
 * `_include` (http://hl7.org/fhir/R4/search.html#include): the resource is the local target of a
 * reference parameter in `params` of one of the resources `sourceType/sourceIds`.
 */
export interface ReferencedByCondition {
  readonly kind: 'referencedBy';
  readonly params: readonly string[];
  readonly sourceType: string;
  readonly sourceIds: readonly string[];
}

/** One bound value of one parameter. */
export type IndexCondition =
  | RowCondition
  | ChainCondition
  | HasCondition
  | CompositeCondition
  | ReferencedByCondition
  | IdCondition
  | LastUpdatedCondition
  | TypeCondition
  | MissingCondition;

/**
 * A comma list of one parameter (OR). `negate` implements `:not`: the resource matches
 * when NONE of the conditions matches (including resources without the element).
 */
export interface IndexClause {
  readonly negate: boolean;
  readonly anyOf: readonly IndexCondition[];
}

/** A sort key; `of` says where the value lives (a row kind, or a resources column). */
export interface IndexSort {
  readonly of: SearchKind | 'id' | 'lastUpdated';
  /** The search parameter code (ignored for `id` and `lastUpdated`). */
  readonly param: string;
  readonly descending: boolean;
}

/** One value of a row's sort key, as the index holds it (null: the resource has no value). */
export type SortValue = string | number | null;

/**
 * A keyset position in a search's order (keyset paging): `key` holds the values of one row's sort
 * keys — one per `IndexQuery.sort` entry, then the row's type and id (the tiebreak every order ends
 * with), as `SearchPage.keys` returns them. `after`: the `count` rows that follow the key in the
 * order; `before`: the `count` rows that precede it (still returned in the query's order). Without
 * `key`, `before` means the last `count` rows. `inclusive` also admits the row at `key` itself.
 */
export interface IndexKeyset {
  readonly direction: 'after' | 'before';
  readonly key?: readonly SortValue[];
  readonly inclusive?: boolean;
}

/**
 * The key scopes (the `key_scope` of a resource's current version: which patient's compartment
 * holds it, `'shared'` for none) of the resources of one type that a chain or `_has` may
 * traverse: `only` those, or every scope `except` those.
 */
export type KeyScopeFilter = { readonly only: readonly string[] } | { readonly except: readonly string[] };

/** A planned search: resources of `resourceType` (null = all types) matching every clause (AND). */
export interface IndexQuery {
  readonly resourceType: string | null;
  readonly where: readonly IndexClause[];
  readonly sort: readonly IndexSort[];
  readonly count: number;
  readonly offset: number;
  readonly wantTotal: boolean;
  /** With `wantTotal`: count at most this many matches; beyond, the total is left undefined. */
  readonly totalLimit?: number;
  /** Keyset paging: where the page starts (applied before `offset`). */
  readonly keyset?: IndexKeyset;
  /**
   * Visibility of the resources nested searches traverse (consent, src/fhir/access.ts
   * `linkScopes`): a chain's targets and a `_has`'s sources of a type listed here, at any depth,
   * count only when their key scope passes its filter. Types not listed are not constrained; the
   * query's own matches never are (the FHIR layer decides those one by one).
   */
  readonly linkScopes?: Readonly<Record<string, KeyScopeFilter>>;
}

const COMBINING_MARKS = /\p{M}/gu;

/** Normalise text for string search: lower-case, accents removed (NFD, combining marks stripped). */
export function normalizeSearchText(value: string): string {
  return value.toLowerCase().normalize('NFD').replace(COMBINING_MARKS, '');
}
