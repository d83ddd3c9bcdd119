/**
 * $validate — http://hl7.org/fhir/R4/resource-operation-validate.html, type and instance level,
 * the resource as the body or inside Parameters, mode create | update | delete.
 */
import t, { type Test } from 'tap';
import { startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { TYPE_CASES } from './examples.ts';

const severities = (outcome: any): string[] => (outcome?.issue ?? []).map((i: any) => i.severity);
const errors = (outcome: any): any[] => (outcome?.issue ?? []).filter((i: any) => i.severity === 'error' || i.severity === 'fatal');

function parameters(resource: unknown, mode?: string): Record<string, unknown> {
  return {
    resourceType: 'Parameters',
    parameter: [{ name: 'resource', resource }, ...(mode ? [{ name: 'mode', valueCode: mode }] : [])],
  };
}

async function nothingStored(t: Test, s: TestServer): Promise<void> {
  t.equal((await s.fhir('GET', '_history')).json.total, 0, 'validating stores nothing');
}

t.test('valid and invalid resources, per type, as body and as Parameters', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    for (const [how, wrap] of [
      ['body', (r: unknown) => r],
      ['Parameters', (r: unknown) => parameters(r)],
    ] as const) {
      const valid = await s.fhir('POST', `${c.type}/$validate`, wrap(c.example()));
      t.equal(valid.status, 200, `${c.type} valid (${how})`);
      t.equal(valid.json.resourceType, 'OperationOutcome');
      t.same(severities(valid.json), ['information']);
      t.equal(valid.json.issue[0].code, 'informational');

      const invalid = await s.fhir('POST', `${c.type}/$validate`, wrap(c.invalid(c.example())));
      t.equal(invalid.status, 200, `${c.type} invalid (${how}): still 200`);
      t.ok(errors(invalid.json).length > 0, 'with error issues');
      t.notOk(severities(invalid.json).includes('information'));

      const otherType = await s.fhir('POST', `${c.type}/$validate`, wrap({ resourceType: 'Basic', code: { text: 'x' } }));
      t.equal(otherType.status, 200);
      t.ok(errors(otherType.json).length > 0, `${c.type}: a resource of another type is an error`);
    }
  }
  await nothingStored(t, s);
});

t.test('mode', async (t) => {
  const s = await startTestServer(t);
  const c = TYPE_CASES[1]!; // Observation
  const withId = { ...c.example(), id: 'obs-1' };

  for (const mode of ['create', 'update']) {
    const q = await s.fhir('POST', `${c.type}/$validate?mode=${mode}`, withId);
    t.equal(q.status, 200, `mode=${mode} in the query`);
    t.same(severities(q.json), ['information']);
    const p = await s.fhir('POST', `${c.type}/$validate`, parameters(withId, mode));
    t.equal(p.status, 200, `mode=${mode} in Parameters`);
    t.same(severities(p.json), ['information']);
  }
  const updateNoId = await s.fhir('POST', `${c.type}/$validate?mode=update`, c.example());
  t.equal(updateNoId.status, 200);
  t.same(errors(updateNoId.json).map((i: any) => i.code), ['required'], 'mode=update needs an id');
  const createNoId = await s.fhir('POST', `${c.type}/$validate?mode=create`, c.example());
  t.same(severities(createNoId.json), ['information'], 'mode=create does not');

  const del = await s.fhir('POST', `${c.type}/obs-1/$validate?mode=delete`);
  t.equal(del.status, 200, 'mode=delete on an instance needs no body');
  t.same(severities(del.json), ['information']);
  const delParams = await s.fhir('POST', `${c.type}/obs-1/$validate`, { resourceType: 'Parameters', parameter: [{ name: 'mode', valueCode: 'delete' }] });
  t.equal(delParams.status, 200);
  const delType = await s.fhir('POST', `${c.type}/$validate?mode=delete`, c.example());
  t.equal(delType.status, 400, 'mode=delete needs an instance');
  t.same(vellumCodes(delType.json), ['VLM_FHIR_ID_MISSING']);

  for (const bad of ['destroy', 'CREATE', '']) {
    const res = await s.fhir('POST', `${c.type}/$validate?mode=${bad}`, c.example());
    t.equal(res.status, 400, `mode=${bad}`);
    t.same(vellumCodes(res.json), ['VLM_FHIR_BAD_PARAMETER']);
  }
  const badParam = await s.fhir('POST', `${c.type}/$validate`, { resourceType: 'Parameters', parameter: [{ name: 'resource', resource: c.example() }, { name: 'mode', valueCode: 7 }] });
  t.equal(badParam.status, 400);
  t.same(vellumCodes(badParam.json), ['VLM_FHIR_BAD_PARAMETER']);
  await nothingStored(t, s);
});

