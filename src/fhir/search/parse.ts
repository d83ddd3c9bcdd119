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
 *   `value||code`, `value`), uri (exact, `:below`, `:above`), composite (`a$b`, components
 *   matched within one element), identifier `:of-type` (`system|code|value`), `:missing` on
 *   every kind, `_id`, `_lastUpdated`, `_type` (system level; other parameters then resolve
 *   in every listed type), `_count`, `_offset`, `_sort`.
 * - Chains (`subject:Patient.name`, `subject.name`, `encounter:Encounter.subject:Patient.family`,
 *   http://hl7.org/fhir/R4/search.html#chaining) and reverse chains (`_has:Observation:patient:code`,
 *   nested, http://hl7.org/fhir/R4/search.html#has) become nested searches, up to MAX_CHAIN links.
 *   A chain without a type modifier searches every target type that has the chained parameter.
 * - Result parameters (`_summary`, `_elements`, `_include`, …) are returned untouched in
 *   `result`; parameters the registry does not know or the index cannot serve (special,
 *   `_text`, `_content`, …, also at the end of a chain) are listed in `unknown`.
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
 *   VLM_SEARCH_BAD_CHAIN       a chain through a non-reference parameter, to a type the parameter
 *                              cannot target, without a type where the targets are open, or too long
 *   VLM_SEARCH_BAD_HAS         `_has` not `_has:Type:param:…`, or `param` not a reference to this type
 *   VLM_SEARCH_BAD_COMPOSITE   a composite value without one `$`-separated part per component
 *   VLM_SEARCH_BAD_OF_TYPE     `:of-type` not `system|code|value`
 */

import type {
  IndexClause,
  IndexCondition,
  IndexQuery,
  IndexSort,
  Prefix,
  RowCondition,
  SearchKind,
  SubQuery,
} from '../../storage/search-types.ts';
import { componentParam, normalizeSearchText } from '../../storage/search-types.ts';
import { searchDateRange, splitReference } from './extract.ts';
import type { SearchParamDef, SearchRegistry } from './registry.ts';

/** Page size when `_count` is absent. */
export const DEFAULT_COUNT = 50;
/** Largest page served; a larger `_count` is lowered to it (http://hl7.org/fhir/R4/search.html#count). */
export const MAX_COUNT = 1000;
/** Most links in one chain or `_has` nest (`a.b.c.d` is 4); longer is VLM_SEARCH_BAD_CHAIN. */
export const MAX_CHAIN = 4;

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

/** Thrown when a parameter (or the end of its chain) is unknown: the whole parameter is listed in `unknown`. */
class UnknownParam extends Error {}

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
  const list = [...params];
  // At system level, `_type` scopes the other parameters: each must exist in every listed type.
  const types =
    resourceType === null
      ? list.filter(([name]) => name === '_type').flatMap(([, value]) => splitEscaped(value, ',').map(unescape).filter((t) => t !== ''))
      : [];
  const ctx: Context = {
    registry,
    resourceType,
    types: types.filter((t) => registry.resourceTypes.includes(t)),
    baseUrl: options.baseUrl.replace(/\/+$/, ''),
    now: options.now ?? Date.now(),
  };
  const where: IndexClause[] = [];
  const sort: IndexSort[] = [];
  const unknown: string[] = [];
  const errors: SearchError[] = [];
  const result: [string, string][] = [];
  let count = DEFAULT_COUNT;
  let offset = 0;
  let wantTotal = true;

  for (const [name, value] of list) {
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
        const clause = parseParam(ctx, resourceType, name, value, 1);
        if (clause !== null) where.push(clause);
      }
    } catch (err) {
      if (err instanceof UnknownParam) unknown.push(name);
      else if (err instanceof ParamError) errors.push({ param: name, code: err.code });
      else throw err;
    }
  }
  return { query: { resourceType, where, sort, count, offset, wantTotal }, unknown, errors, result };
}

interface Context {
  readonly registry: SearchRegistry;
  readonly resourceType: string | null;
  /** System level: the `_type` list (known types only). */
  readonly types: readonly string[];
  readonly baseUrl: string;
  readonly now: number;
}

/**
 * One parameter of a search on `type` → its clause; null when the value is empty (an empty value
 * selects nothing: the parameter is ignored). `depth` counts chain and `_has` links.
 */
