/**
 * Search request parsing (pure): `[name, value]` pairs of a search on a resource type →
 * an IndexQuery for the storage planner (http://hl7.org/fhir/R4/search.html).
 *
 * - A repeated parameter is AND, a comma list inside one value is OR (`\,` `\|` `\$` `\\`
 *   escape the separators, http://hl7.org/fhir/R4/search.html#escaping).
 * - Supported: string (starts-with, `:exact`, `:contains`), token (`system|code`, `|code`,
 *   `system|`, `code`, `:not`, `:text`), date (prefixes eq ne gt lt ge le sa eb ap over
 *   precision ranges), reference (`Type/id`, `id`, this server's absolute URL, other URLs,
 *   `:Type`), number (prefixes, implicit precision), quantity (`[prefix]value|system|code`,
 *   `value||code`, `value`), uri (exact, `:below`, `:above`), `:missing` on every kind,
 *   `_id`, `_lastUpdated`, `_type` (system level), `_count`, `_offset`, `_sort`.
 * - Result parameters (`_summary`, `_elements`, `_include`, …) are returned untouched in
 *   `result`; parameters the registry does not know or the index cannot serve (chains,
 *   `_has`, composite, special, `_text`, `_content`, …) are listed in `unknown`.
 * - Malformed values become `errors` entries `{ param, code }` (the HTTP layer answers 400).
 *
 * Error codes:
 *   VLM_SEARCH_BAD_MODIFIER    modifier unknown or unsupported for the parameter's type
 *   VLM_SEARCH_BAD_PREFIX      a prefix where the type has none, or an unknown prefix
 *   VLM_SEARCH_BAD_DATE        not a FHIR date/dateTime/instant
 *   VLM_SEARCH_BAD_NUMBER      not a decimal (number, quantity value)
 *   VLM_SEARCH_BAD_QUANTITY    not `number`, `number||code` or `number|system|code`
 *   VLM_SEARCH_BAD_REFERENCE   a reference value that cannot name a resource
 *   VLM_SEARCH_BAD_MISSING     `:missing` other than true/false
 *   VLM_SEARCH_BAD_COUNT       `_count` / `_offset` not a non-negative integer
 *   VLM_SEARCH_BAD_SORT        `_sort` on an unknown or unsortable parameter
 *   VLM_SEARCH_BAD_TYPE        `_type` names no resource type
 */

import type {
  IndexClause,
  IndexCondition,
  IndexQuery,
  IndexSort,
  Prefix,
  SearchKind,
} from '../../storage/search-types.ts';
import { normalizeSearchText } from '../../storage/search-types.ts';
import { searchDateRange, splitReference } from './extract.ts';
import type { SearchParamDef, SearchRegistry } from './registry.ts';

/** Page size when `_count` is absent. */
export const DEFAULT_COUNT = 50;
/** Largest page served; a larger `_count` is lowered to it (http://hl7.org/fhir/R4/search.html#count). */
export const MAX_COUNT = 1000;

/** Parameters that shape the result, not the match; passed through in `ParsedSearch.result`. */
const RESULT_PARAMS = new Set([
  '_summary',
  '_elements',
  '_format',
  '_pretty',
  '_total',
  '_include',
  '_revinclude',
  '_contained',
  '_containedType',
  '_snapshot',
]);

export interface SearchError {
  /** The parameter as written, modifier included (`date`, `name:foo`). */
  readonly param: string;
  readonly code: string;
}

export interface ParsedSearch {
  readonly query: IndexQuery;
  /** Parameters ignored because they are unknown or unsupported (names as written). */
  readonly unknown: string[];
  readonly errors: SearchError[];
  /** Result parameters, untouched and in request order. */
  readonly result: [string, string][];
}

export interface ParseOptions {
  /** This server's FHIR base URL: absolute references under it are local. */
  baseUrl: string;
  /** "Now" for `ap` on dates (ms since epoch); defaults to Date.now(). */
  now?: number;
}