t.test('instance level', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const same = await s.fhir('POST', `${c.type}/v-1/$validate`, { ...c.example(), id: 'v-1' });
    t.equal(same.status, 200);
    t.same(severities(same.json), ['information'], `${c.type}: the URL id and the body id agree`);
    const other = await s.fhir('POST', `${c.type}/v-1/$validate`, { ...c.example(), id: 'v-2' });
    t.equal(other.status, 200);
    t.same(errors(other.json).map((i: any) => i.expression), [['id']], `${c.type}: ids differ`);
    const missing = await s.fhir('POST', `${c.type}/v-1/$validate`, parameters(c.example(), 'update'));
    t.ok(errors(missing.json).length > 0, `${c.type}: the body has no id`);
    const badId = await s.fhir('POST', `${c.type}/bad$id/$validate`, { ...c.example(), id: 'bad$id' });
    t.equal(badId.status, 400);
    t.same(vellumCodes(badId.json), ['VLM_FHIR_BAD_ID']);
    const badIdDelete = await s.fhir('POST', `${c.type}/bad$id/$validate?mode=delete`);
    t.equal(badIdDelete.status, 400, 'a bad id is refused in every mode');
  }
  await nothingStored(t, s);
});

t.test('malformed requests', async (t) => {
  const s = await startTestServer(t);
  const noBody = await s.fhir('POST', 'Patient/$validate');
  t.equal(noBody.status, 400);
  t.same(vellumCodes(noBody.json), ['VLM_FHIR_BODY_MISSING']);
  const noResource = await s.fhir('POST', 'Patient/$validate', { resourceType: 'Parameters', parameter: [{ name: 'mode', valueCode: 'create' }] });
  t.equal(noResource.status, 400);
  t.same(vellumCodes(noResource.json), ['VLM_FHIR_BODY_MISSING']);
  const junkParameters = await s.fhir('POST', 'Patient/$validate', { resourceType: 'Parameters', parameter: [null, 5, 'x', []] });
  t.equal(junkParameters.status, 400);
  t.same(vellumCodes(junkParameters.json), ['VLM_FHIR_BODY_MISSING']);
  const notAnObject = await s.fhir('POST', 'Patient/$validate', [1, 2]);
  t.equal(notAnObject.status, 200);
  t.same(errors(notAnObject.json).map((i: any) => i.code), ['structure']);
  const form = await s.fhir('POST', 'Patient/$validate', 'resourceType=Patient', { 'content-type': 'application/x-www-form-urlencoded' });
  t.equal(form.status, 415);
  t.same(vellumCodes(form.json), ['VLM_FHIR_UNSUPPORTED_MEDIA_TYPE']);
  const xml = await s.fhir('POST', 'Patient/$validate', '<Patient xmlns="http://hl7.org/fhir"/>', { 'content-type': 'application/fhir+xml' });
  t.equal(xml.status, 415);
  const get = await s.fhir('GET', 'Patient/$validate');
  t.equal(get.status, 405);
  t.equal(get.headers.allow, 'POST');
  const parametersItself = await s.fhir('POST', 'Parameters/$validate', { resourceType: 'Parameters', parameter: [{ name: 'x', valueString: 'y' }] });
  t.equal(parametersItself.status, 404, 'Parameters has no REST endpoint, $validate included');
  t.same(vellumCodes(parametersItself.json), ['VLM_FHIR_UNKNOWN_TYPE']);
});
