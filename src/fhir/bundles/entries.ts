/**
 * The entries of a batch or transaction Bundle, checked and parsed before anything runs:
 * http://hl7.org/fhir/R4/http.html#transaction and http://hl7.org/fhir/R4/bundle.html (bdl-7:
 * fullUrls are unique). Pure: no storage access. Each entry parses to a `BundleEntry` or to the
 * FhirError that answers it (a batch answers that entry alone, a transaction fails whole).
 */
import { FhirError, fhirError } from '../errors.ts';
import { hasInexactNumbers, parseExact } from '../json.ts';
import type { FhirResource } from '../request.ts';

export type EntryMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

const METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);

/** One parsed `Bundle.entry`. */
export interface BundleEntry {
  /** Position in `Bundle.entry` (0-based, as in `Bundle.entry[3]`). */
  index: number;
  method: EntryMethod;
  /** The URL's path segments relative to the FHIR base (`Patient/123` → ['Patient', '123']). */
  segments: string[];
  query: [string, string][];
  fullUrl?: string;
  /** The entry's resource (plain numbers), for POST and PUT; the patch document for PATCH. */
  resource?: FhirResource;
  /** The same with exact decimals (json.ts), when it differs. */
  exact?: FhirResource;
  /** `Bundle.entry.request` conditions, as the headers of the single interactions. */
  headers: Record<string, string | undefined>;
}

/** The processing rank of a method (http://hl7.org/fhir/R4/http.html#trules): DELETE, POST, PUT/PATCH, GET/HEAD. */
export function methodRank(method: EntryMethod): number {
  switch (method) {
    case 'DELETE':
      return 0;
    case 'POST':
      return 1;
    case 'PUT':
    case 'PATCH':
      return 2;
    default:
      return 3;
  }
}

