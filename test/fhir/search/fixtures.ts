/**
 * A small linked data set for the search tests (includes, chains, `_has`, composites, `:of-type`,
 * `_type`), written with known ids (update as create), so every expected result is known here.
 *
 *   org1 "Acme Health"  ◀── p1 Alpha Ann (MR 12345, DL 999, GP pr1) ◀── e1 ◀── o1 BP 120/80
 *   org2 "Beta Clinic"  ◀── p2 Beta Bob  (DL 12345)                 ◀── e2 ◀── o2 BP 150/95
 *                           p3 Gamma Gil (no organization)                       o3 1234-5 = 7 mg (p1)
 *   pr1 Smith                                                                    o4 1234-5 = 3 mg (p3)
 *                                                                                o5 BP 90/140 (p2, crossed)
 */
import type { TestServer } from '../../helpers/server.ts';

export const LOINC = 'http://loinc.org';
export const V2_0203 = 'http://terminology.hl7.org/CodeSystem/v2-0203';

const idType = (code: string) => ({ coding: [{ system: V2_0203, code }] });

const bp = (id: string, patient: string, encounter: string | undefined, systolic: number, diastolic: number) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { coding: [{ system: LOINC, code: '85354-9', display: 'Blood pressure panel' }] },
  subject: { reference: `Patient/${patient}` },
  ...(encounter ? { encounter: { reference: `Encounter/${encounter}` } } : {}),
  component: [
    { code: { coding: [{ system: LOINC, code: '8480-6' }] }, valueQuantity: { value: systolic, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' } },
    { code: { coding: [{ system: LOINC, code: '8462-4' }] }, valueQuantity: { value: diastolic, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' } },
  ],
});

const lab = (id: string, patient: string, value: number) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { coding: [{ system: LOINC, code: '1234-5' }] },
  subject: { reference: `Patient/${patient}` },
  valueQuantity: { value, unit: 'mg', system: 'http://unitsofmeasure.org', code: 'mg' },
});

export const FIXTURE: Record<string, unknown>[] = [
  { resourceType: 'Organization', id: 'org1', name: 'Acme Health' },
  { resourceType: 'Organization', id: 'org2', name: 'Beta Clinic' },
  { resourceType: 'Practitioner', id: 'pr1', name: [{ family: 'Smith', given: ['Sam'] }] },
  {
    resourceType: 'Patient',
    id: 'p1',
    name: [{ family: 'Alpha', given: ['Ann'] }],
    identifier: [
      { type: idType('MR'), system: 'urn:mrn', value: '12345' },
      { type: idType('DL'), system: 'urn:dl', value: '999' },
    ],
    managingOrganization: { reference: 'Organization/org1' },
    generalPractitioner: [{ reference: 'Practitioner/pr1' }],
  },
  {
    resourceType: 'Patient',
    id: 'p2',
    name: [{ family: 'Beta', given: ['Bob'] }],
    identifier: [{ type: idType('DL'), system: 'urn:dl', value: '12345' }],
    managingOrganization: { reference: 'Organization/org2' },
  },
  { resourceType: 'Patient', id: 'p3', name: [{ family: 'Gamma', given: ['Gil'] }] },
  { resourceType: 'Encounter', id: 'e1', status: 'finished', class: { code: 'AMB' }, subject: { reference: 'Patient/p1' } },
  { resourceType: 'Encounter', id: 'e2', status: 'finished', class: { code: 'AMB' }, subject: { reference: 'Patient/p2' } },
  bp('o1', 'p1', 'e1', 120, 80),
  bp('o2', 'p2', 'e2', 150, 95),
  lab('o3', 'p1', 7),
  lab('o4', 'p3', 3),
  // Systolic 90, diastolic 140: "a component 8480-6 and a component value > 100" holds across
  // components, "component 8480-6 with value > 100" does not.
  bp('o5', 'p2', undefined, 90, 140),
];

/** Write the fixture (PUT with known ids). */
export async function loadFixture(s: TestServer): Promise<void> {
  for (const resource of FIXTURE) {
    const res = await s.fhir('PUT', `${resource['resourceType']}/${resource['id']}`, resource);
    if (res.status !== 201 && res.status !== 200) throw new Error(`fixture ${resource['id']}: ${res.status} ${res.text}`);
  }
}

type Bundle = { entry?: { resource: { resourceType: string; id: string }; search?: { mode: string } }[] };

/** `Type/id` of the entries of `mode`, sorted. */
export function ids(bundle: Bundle, mode: 'match' | 'include' | 'outcome' = 'match'): string[] {
  return (bundle.entry ?? [])
    .filter((e) => e.search?.mode === mode)
    .map((e) => `${e.resource.resourceType}/${e.resource.id}`)
    .sort();
}

/** The OperationOutcome entries (search.mode = outcome) of a searchset. */
export function outcomeEntries(bundle: Bundle): any[] {
  return (bundle.entry ?? []).filter((e) => e.search?.mode === 'outcome').map((e) => e.resource);
}
