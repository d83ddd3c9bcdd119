/**
 * capabilities — http://hl7.org/fhir/R4/http.html#capabilities
 * GET [base]/metadata: a CapabilityStatement that lists exactly what works: every standard R4
 * resource type with the interactions implemented here, and the search parameters the search
 * engine supports for that type.
 */
import type { FhirRequest, FhirResponse } from '../request.ts';
import { supportedIncludes } from '../search/include.ts';
import type { FhirServices } from '../services.ts';
import { TOTAL_POLICY } from './search.ts';
import { TOPICS } from '../subscriptions/topics.ts';
import { websocketUrl } from '../subscriptions/websocket.ts';

export const SOFTWARE_VERSION = '0.1.0';

const TYPE_INTERACTIONS = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'];

const VELLUM_OPERATION = 'https://vellum.dev/fhir/OperationDefinition';

const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport';

/** Operations of one resource type, beside those of every type. */
const BULK_OPERATION = 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition';
const TYPE_OPERATIONS: Record<string, { name: string; definition: string }[]> = {
  Patient: [
    { name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' },
    { name: 'export', definition: `${BULK_OPERATION}/patient-export` },
  ],
  Group: [{ name: 'export', definition: `${BULK_OPERATION}/group-export` }],
  // Subscriptions R5 Backport IG (subscriptions/operations.ts).
  Subscription: [
    { name: 'status', definition: `${BACKPORT}/OperationDefinition/backport-subscription-status` },
    { name: 'events', definition: `${BACKPORT}/OperationDefinition/backport-subscription-events` },
    { name: 'get-ws-binding-token', definition: `${BACKPORT}/OperationDefinition/backport-subscription-get-ws-binding-token` },
  ],
};

/** The consent operations (operations/consent.ts), by resource type: listed when consent is enforced. */
const CONSENT_OPERATIONS: Record<string, string[]> = {
  Patient: ['register-wallet'],
  Consent: ['revocation-request', 'revoke-signed', 'grant-request', 'grant-signed'],
  ...Object.fromEntries(['Practitioner', 'PractitionerRole', 'Organization', 'RelatedPerson', 'Device'].map((type) => [type, ['approve', 'revoke-approval']])),
};

/** List the consent operations in a statement built by `buildCapabilityStatement` (consent is set up after it). */
export function addConsentOperations(statement: ReturnType<typeof buildCapabilityStatement>, model: 'opt-in' | 'opt-out' = 'opt-in'): void {
  for (const entry of statement.rest[0]!.resource) {
    for (const name of CONSENT_OPERATIONS[entry.type] ?? []) entry.operation.push({ name, definition: `${VELLUM_OPERATION}/${name}` });
    if (entry.type === 'Consent') {
      // What is enforced, in words a client can show (docs/consent.md has the decision table).
      (entry as Record<string, unknown>)['documentation'] =
        `Consents are enforced through the consent registry contract. Scope patient-privacy: enforced on every read path. ` +
        `Scope research: enforced for purpose of use HRESCH. Scopes treatment and adr: validated and stored, not enforced. ` +
        `Consent model: ${model} (${model === 'opt-out' ? 'approved actors may read for TREAT and ETREAT unless a Consent denies; every other purpose needs a permit' : 'no permitting Consent, no access'}). ` +
        `Status proposed is an access request the patient answers (active or rejected).`;
    }
  }
}

/** Build the CapabilityStatement once; it only changes with the code. */
export function buildCapabilityStatement(services: FhirServices, supportedParams: (type: string) => { name: string; type: string; definition?: string }[]) {
  const operations = [
    { name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' },
    // $verify works only when versions are anchored.
    ...(services.anchoring ? [{ name: 'verify', definition: `${VELLUM_OPERATION}/verify` }] : []),
  ];
  const resource = [...services.resourceTypes].sort().map((type) => ({
    type,
    profile: `http://hl7.org/fhir/StructureDefinition/${type}`,
    interaction: TYPE_INTERACTIONS.map((code) => ({ code })),
    versioning: 'versioned-update',
    readHistory: true,
    updateCreate: true,
    conditionalCreate: true,
    conditionalRead: 'full-support',
    conditionalUpdate: true,
    conditionalDelete: 'single',
    ...supportedIncludes(services.registry, type),
    searchParam: supportedParams(type),
    operation: [...operations, ...(TYPE_OPERATIONS[type] ?? [])],
    // The topics a topic-based Subscription can name (Subscriptions R5 Backport IG).
    ...(type === 'Subscription'
      ? {
          supportedProfile: [`${BACKPORT}/StructureDefinition/backport-subscription`],
          extension: TOPICS.map((topic) => ({ url: `${BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical`, valueCanonical: topic.url })),
        }
      : {}),
  }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-11-22',
    publisher: 'Vellum',
    kind: 'instance',
    // Bulk Data Access 2.0 (bulk/export.ts), topic-based subscriptions (subscriptions/).
    instantiates: ['http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data', `${BACKPORT}/CapabilityStatement/backport-subscription-server-r4`],
    software: { name: 'Vellum', version: SOFTWARE_VERSION },
    implementation: { description: 'Vellum FHIR R4 server', url: services.baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        // Where R4 websocket subscriptions bind (subscriptions/websocket.ts).
        extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket', valueUri: websocketUrl(services.baseUrl) }],
        resource,
        // POST [base] with a batch or transaction Bundle (interactions/bundle.ts); GET [base]?_type=….
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }, { code: 'history-system' }],
        documentation: TOTAL_POLICY,
        searchParam: [
          {
            name: '_total',
            type: 'token',
            documentation: 'accurate: count every match at each page request; estimate: the count when at most 10,000 match; none. Absent: total only when the whole result fits on the first page.',
          },
        ],
        operation: [...operations, { name: 'export', definition: `${BULK_OPERATION}/export` }],
      },
    ],
  };
}

export function capabilities(statement: Record<string, unknown>) {
  return async (_services: FhirServices, _request: FhirRequest): Promise<FhirResponse> => ({ status: 200, resource: statement });
}