/** Name the entry in an error: every issue gets `Bundle.entry[i]` (and its own path inside the resource). */
export function atEntry(error: FhirError, index: number): FhirError {
  const where = `Bundle.entry[${index}]`;
  return new FhirError(
    error.status,
    error.issues.map((issue) => ({
      ...issue,
      expression: [
        where,
        ...(issue.expression ?? []).map((e) => (/^[A-Z][A-Za-z]*(\.|$)/.test(e) ? `${where}.resource${e.replace(/^[A-Z][A-Za-z]*/, '')}` : e)),
      ],
    })),
    error.headers,
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optionalString(request: Record<string, unknown>, name: string): string | undefined {
  const value = request[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw fhirError(400, 'structure', 'VLM_BUNDLE_ENTRY_INVALID', `request.${name} must be a string`);
  return value;
}

/**
 * Split `request.url` into path segments and query, relative to the FHIR base. Absolute URLs are
 * accepted only when they start with this server's base. Raises 400 VLM_BUNDLE_BAD_URL.
 */
export function splitUrl(url: string, baseUrl: string): { segments: string[]; query: [string, string][] } {
  let rest = url.trim();
  if (rest.startsWith(`${baseUrl}/`) || rest === baseUrl) rest = rest.slice(baseUrl.length);
  else if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(rest)) {
    throw fhirError(400, 'not-supported', 'VLM_BUNDLE_BAD_URL', 'request.url must be relative to this server\'s base');
  }
  rest = rest.replace(/^\/+/, '');
  const mark = rest.indexOf('?');
  // A trailing slash (`Patient/`) is accepted as on the HTTP interface (`POST /fhir/Patient/`).
  const path = (mark < 0 ? rest : rest.slice(0, mark)).replace(/\/+$/, '');
  let query: [string, string][] = [];
  if (mark >= 0) {
    try {
      query = [...new URLSearchParams(rest.slice(mark + 1))];
    } catch {
      throw fhirError(400, 'invalid', 'VLM_BUNDLE_BAD_URL', 'The query of request.url cannot be decoded');
    }
  }
  const segments = path === '' ? [] : path.split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..')) {
    throw fhirError(400, 'invalid', 'VLM_BUNDLE_BAD_URL', 'request.url has an empty or relative path segment');
  }
  let decoded: string[];
  try {
    decoded = segments.map((s) => decodeURIComponent(s));
  } catch {
    throw fhirError(400, 'invalid', 'VLM_BUNDLE_BAD_URL', 'request.url cannot be decoded');
  }
  return { segments: decoded, query };
}

/** The JSON Patch document of a PATCH entry: a Binary of `application/json-patch+json` (http://hl7.org/fhir/R4/http.html#patch). */
function patchDocument(resource: unknown): { plain: FhirResource; exact?: FhirResource } {
  if (
    !isObject(resource) ||
    resource.resourceType !== 'Binary' ||
    typeof resource.contentType !== 'string' ||
    resource.contentType.split(';')[0]!.trim().toLowerCase() !== 'application/json-patch+json' ||
    typeof resource.data !== 'string'
  ) {
    throw fhirError(
      400,
      'not-supported',
      'VLM_BUNDLE_PATCH_FORMAT',
      'A PATCH entry carries its JSON Patch as a Binary resource of contentType application/json-patch+json',
    );
  }
  let text: string;
  let plain: unknown;
  try {
    text = Buffer.from(resource.data, 'base64').toString('utf8');
    plain = JSON.parse(text);
  } catch {
    throw fhirError(400, 'structure', 'VLM_FHIR_JSON_SYNTAX', 'The Binary data of a PATCH entry is not JSON');
  }
  let exact: unknown;
  try {
    exact = parseExact(text);
  } catch {
    exact = undefined;
  }
  // A patch document is an array; it travels here typed as a resource to share the reference walk.
  return { plain: plain as FhirResource, ...(exact !== undefined && hasInexactNumbers(exact) ? { exact: exact as FhirResource } : {}) };
}

/**
 * Parse one entry (`exact` is the same entry from the exact parse of the body, when there is one).
 * Raises 400 VLM_BUNDLE_ENTRY_INVALID, VLM_BUNDLE_REQUEST_MISSING, VLM_BUNDLE_METHOD,
 * VLM_BUNDLE_BAD_URL, VLM_BUNDLE_RESOURCE_MISSING, VLM_BUNDLE_PATCH_FORMAT, VLM_FHIR_JSON_SYNTAX.
 */
export function parseEntry(raw: unknown, exactRaw: unknown, index: number, baseUrl: string): BundleEntry {
  if (!isObject(raw)) throw fhirError(400, 'structure', 'VLM_BUNDLE_ENTRY_INVALID', 'A Bundle entry must be a JSON object');
  const request = raw.request;
  if (request === undefined) throw fhirError(400, 'required', 'VLM_BUNDLE_REQUEST_MISSING', 'Every entry of a batch or transaction needs a request');
  if (!isObject(request)) throw fhirError(400, 'structure', 'VLM_BUNDLE_ENTRY_INVALID', 'entry.request must be an object');
  const method = request.method;
  if (typeof method !== 'string' || !METHODS.has(method)) {
    throw fhirError(400, 'not-supported', 'VLM_BUNDLE_METHOD', 'request.method must be GET, HEAD, POST, PUT, PATCH or DELETE');
  }
  const url = request.url;
  if (typeof url !== 'string' || url.trim() === '') throw fhirError(400, 'required', 'VLM_BUNDLE_BAD_URL', 'request.url is required');
  const fullUrl = raw.fullUrl;
  if (fullUrl !== undefined && (typeof fullUrl !== 'string' || fullUrl === '')) {
    throw fhirError(400, 'structure', 'VLM_BUNDLE_ENTRY_INVALID', 'entry.fullUrl must be a non-empty string');
  }
  const headers: Record<string, string | undefined> = {
    'if-none-exist': optionalString(request, 'ifNoneExist'),
    'if-match': optionalString(request, 'ifMatch'),
    'if-none-match': optionalString(request, 'ifNoneMatch'),
    'if-modified-since': optionalString(request, 'ifModifiedSince'),
  };
  const { segments, query } = splitUrl(url, baseUrl);
  const entry: BundleEntry = { index, method: method as EntryMethod, segments, query, headers, ...(fullUrl ? { fullUrl } : {}) };
  const resource = raw.resource;
  if (method === 'POST' || method === 'PUT') {
    if (resource === undefined) throw fhirError(400, 'required', 'VLM_BUNDLE_RESOURCE_MISSING', `A ${method} entry needs a resource`);
    if (!isObject(resource)) throw fhirError(400, 'structure', 'VLM_FHIR_BODY_NOT_RESOURCE', 'entry.resource must be a JSON object');
    entry.resource = resource as FhirResource;
    const exact = isObject(exactRaw) ? exactRaw.resource : undefined;
    if (isObject(exact) && hasInexactNumbers(exact)) entry.exact = exact as FhirResource;
  } else if (method === 'PATCH') {
    if (resource === undefined) throw fhirError(400, 'required', 'VLM_BUNDLE_RESOURCE_MISSING', 'A PATCH entry needs its patch as a Binary resource');
    const patch = patchDocument(resource);
    entry.resource = patch.plain;
    if (patch.exact) entry.exact = patch.exact;
  }
  return entry;
}

/** Raise 400 VLM_BUNDLE_DUPLICATE_FULLURL when two entries share a fullUrl (bdl-7). */
export function checkFullUrls(entries: unknown[]): void {
  const seen = new Map<string, number>();
  entries.forEach((entry, index) => {
    const fullUrl = isObject(entry) ? entry.fullUrl : undefined;
    if (typeof fullUrl !== 'string') return;
    const first = seen.get(fullUrl);
    if (first !== undefined) {
      throw fhirError(400, 'invalid', 'VLM_BUNDLE_DUPLICATE_FULLURL', `Entries ${first} and ${index} have the same fullUrl`, [
        `Bundle.entry[${first}]`,
        `Bundle.entry[${index}]`,
      ]);
    }
    seen.set(fullUrl, index);
  });
}
