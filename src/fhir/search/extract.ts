/**
 * Search row extraction: evaluate every search parameter of a resource's type with
 * fhirpath.js (R4 model, each expression compiled once per type) and turn the values into
 * index rows by FHIR data type (http://hl7.org/fhir/R4/search.html#ptypes):
 *
 *   string    HumanName (family, given, prefix, suffix, text), Address (line, city, district,
 *             state, postalCode, country, text), primitives, CodeableConcept/Coding text
 *   token     Coding, CodeableConcept (each coding + a text-only row), Identifier
 *             (system|value, type text), ContactPoint (value), code/string/id/uri, boolean
 *   date      date/dateTime/instant (the range its precision covers), Period, Timing events
 *   reference Reference (local `Type/id`, absolute under the server base = local, other
 *             absolute or `urn:` = url; contained `#id` skipped), canonical/uri
 *   number    decimal/integer
 *   quantity  Quantity (and Age, Duration, …), Money, Range (low and high)
 *   uri       uri/url/canonical
 *
 * Speed: a branch whose first element is absent from the resource is skipped without
 * calling fhirpath (most parameters of a type are absent from any one resource), which
 * makes extraction several times faster; measured figures are printed by
 * test/fhir/search/extract.test.ts.
 */

import fhirpath from 'fhirpath';
import r4Model from 'fhirpath/fhir-context/r4/index.js';
import {
  componentParam,
  DATE_MAX,
  DATE_MIN,
  normalizeSearchText,
  type BasicRow,
  type SearchKind,
  type SearchRow,
} from '../../storage/search-types.ts';
import { dateRange } from '../dates.ts';
import { splitReference } from './reference.ts';
import type { FhirResource } from '../request.ts';
import type { CompositeComponent, ExpressionPart, SearchRegistry } from './registry.ts';

/** Turns a resource into the search rows of its current version. */
export interface Extractor {
  /** Every search row of `resource` (deduplicated; `_id`/`_lastUpdated` have none: they are columns). */
  extract(resource: FhirResource): SearchRow[];
}

export interface ExtractorOptions {
  /** This server's FHIR base URL: absolute references under it are local. */
  baseUrl: string;
}

type Evaluate = (resource: unknown) => unknown[];

interface CompiledPart {
  readonly param: string;
  readonly kind: SearchKind;
  readonly evaluate: Evaluate;
  readonly resolveIs: string | undefined;
  /** JSON keys of the branch's first element; undefined = always evaluate. */
  readonly keys: readonly string[] | undefined;
}

/**
 * A branch of a composite parameter: it selects the elements (`Observation.component`), and each
 * component's expression is evaluated on one element at a time, so that the rows of one element
 * share a group (http://hl7.org/fhir/R4/search.html#composite).
 */
interface CompiledComposite {
  readonly param: string;
  readonly evaluate: Evaluate;
  readonly components: readonly CompositeComponent[];
  readonly keys: readonly string[] | undefined;
  /** Component expressions compiled per element path (`Observation.component`), lazily. */
  readonly byBase: Map<string, Evaluate[]>;
}

/** Strings longer than this are cut before indexing (markdown descriptions can be long). */
const MAX_STRING = 2048;

/** Build an extractor over `registry`; expressions are compiled lazily, once per resource type. */
export function createExtractor(registry: SearchRegistry, options: ExtractorOptions): Extractor {
  const baseUrl = options.baseUrl.replace(/\/+$/, '');
  const compiled = new Map<string, { parts: CompiledPart[]; composites: CompiledComposite[] }>();

  const partsFor = (type: string): { parts: CompiledPart[]; composites: CompiledComposite[] } => {
    let parts = compiled.get(type);
    if (parts === undefined) {
      parts = { parts: compileType(registry, type), composites: compileComposites(registry, type) };
      compiled.set(type, parts);
    }
    return parts;
  };

  return {
    extract(resource) {
      const rows: SearchRow[] = [];
      const seen = new Set<string>();
      const emit = (row: SearchRow): void => {
        const key = rowKey(row);
        if (seen.has(key)) return;
        seen.add(key);
        rows.push(row);
      };
      let lastGroup = 0;
      const ctx: RowContext = { baseUrl, emit, nextGroup: () => ++lastGroup };
      const { parts, composites } = partsFor(resource.resourceType);
      for (const part of parts) {
        if (part.keys !== undefined && !hasAny(resource, part.keys)) continue;
        const values = part.evaluate(resource);
        for (const value of values) toRows(part, value, ctx);
      }
      for (const composite of composites) {
        if (composite.keys !== undefined && !hasAny(resource, composite.keys)) continue;
        compositeRows(composite, resource, ctx);
      }
      return rows;
    },
  };
}

