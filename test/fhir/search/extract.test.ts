/**
 * Search row extraction from official R4 examples (shared/corpora/r4-examples): exact rows
 * for a few parameters, every value type, and a run over all 809 examples with timings.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { createExtractor, searchDateRange, splitReference } from '../../../src/fhir/search/extract.ts';
import { createSearchRegistry, supportedSearchParams } from '../../../src/fhir/search/registry.ts';
import type { FhirResource } from '../../../src/fhir/request.ts';
import { R4_RESOURCE_TYPES } from '../../../src/fhir/validation/resource-types.ts';
import { DATE_MAX, DATE_MIN, type SearchRow } from '../../../src/storage/search-types.ts';

const EXAMPLES = path.resolve(import.meta.dirname, '../../../../shared/corpora/r4-examples');
const BASE = 'https://vellum.example/fhir';

const registry = createSearchRegistry(R4_RESOURCE_TYPES);
const extractor = createExtractor(registry, { baseUrl: BASE });

function example(file: string): FhirResource {
  return JSON.parse(fs.readFileSync(path.join(EXAMPLES, file), 'utf8')) as FhirResource;
}

function rowsOf(rows: SearchRow[], param: string): SearchRow[] {
  return rows.filter((r) => r.param === param);
}

const day = (d: string) => ({ low: Date.parse(`${d}T00:00:00.000Z`), high: Date.parse(`${d}T23:59:59.999Z`) });

t.test('registry: exactly the official R4 SearchParameters (and Vellum own), narrowed per type', async (t) => {
  const official = JSON.parse(fs.readFileSync(path.resolve(EXAMPLES, '../r4-definitions/search-parameters.json'), 'utf8')) as {
    entry: { resource: { url: string; code: string; base: string[] } }[];
  };
  const expected = new Set<string>();
  for (const { resource } of official.entry) {
    for (const base of resource.base) {
      const types = base === 'Resource' || base === 'DomainResource' ? R4_RESOURCE_TYPES : [base];
      for (const type of types) expected.add(`${type} ${resource.code} ${resource.url}`);
    }
  }
  const actual = new Set<string>();
  for (const type of R4_RESOURCE_TYPES) for (const p of registry.forType(type)) actual.add(`${type} ${p.code} ${p.url}`);
  t.same(
    [...actual].filter((x) => !expected.has(x)),
    ['Observation interpretation https://vellum.dev/fhir/SearchParameter/Observation-interpretation'],
    "no parameter beyond R4 but Vellum's Observation interpretation (the critical-result topic queries it)",
  );
  const interpretation = extractor.extract({
    resourceType: 'Observation',
    status: 'final',
    code: { text: 'heart rate' },
    interpretation: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: 'HH' }] }],
  });
  t.ok(
    interpretation.some((r) => r.kind === 'token' && r.param === 'interpretation' && r.code === 'HH'),
    'Observation.interpretation is indexed',
  );
  t.same([...expected].filter((x) => !actual.has(x)), [], 'every R4 parameter');

  const patient = registry.get('Observation', 'patient')!;
  t.same(patient.parts, [{ expression: 'Observation.subject', resolveIs: 'Patient' }]);
  t.same(patient.targets, ['Patient']);
  t.equal(registry.get('InsurancePlan', 'name')!.expression, 'InsurancePlan.name | InsurancePlan.alias', 'relative R4 expression rooted');
  t.equal(registry.get('Patient', '_id')!.column, 'id');
  t.equal(registry.get('Patient', '_lastUpdated')!.column, 'lastUpdated');
  t.equal(registry.get(null, '_tag')!.kind, 'token');
  t.equal(registry.get(null, 'name'), undefined);
  const supported = supportedSearchParams(registry, 'Patient').map((p) => p.name);
  t.ok(supported.includes('_id') && supported.includes('name') && supported.includes('_lastUpdated'));
  t.notOk(supported.includes('_text') || supported.includes('_content') || supported.includes('_query'));
});

t.test('Patient-example', async (t) => {
  const rows = extractor.extract(example('Patient/Patient-example.json'));
  t.same(rowsOf(rows, 'family'), [
    { kind: 'string', param: 'family', norm: 'chalmers', exact: 'Chalmers' },
    { kind: 'string', param: 'family', norm: 'windsor', exact: 'Windsor' },
  ]);
  t.same(
    rowsOf(rows, 'given').map((r) => (r.kind === 'string' ? r.exact : '')),
    ['Peter', 'James', 'Jim'],
    'given names, deduplicated',
  );
  t.same(rowsOf(rows, 'gender'), [{ kind: 'token', param: 'gender', system: null, code: 'male', text: null }]);
  t.same(rowsOf(rows, 'identifier'), [
    { kind: 'token', param: 'identifier', system: 'urn:oid:1.2.36.146.595.217.0.1', code: '12345', text: null },
  ]);
  t.same(rowsOf(rows, 'birthdate'), [{ kind: 'date', param: 'birthdate', ...day('1974-12-25') }]);
  t.same(rowsOf(rows, 'active'), [{ kind: 'token', param: 'active', system: null, code: 'true', text: null }]);
  t.same(rowsOf(rows, 'deceased'), [{ kind: 'token', param: 'deceased', system: null, code: 'false', text: null }]);
  t.same(rowsOf(rows, 'organization'), [
    { kind: 'reference', param: 'organization', targetType: 'Organization', targetId: '1', url: null },
  ]);
  t.same(rowsOf(rows, 'address-city'), [{ kind: 'string', param: 'address-city', norm: 'pleasantville', exact: 'PleasantVille' }]);
  t.same(
    rowsOf(rows, 'phone').map((r) => (r.kind === 'token' ? r.code : '')),
    ['(03) 5555 6473', '(03) 3410 5613', '(03) 5555 8834'],
  );
  t.same(rowsOf(rows, '_id'), [], '_id is a column, not a row');
  t.same(rowsOf(rows, '_lastUpdated'), [], '_lastUpdated is a column, not a row');
});

t.test('accents and case: RelatedPerson-benedicte', async (t) => {
  const rows = extractor.extract(example('RelatedPerson/RelatedPerson-benedicte.json'));
  t.same(rowsOf(rows, 'name'), [
    { kind: 'string', param: 'name', norm: 'du marche', exact: 'du Marché' },
    { kind: 'string', param: 'name', norm: 'benedicte', exact: 'Bénédicte' },
  ]);
  t.same(rowsOf(rows, 'identifier'), [
    { kind: 'token', param: 'identifier', system: 'urn:oid:1.2.250.1.61', code: '272117510400399', text: 'insee' },
  ]);
});

t.test('Observation-example: CodeableConcept, Quantity, dateTime, references', async (t) => {
  const rows = extractor.extract(example('Observation/Observation-example.json'));
  t.same(rowsOf(rows, 'code'), [
    { kind: 'token', param: 'code', system: 'http://loinc.org', code: '29463-7', text: 'body weight' },
    { kind: 'token', param: 'code', system: 'http://loinc.org', code: '3141-9', text: 'body weight measured' },
    { kind: 'token', param: 'code', system: 'http://snomed.info/sct', code: '27113001', text: 'body weight' },
    { kind: 'token', param: 'code', system: 'http://acme.org/devices/clinical-codes', code: 'body-weight', text: 'body weight' },
  ]);
  t.same(rowsOf(rows, 'value-quantity'), [
    { kind: 'quantity', param: 'value-quantity', value: 185, system: 'http://unitsofmeasure.org', code: '[lb_av]', unit: 'lbs' },
  ]);
  t.same(rowsOf(rows, 'date'), [{ kind: 'date', param: 'date', ...day('2016-03-28') }]);
  t.same(rowsOf(rows, 'subject'), [{ kind: 'reference', param: 'subject', targetType: 'Patient', targetId: 'example', url: null }]);
  t.same(rowsOf(rows, 'patient'), [{ kind: 'reference', param: 'patient', targetType: 'Patient', targetId: 'example', url: null }]);
  t.same(rowsOf(rows, 'status'), [{ kind: 'token', param: 'status', system: null, code: 'final', text: null }]);
});

t.test('Observation with a Group subject has no patient row (resolve() is Patient)', async (t) => {
  const rows = extractor.extract(example('Observation/Observation-herd1.json'));
  t.same(rowsOf(rows, 'subject'), [{ kind: 'reference', param: 'subject', targetType: 'Group', targetId: 'herd1', url: null }]);
  t.same(rowsOf(rows, 'patient'), []);
});

t.test('Observation with a CodeableConcept text and a Period', async (t) => {
  const f202 = extractor.extract(example('Observation/Observation-f202.json'));
  t.ok(rowsOf(f202, 'code').some((r) => r.kind === 'token' && r.code === null && r.text === 'temperature'), 'text-only row');
  const f002 = extractor.extract(example('Observation/Observation-f002.json'));
  t.same(rowsOf(f002, 'date'), [
    {
      kind: 'date',
      param: 'date',
      low: Date.parse('2013-04-02T09:30:10.000Z'),
      high: Date.parse('2013-04-05T09:30:10.999Z'),
    },
  ]);
  const f001 = extractor.extract(example('Observation/Observation-f001.json'));
  t.same(rowsOf(f001, 'date'), [{ kind: 'date', param: 'date', low: Date.parse('2013-04-02T08:30:10.000Z'), high: DATE_MAX }], 'open end');
});

t.test('MedicationRequest: medication as CodeableConcept or Reference', async (t) => {
  const cc = extractor.extract(example('MedicationRequest/MedicationRequest-medrx0308.json'));
  t.same(rowsOf(cc, 'code'), [
    {
      kind: 'token',
      param: 'code',
      system: 'http://www.nlm.nih.gov/research/umls/rxnorm',
      code: '856907',
      text: 'vicodin 5/500 oral tablet',
    },
  ]);
  t.same(rowsOf(cc, 'medication'), []);
  t.same(rowsOf(cc, 'authoredon'), [{ kind: 'date', param: 'authoredon', ...day('2015-01-15') }]);
  t.same(rowsOf(cc, 'intent'), [{ kind: 'token', param: 'intent', system: null, code: 'order', text: null }]);
  const ref = extractor.extract(example('MedicationRequest/MedicationRequest-medrx002.json'));
  t.same(rowsOf(ref, 'medication'), [
    { kind: 'reference', param: 'medication', targetType: 'Medication', targetId: 'med0316', url: null },
  ]);
  t.same(rowsOf(ref, 'code'), []);
});

t.test('Encounter-home: Period with a zone, Coding, contained reference skipped', async (t) => {
  const rows = extractor.extract(example('Encounter/Encounter-home.json'));
  t.same(rowsOf(rows, 'date'), [
    { kind: 'date', param: 'date', low: Date.parse('2015-01-17T06:00:00.000Z'), high: Date.parse('2015-01-17T06:30:00.999Z') },
  ]);
  t.same(rowsOf(rows, 'class'), [
    { kind: 'token', param: 'class', system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'HH', text: 'home health' },
  ]);
  t.same(rowsOf(rows, 'location'), [], '#home is contained');
  t.same(rowsOf(rows, 'practitioner'), [
    { kind: 'reference', param: 'practitioner', targetType: 'Practitioner', targetId: 'example', url: null },
  ]);
});

t.test('number, uri, external references', async (t) => {
  const risk = extractor.extract(example('RiskAssessment/RiskAssessment-cardiac.json'));
  t.same(rowsOf(risk, 'probability'), [{ kind: 'number', param: 'probability', value: 0.02 }]);
  const vs = extractor.extract(example('ValueSet/ValueSet-example-filter.json'));
  t.same(rowsOf(vs, 'url'), [{ kind: 'uri', param: 'url', value: 'http://hl7.org/fhir/ValueSet/example-filter' }]);
  const person = extractor.extract(example('Person/Person-pp.json'));
  t.same(rowsOf(person, 'organization'), [
    { kind: 'reference', param: 'organization', targetType: null, targetId: null, url: 'http://www.goodhealth.com/Organization/12' },
  ]);
  t.same(rowsOf(person, 'patient'), [
    { kind: 'reference', param: 'patient', targetType: null, targetId: null, url: 'http://www.goodhealth.com/Patient/98574' },
    { kind: 'reference', param: 'patient', targetType: null, targetId: null, url: 'http://www.acme-medical.com/Patient/ab34d' },
  ]);
});

t.test('synthetic values: base URL, urn, history, Money, Range, Timing, zone-less dateTime, meta', async (t) => {
  const obs = extractor.extract({
    resourceType: 'Observation',
    meta: { tag: [{ system: 'urn:t', code: 'x', display: 'Ex' }], profile: ['http://p/1'], security: [{ code: 'R' }] },
    subject: { reference: `${BASE}/Patient/abc` },
    encounter: { reference: 'Encounter/e1/_history/3' },
    focus: [{ reference: 'urn:uuid:0b5a1a6e-0000-4000-8000-000000000000' }],
    effectiveDateTime: '2020-05-01T10:00:00',
  });
  t.same(rowsOf(obs, 'patient'), [{ kind: 'reference', param: 'patient', targetType: 'Patient', targetId: 'abc', url: null }]);
  t.same(rowsOf(obs, 'encounter'), [{ kind: 'reference', param: 'encounter', targetType: 'Encounter', targetId: 'e1', url: null }]);
  t.same(rowsOf(obs, 'focus'), [
    { kind: 'reference', param: 'focus', targetType: null, targetId: null, url: 'urn:uuid:0b5a1a6e-0000-4000-8000-000000000000' },
  ]);
  t.same(rowsOf(obs, 'date'), [
    { kind: 'date', param: 'date', low: Date.parse('2020-05-01T10:00:00.000Z'), high: Date.parse('2020-05-01T10:00:00.999Z') },
  ]);
  t.same(rowsOf(obs, '_tag'), [{ kind: 'token', param: '_tag', system: 'urn:t', code: 'x', text: 'ex' }]);
  t.same(rowsOf(obs, '_profile'), [{ kind: 'uri', param: '_profile', value: 'http://p/1' }]);
  t.same(rowsOf(obs, '_security'), [{ kind: 'token', param: '_security', system: null, code: 'R', text: null }]);

  const invoice = extractor.extract({ resourceType: 'Invoice', totalGross: { value: 10.5, currency: 'EUR' } });
  t.same(rowsOf(invoice, 'totalgross'), [
    { kind: 'quantity', param: 'totalgross', value: 10.5, system: 'urn:iso:std:iso:4217', code: 'EUR', unit: 'EUR' },
  ]);

  const condition = extractor.extract({
    resourceType: 'Condition',
    onsetRange: { low: { value: 2, unit: 'a' }, high: { value: 4, unit: 'a' } },
  });
  t.same(rowsOf(condition, 'onset-age'), [
    { kind: 'quantity', param: 'onset-age', value: 2, system: null, code: 'a', unit: 'a' },
    { kind: 'quantity', param: 'onset-age', value: 4, system: null, code: 'a', unit: 'a' },
  ]);

  const carePlan = extractor.extract({
    resourceType: 'CarePlan',
    activity: [{ detail: { status: 'scheduled', scheduledTiming: { event: ['2021-02-03'], repeat: { boundsPeriod: { start: '2021-01-01' } } } } }],
  });
  t.same(rowsOf(carePlan, 'activity-date'), [
    { kind: 'date', param: 'activity-date', ...day('2021-02-03') },
    { kind: 'date', param: 'activity-date', low: Date.parse('2021-01-01T00:00:00.000Z'), high: DATE_MAX },
  ]);
  const openStart = extractor.extract({ resourceType: 'Encounter', period: { end: '2020' } });
  t.same(rowsOf(openStart, 'date'), [{ kind: 'date', param: 'date', low: DATE_MIN, high: Date.parse('2020-12-31T23:59:59.999Z') }]);
});

t.test('helpers', async (t) => {
  t.same(splitReference('Patient/1', BASE), { type: 'Patient', id: '1' });
  t.same(splitReference(`${BASE}/Patient/1/_history/2`, BASE), { type: 'Patient', id: '1' });
  t.same(splitReference('http://other/fhir/Patient/1', BASE), { url: 'http://other/fhir/Patient/1', type: 'Patient' });
  t.equal(splitReference('#contained', BASE), undefined);
  t.same(searchDateRange('2020'), { low: Date.parse('2020-01-01T00:00:00.000Z'), high: Date.parse('2020-12-31T23:59:59.999Z') });
  t.equal(searchDateRange('2020-13'), undefined);
});

t.test('all 809 official examples extract without throwing (timings printed)', async (t) => {
  const all: FhirResource[] = [];
  for (const dir of fs.readdirSync(EXAMPLES)) {
    const folder = path.join(EXAMPLES, dir);
    if (!fs.statSync(folder).isDirectory()) continue;
    for (const file of fs.readdirSync(folder)) all.push(JSON.parse(fs.readFileSync(path.join(folder, file), 'utf8')) as FhirResource);
  }
  t.equal(all.length, 809);
  const fresh = createExtractor(registry, { baseUrl: BASE });
  let rows = 0;
  const cold = performance.now();
  for (const resource of all) rows += fresh.extract(resource).length;
  t.comment(`first pass over ${all.length} examples (compiles expressions per type): ${Math.round(performance.now() - cold)} ms, ${rows} rows`);
  t.ok(rows > 5000);

  const rounds = 3;
  const warm = performance.now();
  for (let i = 0; i < rounds; i++) for (const resource of all) fresh.extract(resource);
  t.comment(`warm: ${(((performance.now() - warm) / (rounds * all.length)) * 1000).toFixed(1)} µs per example on average`);
  for (const file of ['Patient/Patient-example.json', 'Observation/Observation-example.json', 'MedicationRequest/MedicationRequest-medrx0308.json']) {
    const resource = example(file);
    for (let i = 0; i < 500; i++) fresh.extract(resource);
    const n = 3000;
    const start = performance.now();
    for (let i = 0; i < n; i++) fresh.extract(resource);
    t.comment(`${file}: ${(((performance.now() - start) / n) * 1000).toFixed(1)} µs per extraction`);
  }
});
