/**
 * Response shaping: content negotiation (http://hl7.org/fhir/R4/http.html#mime-type),
 * `_format`, `_pretty`, and `_summary` / `_elements` (http://hl7.org/fhir/R4/search.html#summary).
 */
import type { ResourceDefinitions } from './definitions.ts';
import { fhirError } from './errors.ts';
import { queryValue, type FhirRequest, type FhirResource } from './request.ts';

export const FHIR_JSON = 'application/fhir+json';
const JSON_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json+fhir', 'json', 'text/json']);
const XML_TYPES = new Set(['application/fhir+xml', 'application/xml', 'application/xml+fhir', 'text/xml', 'xml', 'html', 'text/html', 'ttl', 'text/turtle']);
const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' };

/** The media type of the response; 406 when the client accepts no JSON form. */
export function negotiate(request: FhirRequest): string {
  const format = queryValue(request, '_format');
  if (format !== undefined) {
    // `_format=application/fhir+json` sent without percent-encoding arrives with its `+` decoded
    // as a space (form encoding); no media type contains a space, so read it back as `+`.
    const wanted = format.split(';')[0]!.trim().toLowerCase().replace(/ +/g, '+');
    if (JSON_TYPES.has(wanted)) return wanted === 'application/json' || wanted === 'text/json' ? 'application/json' : FHIR_JSON;
    throw fhirError(406, 'not-supported', 'VLM_FHIR_NOT_ACCEPTABLE', 'Only JSON is supported (_format=json)', ['_format']);
  }
  const accept = request.headers['accept'];
  if (!accept) return FHIR_JSON;
  const listed = accept
    .split(',')
    .map((part) => {
      const [type, ...params] = part.split(';').map((s) => s.trim().toLowerCase());
      const q = params.find((p) => p.startsWith('q='));
      // An unreadable weight is ignored (weight 1) rather than failing the request.
      const weight = q === undefined ? 1 : Number(q.slice(2));
      return { type: type ?? '', q: Number.isFinite(weight) ? weight : 1 };
    })
    .filter((r) => r.type);
  // No media range at all (an empty or blank header) accepts anything.
  if (listed.length === 0) return FHIR_JSON;
  // q=0 means "not acceptable" (RFC 9110 §12.4.2): such ranges never select a type.
  const ranges = listed.filter((r) => r.q > 0).sort((a, b) => b.q - a.q);
  for (const range of ranges) {
    if (range.type === 'application/json') return 'application/json';
    if (JSON_TYPES.has(range.type) || range.type === '*/*' || range.type === 'application/*') return FHIR_JSON;
  }
  throw fhirError(406, 'not-supported', 'VLM_FHIR_NOT_ACCEPTABLE', 'Only application/fhir+json and application/json are supported');
}

/** Whether a media type (without parameters) is one of the XML forms Vellum does not implement. */
export function isXml(mediaType: string): boolean {
  return XML_TYPES.has(mediaType) || mediaType.endsWith('+xml');
}

export type Summary = 'true' | 'text' | 'data' | 'count' | 'false';

/** The `_summary` value, or 400 when it is not one of the spec's. */
export function summaryMode(request: FhirRequest): Summary | undefined {
  const value = queryValue(request, '_summary');
  if (value === undefined) return undefined;
  if (['true', 'text', 'data', 'count', 'false'].includes(value)) return value as Summary;
  throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_summary must be true, text, data, count or false', ['_summary']);
}

/** The `_elements` list (top-level element names), or undefined. */
export function elementsList(request: FhirRequest): string[] | undefined {
  const values = request.query.filter(([n]) => n === '_elements').flatMap(([, v]) => v.split(','));
  const names = values.map((v) => v.trim()).filter(Boolean);
  if (values.length === 0) return undefined;
  // `Patient.name` is accepted as `name` (the resource type as prefix, as some clients send it);
  // deeper paths such as `name.family` are not R4 `_elements` and are refused.
  const prefix = /^([A-Z][A-Za-z0-9]*)\.([A-Za-z][A-Za-z0-9]*)$/;
  const bare = names.map((name) => {
    const typed = prefix.exec(name);
    if (typed && (request.resourceType === undefined || typed[1] === request.resourceType)) return typed[2]!;
    if (!/^[A-Za-z][A-Za-z0-9]*$/.test(name)) {
      throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_elements takes top-level element names', ['_elements']);
    }
    return name;
  });
  return bare;
}

function keepsKey(key: string, keep: ReadonlySet<string>): boolean {
  if (keep.has(key)) return true;
  // Choice elements: `value[x]` is kept as `value`, the instance has `valueQuantity`.
  for (let i = 1; i < key.length; i++) {
    if (key[i]! >= 'A' && key[i]! <= 'Z' && keep.has(key.slice(0, i))) return true;
  }
  return false;
}

function tagged(resource: FhirResource): FhirResource {
  const meta = { ...(resource.meta ?? {}) };
  meta.tag = [...(meta.tag ?? []), SUBSETTED];
  return { ...resource, meta };
}

/** Apply `_summary` / `_elements` to one resource (http://hl7.org/fhir/R4/search.html#summary). */
export function subset(
  resource: FhirResource,
  summary: Summary | undefined,
  elements: string[] | undefined,
  definitions: ResourceDefinitions,
): FhirResource {
  const type = resource.resourceType;
  if (summary && summary !== 'false' && summary !== 'count') {
    let keep: Set<string>;
    if (summary === 'true') keep = new Set(definitions.summaryElements(type));
    else if (summary === 'text') keep = new Set([...definitions.mandatoryElements(type), 'text']);
    else keep = new Set(Object.keys(resource).filter((k) => k !== 'text'));
    const out: FhirResource = { resourceType: type };
    for (const [key, value] of Object.entries(resource)) {
      if (key === 'resourceType') continue;
      if (keepsKey(key.startsWith('_') ? key.slice(1) : key, keep)) out[key] = value;
    }
    return tagged(out);
  }
  if (elements) {
    const keep = new Set([...elements, ...definitions.mandatoryElements(type)]);
    const out: FhirResource = { resourceType: type };
    for (const [key, value] of Object.entries(resource)) {
      if (key === 'resourceType') continue;
      if (keepsKey(key.startsWith('_') ? key.slice(1) : key, keep)) out[key] = value;
    }
    return tagged(out);
  }
  return resource;
}