/** Where rows go while one resource is extracted; `nextGroup` numbers composite element groups. */
interface RowContext {
  readonly baseUrl: string;
  readonly emit: Emit;
  nextGroup(): number;
}

function compileComposites(registry: SearchRegistry, type: string): CompiledComposite[] {
  const out: CompiledComposite[] = [];
  for (const param of registry.forType(type)) {
    if (param.components === undefined) continue;
    for (const part of param.parts) {
      out.push({
        param: param.code,
        evaluate: compilePart(part, type),
        components: param.components,
        keys: firstElementKeys(part, type),
        byBase: new Map(),
      });
    }
  }
  return out;
}

/** Rows of each element the composite selects: a group per element, kept only when every component has a value. */
function compositeRows(composite: CompiledComposite, resource: FhirResource, ctx: RowContext): void {
  for (const element of composite.evaluate(resource)) {
    const node = element as { path?: unknown; data?: unknown };
    const base = typeof node.path === 'string' ? node.path : resource.resourceType;
    let evaluators = composite.byBase.get(base);
    if (evaluators === undefined) {
      evaluators = composite.components.map((c) => {
        const fn = fhirpath.compile({ base, expression: c.expression } as unknown as string, r4Model, { resolveInternalTypes: false });
        // `%resource` is the whole resource (MolecularSequence's coordinates use it).
        return (data: unknown) => fn(data, { resource }) as unknown[];
      });
      composite.byBase.set(base, evaluators);
    }
    const data = unwrap(element).data;
    const perComponent: BasicRow[][] = composite.components.map((component, i) => {
      const parts: BasicRow[] = [];
      const emit: Emit = (row) => {
        if (row.kind !== 'composite') parts.push(row);
      };
      const sub: RowContext = { baseUrl: ctx.baseUrl, emit, nextGroup: ctx.nextGroup };
      const compiled: CompiledPart = {
        param: componentParam(composite.param, i),
        kind: component.kind,
        evaluate: () => [],
        resolveIs: undefined,
        keys: undefined,
      };
      for (const value of evaluators[i]!(data)) toRows(compiled, value, sub);
      return parts;
    });
    if (perComponent.some((parts) => parts.length === 0)) continue;
    const group = ctx.nextGroup();
    for (const parts of perComponent) for (const part of parts) ctx.emit({ kind: 'composite', param: part.param, group, part });
  }
}

function hasAny(resource: FhirResource, keys: readonly string[]): boolean {
  for (const key of keys) if (resource[key] !== undefined) return true;
  return false;
}

function compileType(registry: SearchRegistry, type: string): CompiledPart[] {
  const out: CompiledPart[] = [];
  for (const param of registry.forType(type)) {
    if (param.kind === undefined) continue;
    for (const part of param.parts) {
      out.push({
        param: param.code,
        kind: param.kind,
        evaluate: compilePart(part, type),
        resolveIs: part.resolveIs,
        keys: firstElementKeys(part, type),
      });
    }
  }
  return out;
}

function compilePart(part: ExpressionPart, type: string): Evaluate {
  // `Resource.x` branches are rooted at the concrete type so the model knows every path.
  const expression = part.expression.replace(/^Resource\./, `${type}.`);
  const fn = fhirpath.compile(expression, r4Model, { resolveInternalTypes: false });
  return (resource) => fn(resource) as unknown[];
}

