import t from 'tap';
import { createValidator, pointerToExpression, type ValidationIssue } from '../../../src/fhir/validation/validator.ts';

const validator = createValidator();

type Json = Record<string, unknown>;

function errors(resource: unknown, expectedType?: string): ValidationIssue[] {
  return validator.validate(resource, expectedType).filter((i) => i.severity === 'error');
}

/** The (code, expression) pairs of the error issues, sorted, for exact comparisons. */
function pairs(resource: unknown, expectedType?: string): string[] {
  return errors(resource, expectedType)
    .map((i) => `${i.code} ${i.expression}`)
    .sort();
}

function patient(extra: Json): Json {
  return { resourceType: 'Patient', id: 'p1', ...extra };
}

function observation(extra: Json): Json {
  return { resourceType: 'Observation', status: 'final', code: { text: 'weight' }, ...extra };
}

t.test('valid minimal resources give no issue at all', async (t) => {
  const valid: Json[] = [
    { resourceType: 'Patient' },
    { resourceType: 'Patient', id: 'example', active: true, name: [{ family: 'Chalmers', given: ['Peter', 'James'] }], gender: 'male', birthDate: '1974-12-25' },
    observation({ id: 'o1', subject: { reference: 'Patient/example' }, effectiveDateTime: '2020-01-01T10:00:00+01:00', valueQuantity: { value: 72.5, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' } }),
    {
      resourceType: 'MedicationRequest',
      status: 'active',
      intent: 'order',
      medicationCodeableConcept: { text: 'aspirin 100 mg' },
      subject: { reference: 'Patient/example' },
      authoredOn: '2020-03-01',
      dosageInstruction: [{ timing: { repeat: { frequency: 1, period: 1, periodUnit: 'd' } } }],
    },
    {
      resourceType: 'Consent',
      status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
      patient: { reference: 'Patient/example' },
      dateTime: '2020-01-01',
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    },
    {
      resourceType: 'AuditEvent',
      type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' },
      recorded: '2020-01-01T10:00:00.123Z',
      agent: [{ requestor: true, who: { reference: 'Practitioner/dr1' } }],
      source: { observer: { display: 'Vellum' } },
    },
    { resourceType: 'Practitioner', id: 'dr1', name: [{ family: 'Careful', prefix: ['Dr'] }] },
    { resourceType: 'Organization', id: 'org1', name: 'ACME Hospital', active: true },
  ];
  for (const r of valid) t.same(validator.validate(r), [], `${String(r['resourceType'])} is valid`);
});

t.test('non-object input and resourceType', async (t) => {
  for (const bad of [null, 'Patient', 42, [], [{ resourceType: 'Patient' }]]) {
    t.same(pairs(bad), ['structure Resource'], `${JSON.stringify(bad)} is rejected`);
  }
  t.same(pairs({ id: 'x' }), ['required Resource'], 'missing resourceType');
  t.same(pairs({ id: 'x' }, 'Patient'), ['required Patient'], 'missing resourceType with an expected type');
  t.same(pairs({ resourceType: 'Project', name: 'x' }), ['value Resource.resourceType'], 'Medplum types are not R4');
  t.same(pairs({ resourceType: 'patient' }), ['value Resource.resourceType'], 'resource types are case-sensitive');
  t.same(pairs({ resourceType: 7 }), ['value Resource.resourceType']);
});

t.test('resourceType must match expectedType', async (t) => {
  t.same(pairs({ resourceType: 'Patient' }, 'Observation'), ['invalid Patient.resourceType']);
  t.same(pairs({ resourceType: 'Patient' }, 'Patient'), []);
  // other problems are still reported along with the mismatch
  t.same(pairs({ resourceType: 'Patient', id: 'a_b' }, 'Observation'), ['invalid Patient.resourceType', 'value Patient.id']);
});

t.test('resource id format', async (t) => {
  t.same(pairs(patient({ id: 'bad_id' })), ['value Patient.id']);
  t.same(pairs(patient({ id: 'bad id' })), ['value Patient.id']);
  t.same(pairs(patient({ id: 'a'.repeat(65) })), ['value Patient.id']);
  t.same(pairs(patient({ id: '' })), ['value Patient.id']);
  t.same(pairs(patient({ id: 'A-Za-z0-9.-'.replace(/[^A-Za-z0-9.-]/g, '') + 'a'.repeat(53) })), [], '64 characters is fine');
  t.equal(errors(patient({ id: 'bad_id' })).length, 1, 'schema pattern and own check are reported once');
});

t.test('date, dateTime, instant, time', async (t) => {
  t.same(pairs(observation({ effectiveDateTime: '2020-01-01T10:00:00' })), ['value Observation.effectiveDateTime'], 'time without timezone');
  t.same(pairs(observation({ effectiveDateTime: '2020-01-01T10:00' })), ['value Observation.effectiveDateTime']);
  for (const ok of ['2020', '2020-02', '2020-02-29', '2020-01-01T10:00:00Z', '2020-01-01T10:00:00.5-05:00', '2020-01-01T23:59:60+14:00']) {
    t.same(pairs(observation({ effectiveDateTime: ok })), [], `${ok} is a dateTime`);
  }
  t.same(pairs(observation({ effectiveDateTime: '2021-02-29' })), ['value Observation.effectiveDateTime'], 'not a calendar date');
  t.same(pairs(patient({ birthDate: '2021-04-31' })), ['value Patient.birthDate']);
  t.same(pairs(patient({ birthDate: '1974-12-25T10:00:00Z' })), ['value Patient.birthDate'], 'a date has no time');
  t.same(pairs(patient({ birthDate: 'not a date' })), ['value Patient.birthDate']);
  t.same(pairs(observation({ issued: '2020-01-01' })), ['value Observation.issued'], 'instant needs a time');
  t.same(pairs(observation({ issued: '2020-01-01T10:00:00' })), ['value Observation.issued'], 'instant needs a timezone');
  t.same(pairs(observation({ issued: '2020-01-01T10:00:00.000Z' })), []);
  t.same(pairs(observation({ valueTime: '25:00:00' })), ['value Observation.valueTime']);
  t.same(pairs(observation({ valueTime: '10:00:00' })), []);
});

t.test('numbers', async (t) => {
  t.same(pairs(observation({ valueInteger: 2147483648 })), ['value Observation.valueInteger'], 'beyond 32 bits');
  t.same(pairs(observation({ valueInteger: 1.5 })), ['value Observation.valueInteger']);
  t.same(pairs(observation({ valueInteger: -2147483648 })), []);
  t.same(pairs(observation({ valueInteger: '5' })), ['structure Observation.valueInteger'], 'a string is the wrong JSON type');
  t.same(pairs(observation({ valueQuantity: { value: '1.0' } })), ['structure Observation.valueQuantity.value']);
  t.same(pairs(observation({ valueQuantity: { value: 1e-7 } })), []);
  const timing = (frequency: unknown): Json => ({
    resourceType: 'MedicationRequest', status: 'active', intent: 'order', medicationReference: { reference: 'Medication/m1' }, subject: { reference: 'Patient/p' },
    dosageInstruction: [{ timing: { repeat: { frequency } } }],
  });
  t.same(pairs(timing(0)), ['value MedicationRequest.dosageInstruction[0].timing.repeat.frequency'], 'positiveInt 0');
  t.same(pairs(timing(3)), []);
  t.same(pairs(patient({ photo: [{ size: -1 }] })), ['value Patient.photo[0].size'], 'unsignedInt -1');
  t.same(pairs(patient({ photo: [{ size: 0 }] })), []);
});

t.test('strings, uri, code, base64, oid, uuid', async (t) => {
  t.same(pairs(patient({ name: [{ family: '' }] })), ['value Patient.name[0].family'], 'empty string');
  t.same(pairs(patient({ name: [{ family: '  Smith ' }] })), [], 'strings may have surrounding whitespace');
  t.same(pairs(patient({ implicitRules: 'http://example.org/a b' })), ['value Patient.implicitRules']);
  t.same(pairs(patient({ implicitRules: '' })), ['value Patient.implicitRules']);
  t.same(pairs(patient({ language: ' en' })), ['value Patient.language'], 'code with leading whitespace');
  t.same(pairs(patient({ language: 'en ' })), ['value Patient.language']);
  t.same(pairs(patient({ language: 'en  US' })), ['value Patient.language']);
  t.same(pairs(patient({ gender: 'fem' })), ['value Patient.gender'], 'required binding');
  t.same(pairs(patient({ photo: [{ data: '%%%2@()()' }] })), ['value Patient.photo[0].data'], 'base64');
  t.same(pairs(patient({ photo: [{ data: 'abc' }] })), ['value Patient.photo[0].data'], 'base64 length');
  t.same(pairs(patient({ photo: [{ data: 'aGVsbG8=' }] })), []);
  t.same(pairs(patient({ photo: [{ data: 'aGVs\nbG8=' }] })), [], 'base64 may contain line breaks');
  const ext = (value: Json): Json => patient({ extension: [{ url: 'http://example.org/x', ...value }] });
  t.same(pairs(ext({ valueOid: 'urn:oid:1.2.x' })), ['value Patient.extension[0].valueOid']);
  t.same(pairs(ext({ valueOid: 'urn:oid:2.16.840.1.113883' })), []);
  t.same(pairs(ext({ valueUuid: 'urn:uuid:NOT-A-UUID' })), ['value Patient.extension[0].valueUuid']);
  t.same(pairs(ext({ valueUuid: 'urn:uuid:c757873d-ec9a-4326-a141-556f43239520' })), []);
  t.same(pairs(ext({ valueUri: 'has space' })), ['value Patient.extension[0].valueUri']);
  t.same(pairs(ext({ valueId: 'x_y' })), ['value Patient.extension[0].valueId']);
  t.same(pairs(ext({ valueString: 'Dr.\u00a0Who' })), [], 'NBSP is allowed in strings');
  t.same(pairs(patient({ name: [{ family: 'x'.repeat(1024 * 1024 + 1) }] })), ['value Patient.name[0].family'], 'strings are at most 1 MB');
  const ctl = validator.validate(patient({ name: [{ family: 'a\u0001b' }] }));
  t.same(ctl.map((i) => `${i.severity} ${i.code} ${i.expression}`), ['warning value Patient.name[0].family'], 'control characters only warn');
});

t.test('empty arrays and objects, nulls', async (t) => {
  t.same(pairs(patient({ name: [] })), ['structure Patient.name'], 'empty array');
  t.same(pairs(patient({ name: [{ given: [] }] })), ['structure Patient.name[0].given']);
  t.same(pairs(patient({ maritalStatus: {} })), ['structure Patient.maritalStatus'], 'empty object');
  t.same(pairs(patient({ name: [{}] })), ['structure Patient.name[0]']);
  t.same(pairs(patient({ name: [null] })), ['structure Patient.name[0]'], 'null array item');
  t.same(pairs(patient({ active: null })), ['structure Patient.active'], 'null value');
});

t.test('unknown elements', async (t) => {
  t.same(pairs(patient({ unknownElement: 1 })), ['structure Patient.unknownElement']);
  t.same(pairs(patient({ fhir_comments: ['x'] })), ['structure Patient.fhir_comments']);
  t.same(pairs(patient({ name: [{ family: 'x', nickname: 'y' }] })), ['structure Patient.name[0].nickname']);
  t.same(pairs(observation({ valueInteger: { value: 3 } })), ['structure Observation.valueInteger'], 'object where a primitive is expected');
  t.same(pairs(observation({ value: 3 })), ['structure Observation.value'], 'a choice needs its type suffix');
  t.same(pairs(patient({ _id: { extension: [{ url: 'http://x', valueBoolean: true }] } })), ['structure Patient._id'], 'no extensions on Resource.id');
});

t.test('JSON type of arrays and objects', async (t) => {
  t.same(pairs(patient({ name: { family: 'x' } })), ['structure Patient.name'], 'object where an array is expected');
  t.same(pairs(patient({ maritalStatus: [{ text: 'x' }] })), ['structure Patient.maritalStatus'], 'array where an object is expected');
  t.same(pairs(patient({ active: 'true' })), ['structure Patient.active']);
});

t.test('primitive extensions (_element)', async (t) => {
  const ext = { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/data-absent-reason', valueCode: 'unknown' }] };
  t.same(pairs(patient({ _birthDate: ext })), [], 'extension without value');
  t.same(pairs(patient({ birthDate: '1970', _birthDate: ext })), []);
  t.same(pairs(patient({ name: [{ given: ['a', null], _given: [null, ext] }] })), [], 'null placeholders line up');
  t.same(pairs(patient({ _birthDate: 'x' })), ['structure Patient.birthDate'], 'a string instead of an object');
  t.same(pairs(patient({ _birthDate: [ext] })), ['structure Patient.birthDate'], 'an array instead of an object');
  t.same(pairs(patient({ _birthDate: {} })), ['structure Patient.birthDate'], 'empty');
  t.same(pairs(patient({ name: [{ given: ['a'], _given: ext }] })), ['structure Patient.name[0].given'], 'an object instead of an array');
  t.same(pairs(patient({ name: [{ given: ['a'], _given: ['x'] }] })), ['structure Patient.name[0].given[0]'], 'array items must be objects or null');
  t.same(pairs(patient({ name: [{ given: ['a'], _given: [null, ext] }] })), ['structure Patient.name[0].given'], 'arrays of different length');
  t.same(pairs(patient({ name: [{ given: ['a', null] }] })), ['structure Patient.name[0].given[1]'], 'null without extension');
  t.same(pairs(patient({ name: [{ given: ['a', null], _given: [null, null] }] })), ['structure Patient.name[0].given', 'structure Patient.name[0].given[1]'], 'both null');
  t.same(pairs(patient({ name: [{ given: ['a'], _given: [{ extension: [{ url: 'http://x' }] }] }] })), ['invariant Patient.name[0].given[0].extension[0]'], 'the extension itself is validated (ext-1: a value or extensions)');
  t.same(pairs(patient({ _birthDate: { extension: [{ valueCode: 'x' }] } })), ['required Patient.birthDate.extension[0]'], 'Extension.url is required');
  t.same(pairs(patient({ _gender: { foo: 1 } })), ['structure Patient.gender.foo']);
});

t.test('canonical elements accept _element (schema patch)', async (t) => {
  const ext = { extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/elementdefinition-profile-element', valueString: 'x' }] };
  t.same(pairs(patient({ meta: { profile: ['http://example.org/p'], _profile: [ext] } })), []);
  t.same(pairs(patient({ meta: { profile: ['http://example.org/p'], _profile: 'x' } })), ['structure Patient.meta.profile']);
});

t.test('cardinality', async (t) => {
  t.same(pairs({ resourceType: 'Observation', code: { text: 'x' } }), ['required Observation'], 'status is 1..1 (a primitive: not in the schema)');
  t.same(pairs({ resourceType: 'Observation', status: 'final' }), ['required Observation'], 'code is 1..1');
  t.same(pairs({ resourceType: 'Observation', _status: { extension: [{ url: 'http://x', valueString: 'y' }] }, code: { text: 'x' } }), [], 'a primitive given only by its extensions is present');
  t.same(pairs({ resourceType: 'MedicationRequest', status: 'active', intent: 'order', subject: { reference: 'Patient/p' } }), ['required MedicationRequest'], 'medication[x] is 1..1');
  t.same(pairs({ resourceType: 'StructureDefinition', url: 'http://x', kind: 'resource', type: 'Patient' }).length, 3, 'name, status and abstract are missing');
  t.same(pairs(patient({ link: [{ type: 'seealso' }] })), ['required Patient.link[0]'], 'in backbone elements too');
  t.same(pairs(patient({ text: { status: 'generated' } })), ['required Patient.text']);
});

t.test('choice elements take one type', async (t) => {
  t.same(pairs(observation({ valueString: 'a', valueInteger: 1 })), ['structure Observation']);
  t.same(pairs(observation({ valueString: 'a', _valueBoolean: { extension: [{ url: 'http://x', valueCode: 'y' }] } })), ['structure Observation']);
  t.same(pairs(patient({ deceasedBoolean: false, deceasedDateTime: '2020' })), ['structure Patient']);
});

t.test('narrative', async (t) => {
  const div = '<div xmlns="http://www.w3.org/1999/xhtml">hi</div>';
  t.same(pairs(patient({ text: { status: 'generated', div } })), []);
  t.same(pairs(patient({ text: { status: 'generated', div: 'hi' } })), ['invariant Patient.text.div']); // txt-1, see narrative.test.ts
  t.same(pairs(patient({ text: { status: 'generated', div: '' } })), ['value Patient.text.div']);
  t.same(pairs(patient({ text: { status: 'generated', div: { p: 'x' } } })), ['structure Patient.text.div']);
});

t.test('reference syntax', async (t) => {
  const obs = (reference: string, extra: Json = {}): Json => observation({ subject: { reference }, ...extra });
  const good = [
    'Patient/123',
    'Patient/A-b.1',
    'Patient/123/_history/2',
    'http://example.org/fhir/Patient/123',
    'https://example.org/fhir/Patient/123/_history/1',
    'urn:uuid:c757873d-ec9a-4326-a141-556f43239520',
    'urn:oid:1.2.3.4',
    'Patient?identifier=http://example.org/mrn|12345',
    'Patient?identifier=1234&name=',
  ];
  for (const r of good) t.same(pairs(obs(r)), [], `${r} is a valid reference`);
  t.same(pairs(obs('#p1', { contained: [{ resourceType: 'Patient', id: 'p1' }] })), [], 'local reference to a contained resource');
  const bad = [
    'Patient/bad_id',
    'Patient/',
    'patient/123',
    'Foo/123',
    'Project/123',
    'Patient/123/456',
    'Patient/123/_history/',
    'Patient/ 123',
    'Patient',
    'urn:oid:1.2.x',
    '#bad_id',
    'Foo?name=x',
    'Patient?name',
    'Patient?identifier=1234&?==',
    'http:/example.org/Patient/1',
  ];
  for (const r of bad) t.same(pairs(obs(r)), ['value Observation.subject.reference'], `${r} is not a valid reference`);
  t.same(pairs(obs('#nowhere')), ['invariant Observation.subject.reference'], 'ref-1: local reference without contained resource');
  t.same(pairs(obs('#')), [], '# refers to the container itself');
});

t.test('contained resources', async (t) => {
  const withContained = (contained: unknown[], extra: Json = {}): Json => observation({ contained, subject: { reference: '#p1' }, ...extra });
  t.same(pairs(withContained([{ resourceType: 'Patient', id: 'p1' }])), []);
  t.same(pairs(withContained([{ resourceType: 'Patient', id: 'p1', foo: 1 }])), ['structure Observation.contained[0].foo'], 'validated against its own type');
  t.same(pairs(withContained([{ resourceType: 'Patient', id: 'p_1' }])), ['invariant Observation.subject.reference', 'value Observation.contained[0].id']);
  t.same(pairs(withContained([{ resourceType: 'Patient', id: 'p1' }, { resourceType: 'Patient' }])), ['required Observation.contained[1]'], 'a contained resource needs an id');
  t.same(
    pairs(withContained([{ resourceType: 'Patient', id: 'p1', contained: [{ resourceType: 'Patient', id: 'p2' }] }])),
    ['invariant Observation.contained[0].contained'],
    'dom-2: no nested contained resources',
  );
  t.same(pairs(withContained([{ resourceType: 'Patient', id: 'p1', meta: { versionId: '1' } }])), ['invariant Observation.contained[0].meta'], 'dom-4');
  t.same(pairs(withContained([{ resourceType: 'Patient', id: 'p1', meta: { security: [{ code: 'R' }] } }])), ['invariant Observation.contained[0].meta.security'], 'dom-5');
  t.same(pairs(withContained([{ resourceType: 'Nope', id: 'p1' }])), ['value Observation.contained[0].resourceType']);
  t.same(pairs(withContained(['x'])), ['invariant Observation.subject.reference', 'structure Observation.contained[0]']);
  t.same(pairs(withContained([])), ['invariant Observation.subject.reference', 'structure Observation.contained']);
  // a reference inside a contained resource to a sibling contained resource
  t.same(
    pairs(observation({ contained: [{ resourceType: 'Patient', id: 'p1', managingOrganization: { reference: '#o1' } }, { resourceType: 'Organization', id: 'o1' }], subject: { reference: '#p1' } })),
    [],
  );
});

t.test('Bundle entries and Parameters are validated with their own type', async (t) => {
  const bundle = (entries: unknown[]): Json => ({ resourceType: 'Bundle', type: 'collection', entry: entries });
  t.same(pairs(bundle([{ fullUrl: 'http://x.org/Patient/1', resource: { resourceType: 'Patient', id: '1' } }])), []);
  t.same(pairs(bundle([{ resource: { resourceType: 'Patient', id: 'a_b' } }])), ['value Bundle.entry[0].resource.id']);
  t.same(pairs(bundle([{ resource: { resourceType: 'Observation', status: 'final' } }])), ['required Bundle.entry[0].resource']);
  t.same(pairs(bundle([{ resource: { resourceType: 'Patient' } }, { resource: { resourceType: 'Patient', name: [{ foo: 1 }] } }])), ['structure Bundle.entry[1].resource.name[0].foo']);
  t.same(pairs(bundle([{ resource: { resourceType: 'Bot' } }])), ['value Bundle.entry[0].resource.resourceType']);
  t.same(pairs(bundle([{ resource: { id: 'x' } }])), ['required Bundle.entry[0].resource']);
  t.same(pairs(bundle([{ fullUrl: '' }])), ['value Bundle.entry[0].fullUrl']);
  t.same(
    pairs({ resourceType: 'Bundle', type: 'transaction-response', entry: [{ response: { status: '400', outcome: { resourceType: 'OperationOutcome', issue: [{ severity: 'error' }] } } }] }),
    ['required Bundle.entry[0].response.outcome.issue[0]'],
    'entry.response.outcome',
  );
  // ref-1 is scoped to each entry resource
  t.same(
    pairs(bundle([{ resource: { resourceType: 'Patient', contained: [{ resourceType: 'Organization', id: 'o1' }], managingOrganization: { reference: '#o1' } } }, { resource: { resourceType: 'Patient', managingOrganization: { reference: '#o1' } } }])),
    ['invariant Bundle.entry[1].resource.managingOrganization.reference'],
  );
  t.same(pairs({ resourceType: 'Parameters', parameter: [{ name: 'r', resource: { resourceType: 'Patient', birthDate: '1' } }] }), ['value Parameters.parameter[0].resource.birthDate']);
  t.same(pairs({ resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Patient', id: '#' } }] } }] }), ['value Bundle.entry[0].resource.entry[0].resource.id'], 'nested Bundles');
});

t.test('extensions', async (t) => {
  t.same(pairs(patient({ extension: [{ url: 'http://x', valueString: 'a', valueInteger: 1 }] })), ['structure Patient.extension[0]'], 'one value[x]');
  t.same(pairs(patient({ extension: [{ url: 'http://x', valueString: 'a', extension: [{ url: 'y', valueCode: 'z' }] }] })), ['invariant Patient.extension[0]'], 'ext-1');
  t.same(pairs(patient({ extension: [{ url: 'http://x', valueFoo: 'a' }] })), ['structure Patient.extension[0].valueFoo']);
  t.same(pairs(patient({ modifierExtension: [{ url: 'http://x', valueDateTime: '2020-01-01T00:00:00' }] })), ['value Patient.modifierExtension[0].valueDateTime']);
});

t.test('each problem is reported once, with readable diagnostics', async (t) => {
  const issues = validator.validate(patient({ id: 'a_b', gender: '', birthDate: '2020-13-01', name: { family: 'x' }, foo: 1 }));
  t.same(issues.map((i) => `${i.code} ${i.expression}`).sort(), ['structure Patient.foo', 'structure Patient.name', 'value Patient.birthDate', 'value Patient.gender', 'value Patient.id']);
  for (const i of issues) {
    t.equal(i.severity, 'error');
    t.ok(i.diagnostics.length > 10, 'has diagnostics');
    t.notMatch(i.diagnostics, /must match pattern/, 'no raw ajv message');
  }
});

t.test('very deep input does not throw', async (t) => {
  let ext: Json = { url: 'http://x', valueString: 'leaf' };
  for (let i = 0; i < 20000; i++) ext = { url: 'http://x', extension: [ext] };
  const issues = validator.validate(patient({ extension: [ext] }));
  t.ok(issues.some((i) => i.severity === 'error' && i.code === 'structure'));
});

t.test('validators share one compiled schema', async (t) => {
  const start = performance.now();
  const other = createValidator();
  t.ok(performance.now() - start < 50, 'second createValidator() is cheap');
  t.same(other.validate({ resourceType: 'Patient', id: 'x_y' }).map((i) => i.expression), ['Patient.id']);
});

t.test('pointerToExpression', async (t) => {
  t.equal(pointerToExpression('Patient', ''), 'Patient');
  t.equal(pointerToExpression('Patient', '/name/0/given/1'), 'Patient.name[0].given[1]');
  t.equal(pointerToExpression('Patient', '/name/0/_given/1/extension/0'), 'Patient.name[0].given[1].extension[0]');
  t.equal(pointerToExpression('Bundle.entry[2].resource', '/code/coding/0'), 'Bundle.entry[2].resource.code.coding[0]');
});