function parseParam(ctx: Context, type: string | null, name: string, value: string, depth: number): IndexClause | null {
  if (depth > MAX_CHAIN) throw new ParamError('VLM_SEARCH_BAD_CHAIN');
  if (name === '_has' || name.startsWith('_has:')) return parseHas(ctx, type, name, value, depth);
  const dot = name.indexOf('.');
  if (dot >= 0) return parseChain(ctx, type, name.slice(0, dot), name.slice(dot + 1), value, depth);
  const colon = name.indexOf(':');
  const code = colon < 0 ? name : name.slice(0, colon);
  const modifier = colon < 0 ? undefined : name.slice(colon + 1);
  const def = lookup(ctx, type, code);
  if (def === undefined || (def.kind === undefined && def.column === undefined && def.components === undefined)) {
    throw new UnknownParam();
  }
  if (value === '') return null;
  return parseClause(ctx, def, modifier, value);
}

/**
 * The parameter `code` of `type`. At system level: a Resource parameter, or one that every `_type`
 * has with the same kind (its reference targets merged).
 */
function lookup(ctx: Context, type: string | null, code: string): SearchParamDef | undefined {
  if (type !== null) return ctx.registry.get(type, code);
  const common = ctx.registry.get(null, code);
  if (common !== undefined || ctx.types.length === 0) return common;
  const defs = ctx.types.map((t) => ctx.registry.get(t, code));
  const first = defs[0];
  if (first?.kind === undefined || defs.some((d) => d?.kind !== first.kind)) return undefined;
  return { ...first, targets: [...new Set(defs.flatMap((d) => d!.targets))] };
}

/**
 * `ref[:Type].rest=value` on `type`: resources whose reference `ref` targets a resource (of `Type`,
 * or of any target type that knows the next link) matching `rest=value`
 * (http://hl7.org/fhir/R4/search.html#chaining).
 */
function parseChain(ctx: Context, type: string | null, head: string, rest: string, value: string, depth: number): IndexClause | null {
  const colon = head.indexOf(':');
  const code = colon < 0 ? head : head.slice(0, colon);
  const typeModifier = colon < 0 ? undefined : head.slice(colon + 1);
  const def = lookup(ctx, type, code);
  if (def === undefined) throw new UnknownParam();
  if (def.kind !== 'reference' || rest === '') throw new ParamError('VLM_SEARCH_BAD_CHAIN');
  let candidates: readonly string[];
  if (typeModifier !== undefined) {
    if (!ctx.registry.resourceTypes.includes(typeModifier)) throw new ParamError('VLM_SEARCH_BAD_CHAIN');
    if (def.targets.length && !def.targets.includes(typeModifier)) throw new ParamError('VLM_SEARCH_BAD_CHAIN');
    candidates = [typeModifier];
  } else {
    // A reference to Any type cannot be chained without naming the type.
    candidates = def.targets.filter((t) => ctx.registry.resourceTypes.includes(t));
    if (candidates.length === 0) throw new ParamError('VLM_SEARCH_BAD_CHAIN');
  }
  const targets: SubQuery[] = [];
  let empty = false;
  for (const target of candidates) {
    let clause: IndexClause | null;
    try {
      clause = parseParam(ctx, target, rest, value, depth + 1);
    } catch (err) {
      // A target type without the chained parameter is skipped; every one without it = unknown.
      if (err instanceof UnknownParam) continue;
      throw err;
    }
    if (clause === null) empty = true;
    else targets.push({ resourceType: target, where: [clause] });
  }
  if (empty) return null;
  if (targets.length === 0) throw new UnknownParam();
  return { negate: false, anyOf: [{ kind: 'chain', param: def.code, targets }] };
}

/**
 * `_has:Source:ref:rest=value` on `type`: resources that some `Source` matching `rest=value`
 * refers to through its reference parameter `ref` (http://hl7.org/fhir/R4/search.html#has).
 */
function parseHas(ctx: Context, type: string | null, name: string, value: string, depth: number): IndexClause | null {
  const parts = name.split(':');
  const [, source, ref] = parts;
  const rest = parts.slice(3).join(':');
  if (source === undefined || ref === undefined || rest === '' || !ctx.registry.resourceTypes.includes(source)) {
    throw new ParamError('VLM_SEARCH_BAD_HAS');
  }
  const def = ctx.registry.get(source, ref);
  if (def === undefined) throw new UnknownParam();
  if (def.kind !== 'reference') throw new ParamError('VLM_SEARCH_BAD_HAS');
  if (type !== null && def.targets.length && !def.targets.includes(type)) throw new ParamError('VLM_SEARCH_BAD_HAS');
  const inner = parseParam(ctx, source, rest, value, depth + 1);
  if (inner === null) return null;
  return { negate: false, anyOf: [{ kind: 'has', param: def.code, source: { resourceType: source, where: [inner] } }] };
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
      const def = lookup(ctx, ctx.resourceType, code);
      if (def?.column !== undefined) return { of: def.column, param: code, descending };
      if (def?.kind === undefined || !SORTABLE.has(def.kind)) throw new ParamError('VLM_SEARCH_BAD_SORT');
      return { of: def.kind, param: code, descending };
    });
}