/** A branch that is pure navigation yields nothing when its first element is absent. */
const NAVIGATION_ONLY = /^[A-Za-z]+(?:\.[a-z][A-Za-z0-9]*|\.ofType\([A-Za-z]+\)|\.where\([^()]*(?:\([^()]*\)[^()]*)*\))*$/;

function firstElementKeys(part: ExpressionPart, type: string): readonly string[] | undefined {
  const expression = part.expression.replace(/^Resource\./, `${type}.`);
  if (!NAVIGATION_ONLY.test(expression)) return undefined;
  const first = /^[A-Za-z]+\.([a-z][A-Za-z0-9]*)/.exec(expression)?.[1];
  if (first === undefined) return undefined;
  const choices = r4Model.choiceTypePaths[`${type}.${first}`];
  if (choices === undefined) return [first];
  return choices.map((suffix) => first + suffix[0]!.toUpperCase() + suffix.slice(1));
}

// ---------------------------------------------------------------------------------------
// Values → rows

/** What fhirpath.js returns with resolveInternalTypes: false: ResourceNodes or plain values. */
interface NodeLike {
  data: unknown;
  fhirNodeDataType?: string | null;
}

function unwrap(value: unknown): { type: string | undefined; data: unknown } {
  if (value !== null && typeof value === 'object' && 'data' in value && 'fhirNodeDataType' in value) {
    const node = value as NodeLike;
    return { type: node.fhirNodeDataType ?? undefined, data: node.data };
  }
  return { type: undefined, data: value };
}

type Emit = (row: SearchRow) => void;
type Json = Record<string, unknown>;

function toRows(part: CompiledPart, value: unknown, ctx: RowContext): void {
  const { type, data } = unwrap(value);
  if (data === undefined || data === null) return;
  const { baseUrl, emit } = ctx;
  const param = part.param;
  switch (part.kind) {
    case 'string':
      return stringRows(param, type, data, emit);
    case 'token':
      return tokenRows(param, type, data, ctx);
    case 'date':
      return dateRows(param, type, data, emit);
    case 'reference':
      return referenceRows(param, part.resolveIs, data, baseUrl, emit);
    case 'number':
      return numberRows(param, data, emit);
    case 'quantity':
      return quantityRows(param, type, data, emit);
    case 'uri':
      if (typeof data === 'string') emit({ kind: 'uri', param, value: data });
      return;
  }
}

function str(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function strings(value: unknown): string[] {
  if (typeof value === 'string') return value === '' ? [] : [value];
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string' && v !== '') : [];
}

function obj(value: unknown): Json | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Json) : undefined;
}

function objs(value: unknown): Json[] {
  if (Array.isArray(value)) return value.map(obj).filter((v): v is Json => v !== undefined);
  const o = obj(value);
  return o ? [o] : [];
}

function stringRow(param: string, value: string, emit: Emit): void {
  const exact = value.length > MAX_STRING ? value.slice(0, MAX_STRING) : value;
  emit({ kind: 'string', param, norm: normalizeSearchText(exact), exact });
}

function stringRows(param: string, type: string | undefined, data: unknown, emit: Emit): void {
  if (typeof data === 'string') return stringRow(param, data, emit);
  const o = obj(data);
  if (o === undefined) return;
  let values: string[];
  switch (type) {
    case 'HumanName':
      values = [...strings(o['family']), ...strings(o['given']), ...strings(o['prefix']), ...strings(o['suffix']), ...strings(o['text'])];
      break;
    case 'Address':
      values = [
        ...strings(o['line']),
        ...strings(o['city']),
        ...strings(o['district']),
        ...strings(o['state']),
        ...strings(o['postalCode']),
        ...strings(o['country']),
        ...strings(o['text']),
      ];
      break;
    case 'CodeableConcept':
      values = [...strings(o['text']), ...objs(o['coding']).flatMap((c) => strings(c['display']))];
      break;
    case 'Coding':
      values = strings(o['display']);
      break;
    case 'ContactPoint':
    case 'Identifier':
      values = strings(o['value']);
      break;
    case 'Reference':
      values = strings(o['display']);
      break;
    case 'Annotation':
      values = strings(o['text']);
      break;
    default:
      values = [];
  }
  for (const v of values) stringRow(param, v, emit);
}

