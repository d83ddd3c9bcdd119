/**
 * capabilities — http://hl7.org/fhir/R4/http.html#capabilities
 * GET [base]/metadata: a CapabilityStatement that lists exactly what works: every standard R4
 * resource type with the interactions implemented here, and the search parameters the search
 * engine supports for that type.
 */
import type { FhirRequest, FhirResponse } from '../request.ts';
import { supportedIncludes } from '../search/include.ts';
import type { FhirServices } from '../services.ts';

export const SOFTWARE_VERSION = '0.1.0';

const TYPE_INTERACTIONS = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'];

/** Build the CapabilityStatement once; it only changes with the code. */
export function buildCapabilityStatement(services: FhirServices, supportedParams: (type: string) => { name: string; type: string; definition?: string }[]) {
  const operations = [
    { name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' },
    // $verify works only when versions are anchored.
    ...(services.anchoring ? [{ name: 'verify', definition: 'https://vellum.dev/fhir/OperationDefinition/verify' }] : []),
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
    operation: operations,
  }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-11-22',
    publisher: 'Vellum',
    kind: 'instance',
    software: { name: 'Vellum', version: SOFTWARE_VERSION },
    implementation: { description: 'Vellum FHIR R4 server', url: services.baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        resource,
        // POST [base] with a batch or transaction Bundle (interactions/bundle.ts); GET [base]?_type=….
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }, { code: 'history-system' }],
        operation: operations,
      },
    ],
  };
}

export function capabilities(statement: Record<string, unknown>) {
  return async (_services: FhirServices, _request: FhirRequest): Promise<FhirResponse> => ({ status: 200, resource: statement });
}