const PREFIXES = new Set<string>(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap']);

const SORTABLE = new Set<SearchKind>(['string', 'token', 'date', 'reference', 'number', 'quantity', 'uri']);

/** Thrown inside the parser and collected per parameter. */
class ParamError extends Error {
  readonly code: string;
  constructor(code: string) {
    super(code);
    this.code = code;
  }
}

/**
 * Parse the parameters of a search on `resourceType` (null = system-level search) into an
 * IndexQuery; never throws (see the error codes above).
 */
export function parseSearchRequest(
  registry: SearchRegistry,
  resourceType: string | null,
  params: Iterable<readonly [string, string]>,
  options: ParseOptions,
): ParsedSearch {
  const ctx: Context = { registry, resourceType, baseUrl: options.baseUrl.replace(/\/+$/, ''), now: options.now ?? Date.now() };
  const where: IndexClause[] = [];
  const sort: IndexSort[] = [];
  const unknown: string[] = [];
  const errors: SearchError[] = [];
  const result: [string, string][] = [];
  let count = DEFAULT_COUNT;
  let offset = 0;
  let wantTotal = true;

  for (const [name, value] of params) {
    const colon = name.indexOf(':');
    const code = colon < 0 ? name : name.slice(0, colon);
    const modifier = colon < 0 ? undefined : name.slice(colon + 1);
    try {
      if (RESULT_PARAMS.has(code)) {
        result.push([name, value]);
        if (code === '_total' && value === 'none') wantTotal = false;
      } else if (code === '_count') {
        count = Math.min(wholeNumber(value), MAX_COUNT);
      } else if (code === '_offset') {
        offset = wholeNumber(value);
      } else if (code === '_sort') {
        if (modifier !== undefined) throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
        sort.push(...parseSort(ctx, value));
      } else if (code === '_type' && resourceType === null) {
        if (modifier !== undefined) throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
        const types = splitEscaped(value, ',').map(unescape).filter((t) => t !== '');
        if (types.some((t) => !registry.resourceTypes.includes(t))) throw new ParamError('VLM_SEARCH_BAD_TYPE');
        if (types.length) where.push({ negate: false, anyOf: types.map((type) => ({ kind: 'type', type })) });
      } else {
        const def = registry.get(resourceType, code);
        // Chains (`subject:Patient.name`) are not supported yet: unknown, not malformed.
        const chained = modifier !== undefined && modifier.includes('.');
        if (def === undefined || chained || (def.kind === undefined && def.column === undefined)) {
          unknown.push(name);
          continue;
        }
        if (value === '') continue; // an empty value selects nothing: ignore it
        where.push(parseClause(ctx, def, modifier, value));
      }
    } catch (err) {
      if (!(err instanceof ParamError)) throw err;
      errors.push({ param: name, code: err.code });
    }
  }
  return { query: { resourceType, where, sort, count, offset, wantTotal }, unknown, errors, result };
}

interface Context {
  readonly registry: SearchRegistry;
  readonly resourceType: string | null;
  readonly baseUrl: string;
  readonly now: number;
}

function wholeNumber(value: string): number {
  if (!/^\d{1,9}$/.test(value)) throw new ParamError('VLM_SEARCH_BAD_COUNT');
  return Number(value);
}

function parseSort(ctx: Context, value: string): IndexSort[] {
  return value
    .split(',')
    .filter((s) => s !== '')
    .map((item) => {
      const descending = item.startsWith('-');
      const code = descending ? item.slice(1) : item;
      const def = ctx.registry.get(ctx.resourceType, code);
      if (def?.column !== undefined) return { of: def.column, param: code, descending };
      if (def?.kind === undefined || !SORTABLE.has(def.kind)) throw new ParamError('VLM_SEARCH_BAD_SORT');
      return { of: def.kind, param: code, descending };
    });
}

function parseClause(ctx: Context, def: SearchParamDef, modifier: string | undefined, value: string): IndexClause {
  // Raw comma items: token and quantity split them further on `|` before unescaping.
  const raw = splitEscaped(value, ',').filter((v) => v !== '');
  const values = raw.map(unescape);
  if (modifier === 'missing') {
    const missing = parseMissing(value);
    if (def.column !== undefined) {
      // Columns are always present: missing=true matches nothing, missing=false everything.
      return { negate: !missing, anyOf: [] };
    }
    return { negate: false, anyOf: [{ kind: 'missing', of: def.kind!, param: def.code, missing }] };
  }
  if (def.column === 'id') {
    if (modifier !== undefined) throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
    return { negate: false, anyOf: values.map((id) => ({ kind: 'id', id })) };
  }
  if (def.column === 'lastUpdated') {
    if (modifier !== undefined) throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
    return {
      negate: false,
      anyOf: values.map((v) => {
        const { prefix, low, high } = parseDate(v, ctx.now);
        return { kind: 'lastUpdated', prefix, low, high };
      }),
    };
  }
  const param = def.code;
  switch (def.kind) {
    case 'string': {
      if (modifier !== undefined && modifier !== 'exact' && modifier !== 'contains') {
        throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
      }
      const op = modifier ?? 'starts';
      return {
        negate: false,
        anyOf: values.map((v) => ({ kind: 'string', param, op, value: op === 'exact' ? v : normalizeSearchText(v) })),
      };
    }
    case 'token': {
      if (modifier === 'text') {
        return { negate: false, anyOf: values.map((v) => ({ kind: 'token', param, text: normalizeSearchText(v) })) };
      }
      if (modifier !== undefined && modifier !== 'not') throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
      return { negate: modifier === 'not', anyOf: raw.map((v) => parseToken(param, v)) };
    }
    case 'date': {
      if (modifier !== undefined) throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
      return {
        negate: false,
        anyOf: values.map((v) => ({ kind: 'date', param, ...parseDate(v, ctx.now) })),
      };
    }
    case 'reference':
      return { negate: false, anyOf: values.map((v) => parseReference(ctx, def, modifier, v)) };
    case 'number': {
      if (modifier !== undefined) throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
      return { negate: false, anyOf: values.map((v) => ({ kind: 'number', param, ...parseNumber(v) })) };
    }
    case 'quantity': {
      if (modifier !== undefined) throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
      return { negate: false, anyOf: raw.map((v) => parseQuantity(param, v)) };
    }
    case 'uri':
      return { negate: false, anyOf: values.map((v) => parseUri(param, modifier, v)) };
    default:
      throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
  }
}

function parseMissing(value: string): boolean {
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new ParamError('VLM_SEARCH_BAD_MISSING');
}

/** Split on every unescaped `separator`, keeping all escapes (undo them with `unescape`). */
export function splitEscaped(value: string, separator: string): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < value.length; i++) {
    if (value[i] === '\\') i++;
    else if (value[i] === separator) {
      out.push(value.slice(start, i));
      start = i + 1;
    }
  }
  out.push(value.slice(start));
  return out;
}