function textOf(value: unknown): string | null {
  const s = str(value);
  return s === undefined ? null : normalizeSearchText(s);
}

function codingRow(param: string, coding: Json, emit: Emit): void {
  const code = str(coding['code']) ?? null;
  const text = textOf(coding['display']);
  if (code === null && text === null) return;
  emit({ kind: 'token', param, system: str(coding['system']) ?? null, code, text });
}

function tokenRows(param: string, type: string | undefined, data: unknown, ctx: RowContext): void {
  const emit = ctx.emit;
  if (typeof data === 'boolean') {
    emit({ kind: 'token', param, system: null, code: String(data), text: null });
    return;
  }
  if (typeof data === 'string') {
    if (data !== '') emit({ kind: 'token', param, system: null, code: data, text: null });
    return;
  }
  const o = obj(data);
  if (o === undefined) return;
  switch (type) {
    case 'Coding':
      return codingRow(param, o, emit);
    case 'CodeableConcept': {
      for (const coding of objs(o['coding'])) codingRow(param, coding, emit);
      const text = textOf(o['text']);
      if (text !== null) emit({ kind: 'token', param, system: null, code: null, text });
      return;
    }
    case 'Identifier': {
      const value = str(o['value']);
      if (value === undefined) return;
      emit({ kind: 'token', param, system: str(o['system']) ?? null, code: value, text: textOf(obj(o['type'])?.['text']) });
      ofTypeRows(param, o, value, ctx);
      return;
    }
    case 'ContactPoint': {
      const value = str(o['value']);
      if (value !== undefined) emit({ kind: 'token', param, system: null, code: value, text: null });
      return;
    }
    default:
      // Untyped objects (e.g. from ofType on an unknown path): read them as a Coding if they look like one.
      if ('code' in o || 'display' in o) codingRow(param, o, emit);
  }
}

/**
 * `:of-type` (http://hl7.org/fhir/R4/search.html#token): the identifier's type codings and its
 * value as the two components of one group, so `of-type=system|code|value` matches a type and a
 * value of the SAME identifier.
 */
function ofTypeRows(param: string, identifier: Json, value: string, ctx: RowContext): void {
  const codings = objs(obj(identifier['type'])?.['coding']).filter((c) => str(c['code']) !== undefined);
  if (codings.length === 0) return;
  const code = `${param}:of-type`;
  const group = ctx.nextGroup();
  for (const coding of codings) {
    const part: BasicRow = { kind: 'token', param: componentParam(code, 0), system: str(coding['system']) ?? null, code: str(coding['code'])!, text: null };
    ctx.emit({ kind: 'composite', param: part.param, group, part });
  }
  const part: BasicRow = { kind: 'token', param: componentParam(code, 1), system: null, code: value, text: null };
  ctx.emit({ kind: 'composite', param: part.param, group, part });
}

/**
 * A date/dateTime/instant as a range. A dateTime with a time but no zone is invalid in R4;
 * read it as UTC rather than drop it.
 */
export function searchDateRange(value: string): { low: number; high: number } | undefined {
  return dateRange(value) ?? (/T[\d:.]+$/.test(value) ? dateRange(`${value}Z`) : undefined);
}