function parseClause(ctx: Context, def: SearchParamDef, modifier: string | undefined, value: string): IndexClause {
  // Raw comma items: token and quantity split them further on `|` before unescaping.
  const raw = splitEscaped(value, ',').filter((v) => v !== '');
  const values = raw.map(unescape);
  // Composites take only `:missing`: whether the resource has an element with every component.
  if (def.components !== undefined && modifier !== undefined && modifier !== 'missing') throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
  if (modifier === 'missing') {
    const missing = parseMissing(value);
    if (def.components !== undefined) {
      return { negate: false, anyOf: [{ kind: 'missing', of: 'composite', param: componentParam(def.code, 0), missing }] };
    }
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
  if (def.components !== undefined) {
    return { negate: false, anyOf: raw.map((v) => parseComposite(ctx, param, def.components!, v)) };
  }
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
      if (modifier === 'of-type') return { negate: false, anyOf: raw.map((v) => parseOfType(param, v)) };
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
      return { negate: false, anyOf: values.map((v) => parseReference(ctx, param, def.targets, modifier, v)) };
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

/**
 * One composite value `a$b…` (raw, escapes kept): one condition per component, each parsed as its
 * component's kind (http://hl7.org/fhir/R4/search.html#composite).
 */
function parseComposite(ctx: Context, code: string, components: NonNullable<SearchParamDef['components']>, raw: string): IndexCondition {
  const parts = splitEscaped(raw, '$');
  if (parts.length !== components.length || parts.some((p) => p === '')) throw new ParamError('VLM_SEARCH_BAD_COMPOSITE');
  return {
    kind: 'composite',
    param: code,
    components: components.map((component, i) => parseValue(ctx, component.kind, componentParam(code, i), parts[i]!)),
  };
}

/** One raw value (escapes kept) of a parameter of `kind`, without modifier. */
function parseValue(ctx: Context, kind: SearchKind, param: string, raw: string): RowCondition {
  const value = unescape(raw);
  switch (kind) {
    case 'string':
      return { kind: 'string', param, op: 'starts', value: normalizeSearchText(value) };
    case 'token':
      return parseToken(param, raw);
    case 'date':
      return { kind: 'date', param, ...parseDate(value, ctx.now) };
    case 'reference':
      return parseReference(ctx, param, [], undefined, value);
    case 'number':
      return { kind: 'number', param, ...parseNumber(value) };
    case 'quantity':
      return parseQuantity(param, raw);
    case 'uri':
      return { kind: 'uri', param, op: 'eq', value };
  }
}

/**
 * `:of-type=system|code|value` (http://hl7.org/fhir/R4/search.html#token): an identifier whose
 * type has the coding and whose value is `value`, in the same identifier (see extract.ts).
 */
function parseOfType(param: string, raw: string): IndexCondition {
  const parts = splitPipes(raw);
  if (parts.length !== 3 || parts[1] === '' || parts[2] === '') throw new ParamError('VLM_SEARCH_BAD_OF_TYPE');
  const [system, code, value] = parts as [string, string, string];
  const composite = `${param}:of-type`;
  return {
    kind: 'composite',
    param: composite,
    components: [
      { kind: 'token', param: componentParam(composite, 0), ...(system !== '' ? { system } : {}), code },
      { kind: 'token', param: componentParam(composite, 1), code: value },
    ],
  };
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

function parseToken(param: string, value: string): RowCondition {
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

function parseQuantity(param: string, value: string): RowCondition {
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

function parseReference(
  ctx: Context,
  param: string,
  targets: readonly string[],
  modifier: string | undefined,
  value: string,
): RowCondition {
  let typeModifier: string | undefined;
  if (modifier !== undefined) {
    if (!ctx.registry.resourceTypes.includes(modifier)) throw new ParamError('VLM_SEARCH_BAD_MODIFIER');
    typeModifier = modifier;
  }
  if (ID.test(value)) {
    const types = typeModifier !== undefined ? [typeModifier] : targets;
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
