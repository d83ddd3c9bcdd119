/**
 * The little of FHIR R4's data model the checks need: loose resource shapes, and helpers to read
 * Bundles (ids, links, versions). Written from the spec, independent of any server's code.
 */

/** Any resource. Elements other than the common ones are read loosely. */
export interface Resource {
  resourceType: string;
  id?: string;
  meta?: { versionId?: string; lastUpdated?: string; tag?: Coding[]; [key: string]: unknown };
  [key: string]: any;
}

export interface Coding {
  system?: string;
  code?: string;
  display?: string;
}

export interface Identifier {
  system: string;
  value: string;
}

export interface BundleEntry {
  fullUrl?: string;
  resource?: Resource;
  search?: { mode?: string };
  request?: { method?: string; url?: string };
  response?: { status?: string; etag?: string; lastModified?: string };
}

export interface Bundle extends Resource {
  resourceType: 'Bundle';
  type?: string;
  total?: number;
  link?: { relation: string; url: string }[];
  entry?: BundleEntry[];
}

export interface OperationOutcome extends Resource {
  resourceType: 'OperationOutcome';
  issue?: { severity?: string; code?: string; diagnostics?: string }[];
}

/** http://hl7.org/fhir/R4/search.html#summary — the security label on subsetted resources. */
export const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' };

export const UCUM = 'http://unitsofmeasure.org';

/** The url of a Bundle link (`next`, `self`, …), if present. */
export function link(bundle: Bundle, relation: string): string | undefined {
  return bundle.link?.find((l) => l.relation === relation)?.url;
}

/** The entries of a searchset that are matches (not `include`d resources nor outcome entries). */
export function matches(bundle: Bundle): BundleEntry[] {
  return (bundle.entry ?? []).filter(
    (e) => e.search?.mode === 'match' || (e.search?.mode === undefined && e.resource?.resourceType !== 'OperationOutcome'),
  );
}

/** The logical id an entry is about: its resource's id, else the id in its fullUrl or request.url. */
export function entryId(entry: BundleEntry): string | undefined {
  if (entry.resource?.id) return entry.resource.id;
  for (const url of [entry.fullUrl, entry.request?.url]) {
    const m = url?.match(/(?:^|\/)[A-Z][A-Za-z]+\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/?]+)?(?:\?.*)?$/);
    if (m) return m[1];
  }
  return undefined;
}

/** The resource type an entry is about, from its resource or its fullUrl / request.url. */
export function entryType(entry: BundleEntry): string | undefined {
  if (entry.resource?.resourceType) return entry.resource.resourceType;
  for (const url of [entry.fullUrl, entry.request?.url]) {
    const m = url?.match(/(?:^|\/)([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}(?:\/_history\/[^/?]+)?(?:\?.*)?$/);
    if (m) return m[1];
  }
  return undefined;
}

/** The version id an entry carries: resource.meta.versionId, else from response.etag or a versioned url. */
export function entryVersion(entry: BundleEntry): string | undefined {
  if (entry.resource?.meta?.versionId) return entry.resource.meta.versionId;
  const etag = entry.response?.etag?.match(/^(?:W\/)?"([^"]+)"$/);
  if (etag) return etag[1];
  for (const url of [entry.fullUrl, entry.request?.url]) {
    const m = url?.match(/\/_history\/([^/?]+)/);
    if (m) return m[1];
  }
  return undefined;
}

/** True when `resource.meta.tag` carries the SUBSETTED label. */
export function isSubsetted(resource: Resource): boolean {
  return (resource.meta?.tag ?? []).some((t) => t.system === SUBSETTED.system && t.code === SUBSETTED.code);
}

/** The weak ETag for a version id, as http://hl7.org/fhir/R4/http.html#versioning writes it. */
export function etagFor(versionId: string): string {
  return `W/"${versionId}"`;
}

/** The version id inside an ETag header (weak or strong). */
export function versionFromEtag(etag: string | null | undefined): string | undefined {
  return etag?.trim().match(/^(?:W\/)?"([^"]*)"$/)?.[1];
}