function dateRows(param: string, type: string | undefined, data: unknown, emit: Emit): void {
  if (typeof data === 'string') {
    const range = searchDateRange(data);
    if (range) emit({ kind: 'date', param, low: range.low, high: range.high });
    return;
  }
  const o = obj(data);
  if (o === undefined) return;
  if (type === 'Period' || (type === undefined && ('start' in o || 'end' in o))) {
    const start = str(o['start']);
    const end = str(o['end']);
    const low = start === undefined ? DATE_MIN : searchDateRange(start)?.low;
    const high = end === undefined ? DATE_MAX : searchDateRange(end)?.high;
    if (low !== undefined && high !== undefined && (start !== undefined || end !== undefined)) {
      emit({ kind: 'date', param, low, high });
    }
    return;
  }
  if (type === 'Timing') {
    for (const event of strings(o['event'])) dateRows(param, 'dateTime', event, emit);
    const bounds = obj(obj(o['repeat'])?.['boundsPeriod']);
    if (bounds) dateRows(param, 'Period', bounds, emit);
  }
}

export { splitReference } from './reference.ts';

function referenceRows(param: string, resolveIs: string | undefined, data: unknown, baseUrl: string, emit: Emit): void {
  let reference: string | undefined;
  let declaredType: string | undefined;
  if (typeof data === 'string') {
    // canonical / uri: drop a `|version` suffix.
    reference = data.split('|')[0];
  } else {
    const o = obj(data);
    reference = str(o?.['reference']);
    declaredType = str(o?.['type']);
  }
  if (reference === undefined) return;
  const target = splitReference(reference, baseUrl);
  if (target === undefined) return;
  const type = target.type ?? declaredType;
  if (resolveIs !== undefined && type !== resolveIs) return;
  if ('id' in target) {
    emit({ kind: 'reference', param, targetType: target.type, targetId: target.id, url: null });
  } else {
    emit({ kind: 'reference', param, targetType: null, targetId: null, url: target.url });
  }
}

function numberRows(param: string, data: unknown, emit: Emit): void {
  const value =
    typeof data === 'number'
      ? data
      : typeof data === 'string'
        ? Number(data)
        : // fhirpath.js wraps decimals in FP_Decimal (toNumber()).
          typeof (data as { toNumber?: unknown } | null)?.toNumber === 'function'
          ? (data as { toNumber(): number }).toNumber()
          : NaN;
  if (Number.isFinite(value)) emit({ kind: 'number', param, value });
}

function quantityRow(param: string, q: Json, emit: Emit): void {
  const value = q['value'];
  if (typeof value !== 'number' || !Number.isFinite(value)) return;
  const unit = str(q['unit']) ?? null;
  emit({ kind: 'quantity', param, value, system: str(q['system']) ?? null, code: str(q['code']) ?? unit, unit });
}

function quantityRows(param: string, type: string | undefined, data: unknown, emit: Emit): void {
  const o = obj(data);
  if (o === undefined) return;
  if (type === 'Money') {
    const value = o['value'];
    const currency = str(o['currency']) ?? null;
    if (typeof value === 'number' && Number.isFinite(value)) {
      emit({ kind: 'quantity', param, value, system: currency && 'urn:iso:std:iso:4217', code: currency, unit: currency });
    }
    return;
  }
  if (type === 'Range') {
    for (const bound of [obj(o['low']), obj(o['high'])]) if (bound) quantityRow(param, bound, emit);
    return;
  }
  if (type === 'SampledData') return;
  quantityRow(param, o, emit);
}

function rowKey(row: SearchRow): string {
  switch (row.kind) {
    case 'string':
      return `s\u0000${row.param}\u0000${row.exact}`;
    case 'token':
      return `t\u0000${row.param}\u0000${row.system}\u0000${row.code}\u0000${row.text}`;
    case 'date':
      return `d\u0000${row.param}\u0000${row.low}\u0000${row.high}`;
    case 'reference':
      return `r\u0000${row.param}\u0000${row.targetType}\u0000${row.targetId}\u0000${row.url}`;
    case 'number':
      return `n\u0000${row.param}\u0000${row.value}`;
    case 'quantity':
      return `q\u0000${row.param}\u0000${row.value}\u0000${row.system}\u0000${row.code}\u0000${row.unit}`;
    case 'uri':
      return `u\u0000${row.param}\u0000${row.value}`;
    case 'composite':
      return `c\u0000${row.group}\u0000${rowKey(row.part)}`;
  }
}
