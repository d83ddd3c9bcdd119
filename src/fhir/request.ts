/**
 * The plain request and response that interactions deal in. Interactions do not know the web
 * framework: the Fastify plugin (`http.ts`) builds a FhirRequest and writes a FhirResponse.
 */
import type { Restriction } from './access.ts';
import type { Principal } from './auth/verify.ts';
import type { ConsentDecisionEntry, ConsentGate } from './consent/service.ts';

export type FhirResource = { resourceType: string; id?: string; meta?: FhirMeta; [key: string]: unknown };

export interface FhirMeta {
  versionId?: string;
  lastUpdated?: string;
  tag?: { system?: string; code?: string; display?: string }[];
  [key: string]: unknown;
}

export interface FhirRequest {
  method: string;
  resourceType?: string;
  id?: string;
  versionId?: string;
  /** Query parameters in request order (names repeat for AND semantics). */
  query: [string, string][];
  /** Lower-case header names. */
  headers: Record<string, string | undefined>;
  body?: unknown;
  /**
   * The JSON body with decimals kept exactly (see json.ts), only when that differs from `body`
   * (`5.40`, 18-digit values): what a write stores. `body` is what is checked and indexed.
   */
  exactBody?: unknown;
  /** Public FHIR base URL, no trailing slash. */
  baseUrl: string;
  /** Content type of the body (media type only, lower-case), when there is one. */
  contentType?: string;
  signal?: AbortSignal;
  /** Compartment search `[type]/[id]/[compartmentType]`: the type searched within the compartment. */
  compartmentType?: string;
  /** The caller, when authorization is on (set from the bearer token by http.ts). */
  principal?: Principal;
  /** The patient compartment the request is confined to (set by access.ts `guard`). */
  restriction?: Restriction;
  /** The consent gate of a consent-gated caller (set by access.ts `guard`). */
  consent?: ConsentGate;
  /** Consent decisions made for this request, for its AuditEvent (shared by the request's copies). */
  consentLog?: ConsentDecisionEntry[];
}

export interface FhirResponse {
  status: number;
  resource?: Record<string, unknown>;
  headers?: Record<string, string>;
  /** When true the body is sent as-is, without _summary/_elements. */
  raw?: boolean;
  /** A body that is not a FHIR resource (a Bulk Data manifest, an ndjson file), sent as it is. */
  body?: { type: string; data: Buffer };
}

/** First value of a query parameter. */
export function queryValue(request: FhirRequest, name: string): string | undefined {
  return request.query.find(([n]) => n === name)?.[1];
}