/** Remove search escapes: `\,` `\|` `\$` `\\` → the character itself. */
export function unescape(value: string): string {
  return value.replace(/\\(.)/gs, '$1');
}

/** Split a token/quantity value on unescaped `|` and unescape each part. */
function splitPipes(value: string): string[] {
  return splitEscaped(value, '|').map(unescape);
}

function parseToken(param: string, value: string): IndexCondition {
  const parts = splitPipes(value);
  if (parts.length === 1) return { kind: 'token', param, code: parts[0]! };
  if (parts.length !== 2) return { kind: 'token', param, system: parts[0]!, code: parts.slice(1).join('|') };
  const [system, code] = parts as [string, string];
  if (system === '') return { kind: 'token', param, system: null, code };
  if (code === '') return { kind: 'token', param, system };
  return { kind: 'token', param, system, code };
}

function splitPrefix(value: string): { prefix: Prefix; rest: string } {
  const m = /^([a-z]{2})(.*)$/s.exec(value);
  if (m && PREFIXES.has(m[1]!)) return { prefix: m[1] as Prefix, rest: m[2]! };
  return { prefix: 'eq', rest: value };
}

/** A date search value → prefix and range; `ap` widened by 10% of the distance to now. */
function parseDate(value: string, now: number): { prefix: Prefix; low: number; high: number } {
  const { prefix, rest } = splitPrefix(value);
  if (/^[a-z]/.test(rest)) throw new ParamError('VLM_SEARCH_BAD_PREFIX');
  const range = searchDateRange(rest);
  if (range === undefined) throw new ParamError('VLM_SEARCH_BAD_DATE');
  if (prefix !== 'ap') return { prefix, ...range };
  const delta = Math.round(0.1 * Math.abs(now - range.low));
  return { prefix, low: range.low - delta, high: range.high + delta };
}

