import { createValidator } from './src/fhir/validation/validator.ts';
import { createExtractor } from './src/fhir/search/extract.ts';
import { createSearchRegistry } from './src/fhir/search/registry.ts';
import { R4_RESOURCE_TYPES } from './src/fhir/validation/resource-types.ts';
const v = createValidator();
const ex = createExtractor(createSearchRegistry(R4_RESOURCE_TYPES), { baseUrl: 'http://x/fhir' });
const patient = { resourceType: 'Patient', id: 'a', meta: { versionId: '1', lastUpdated: '2026-01-01T00:00:00Z' }, identifier: [{ system: 'urn:fhir-load:run', value: 'x-1' }], active: true, name: [{ use: 'official', family: 'Smith', given: ['Alex', 'Sam'] }], gender: 'male', birthDate: '1970-01-02', address: [{ use: 'home', line: ['1 Main St'], city: 'Salem', postalCode: '12345', country: 'US' }] };
const obs = { resourceType: 'Observation', id: 'b', meta: { versionId: '1', lastUpdated: '2026-01-01T00:00:00Z' }, status: 'final', category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs', display: 'Vital Signs' }] }], code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }], text: 'Heart rate' }, subject: { reference: 'Patient/a' }, effectiveDateTime: '2021-02-03T04:05:00Z', valueQuantity: { value: 70, unit: 'beats/minute', system: 'http://unitsofmeasure.org', code: '/min' } };
for (const [name, r] of [['Patient', patient], ['Observation', obs]] as const) {
  for (let i = 0; i < 300; i++) { v.validate(r, name); ex.extract(r); }
  let t = performance.now(); for (let i = 0; i < 2000; i++) v.validate(r, name); const tv = (performance.now() - t) / 2000 * 1000;
  t = performance.now(); for (let i = 0; i < 2000; i++) ex.extract(r); const te = (performance.now() - t) / 2000 * 1000;
  console.log(name, 'validate µs', tv.toFixed(0), 'extract µs', te.toFixed(0), 'rows', ex.extract(r).length);
}