const DECIMAL = /^([+-]?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/;

/** A number search value → prefix, value and the range its precision implies (`ap`: ±10%). */
function parseNumber(value: string): { prefix: Prefix; value: number; low: number; high: number } {
  const { prefix, rest } = splitPrefix(value);
  if (/^[a-z]/.test(rest)) throw new ParamError('VLM_SEARCH_BAD_PREFIX');
  const m = DECIMAL.exec(rest);
  if (m === null) throw new ParamError('VLM_SEARCH_BAD_NUMBER');
  const n = Number(rest);
  if (!Number.isFinite(n)) throw new ParamError('VLM_SEARCH_BAD_NUMBER');
  if (prefix === 'ap') {
    const delta = Math.abs(n) * 0.1;
    return { prefix, value: n, low: n - delta, high: n + delta };
  }
  // Implicit precision (http://hl7.org/fhir/R4/search.html#number): half a unit of the last digit.
  const decimals = m[3]?.length ?? 0;
  const exponent = m[4] === undefined ? 0 : Number(m[4]);
  const half = 0.5 * 10 ** (exponent - decimals);
  return { prefix, value: n, low: n - half, high: n + half };
}

function parseQuantity(param: string, value: string): IndexCondition {
  const parts = splitPipes(value);
  if (parts.length !== 1 && parts.length !== 3) throw new ParamError('VLM_SEARCH_BAD_QUANTITY');
  const number = parseNumber(parts[0]!);
  const system = parts[1] || undefined;
  const code = parts[2] || undefined;
  return {
    kind: 'quantity',
    param,
    ...number,
    ...(system !== undefined ? { system } : {}),
    ...(code !== undefined ? { code } : {}),
  };
}

const ID = /^[A-Za-z0-9\-.]{1,64}$/;

function parseReference(ctx: Context, def: SearchParamDef, modifier: string | undefined, value: string): IndexCondition {
  const param = def.code;
  let typeModifier: string | undefined;
  if (modifier !== undefined) {
    if (!ctx.registry.resourceTypes.includes(modifier)) throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
    typeModifier = modifier;
  }
  if (ID.test(value)) {
    const types = typeModifier !== undefined ? [typeModifier] : def.targets;
    return { kind: 'reference', param, id: value, types };
  }
  const target = splitReference(value.split('|')[0]!, ctx.baseUrl);
  if (target === undefined) throw new ParamError('VLM_SEARCH_BAD_REFERENCE');
  if ('id' in target) {
    if (!ctx.registry.resourceTypes.includes(target.type)) throw new ParamError('VLM_SEARCH_BAD_REFERENCE');
    if (typeModifier !== undefined && typeModifier !== target.type) throw new ParamError('VLM_SEARCH_BAD_REFERENCE');
    return { kind: 'reference', param, id: target.id, types: [target.type] };
  }
  if (!/^[a-z][a-z0-9+.-]*:/i.test(target.url)) throw new ParamError('VLM_SEARCH_BAD_REFERENCE');
  return { kind: 'reference', param, url: target.url };
}

function parseUri(param: string, modifier: string | undefined, value: string): IndexCondition {
  if (modifier === undefined) return { kind: 'uri', param, op: 'eq', value };
  if (modifier === 'below') return { kind: 'uri', param, op: 'below', value };
  if (modifier === 'above') return { kind: 'uri', param, op: 'above', prefixes: uriAncestors(value) };
  throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
}

/**
 * The value and every path-segment ancestor of it: `http://a.org/fhir/ValueSet/1` →
 * itself, `http://a.org/fhir/ValueSet`, `http://a.org/fhir`, `http://a.org`.
 */
function uriAncestors(value: string): string[] {
  const out = [value];
  const scheme = /^[a-z][a-z0-9+.-]*:\/\/[^/]*/i.exec(value)?.[0];
  if (scheme === undefined) return out;
  let current = value.replace(/\/+$/, '');
  if (current !== value) out.push(current);
  while (current.length > scheme.length) {
    current = current.slice(0, current.lastIndexOf('/'));
    if (current.length < scheme.length) break;
    out.push(current);
  }
  return [...new Set(out)];
}
