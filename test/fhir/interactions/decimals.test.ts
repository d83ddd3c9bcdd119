/**
 * Decimals keep the precision they were written with through every write and read
 * (http://hl7.org/fhir/R4/datatypes.html#decimal, http://hl7.org/fhir/R4/json.html#primitive):
 * `5.40` stays `5.40`, 18 significant digits survive. Bodies are sent as text, since a
 * JSON.stringify of numbers would already lose what is being checked.
 */
import t from 'tap';
import { startTestServer, vellumCodes } from '../../helpers/server.ts';
import { JSON_PATCH } from './examples.ts';

const observation = (id: string | undefined, status = 'final', extra = '') => `{"resourceType":"Observation",${id ? `"id":"${id}",` : ''}
  "status":"${status}","code":{"text":"precision"},
  "identifier":[{"system":"urn:vellum:test","value":"decimals"}],
  "valueQuantity":{"value":5.40,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"},
  "component":[{"code":{"text":"eighteen digits"},"valueQuantity":{"value":0.123456789012345678}}${extra}]}`;

/** The number literals written for every "value" member, as text. */
const values = (text: string) => [...text.matchAll(/"value"\s*:\s*(-?[0-9][0-9.eE+-]*)/g)].map((m) => m[1]);
const EXACT = ['5.40', '0.123456789012345678'];

t.test('create, read, vread, search, history keep decimals as written', async (t) => {
  const s = await startTestServer(t);
  const created = await s.fhir('POST', 'Observation', observation(undefined));
  t.equal(created.status, 201);
  t.same(values(created.text), EXACT, 'the create response');
  const id = created.json.id;
  for (const path of [
    `Observation/${id}`,
    `Observation/${id}/_history/1`,
    `Observation?_id=${id}`,
    `Observation/${id}/_history`,
    `Observation/${id}?_summary=data`,
    `Observation/${id}?_elements=value,component`,
    `Observation/${id}?_pretty=true`,
  ]) {
    const res = await s.fhir('GET', path);
    t.equal(res.status, 200, path);
    t.same(values(res.text), EXACT, `${path} keeps 5.40 and 18 digits`);
  }
  // searching and validating use the value, not the text
  const found = await s.fhir('GET', 'Observation?value-quantity=5.4');
  t.same(found.json.entry.map((e: any) => e.resource.id), [id], 'found by its value');
  t.same(values(found.text).slice(0, 2), EXACT);

  const invalid = await s.fhir('POST', 'Observation', observation(undefined, 'not-a-status'));
  t.equal(invalid.status, 400, 'an invalid body with exact decimals is still refused');
  t.ok(vellumCodes(invalid.json).includes('VLM_FHIR_INVALID_RESOURCE'));
  t.equal((await s.fhir('GET', 'Observation/_history')).json.total, 1, 'and stores nothing');

  const plain = await s.fhir('POST', 'Observation', JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'plain' }, valueQuantity: { value: 5.5 } }));
  t.same(values(plain.text), ['5.5'], 'ordinary numbers are unaffected');
});

t.test('update and conditional update keep decimals as written', async (t) => {
  const s = await startTestServer(t);
  const put = await s.fhir('PUT', 'Observation/dec-1', observation('dec-1'));
  t.equal(put.status, 201);
  t.same(values(put.text), EXACT);
  const updated = await s.fhir('PUT', 'Observation/dec-1', observation('dec-1', 'amended', ',{"code":{"text":"more"},"valueQuantity":{"value":2.500}}'));
  t.equal(updated.status, 200);
  t.same(values(updated.text), [...EXACT, '2.500']);
  t.same(values((await s.fhir('GET', 'Observation/dec-1')).text), [...EXACT, '2.500']);
  t.same(values((await s.fhir('GET', 'Observation/dec-1/_history/1')).text), EXACT, 'the old version too');
  const conditional = await s.fhir('PUT', 'Observation?identifier=urn:vellum:test|decimals', observation(undefined, 'corrected'));
  t.equal(conditional.status, 200);
  t.equal(conditional.json.id, 'dec-1');
  t.same(values(conditional.text), EXACT);
});

t.test('patch keeps the decimals it does not touch, and those it adds', async (t) => {
  const s = await startTestServer(t);
  const { id } = (await s.fhir('POST', 'Observation', observation(undefined))).json;
  const res = await s.fhir(
    'PATCH',
    `Observation/${id}`,
    '[{"op":"test","path":"/valueQuantity/value","value":5.4},{"op":"replace","path":"/status","value":"amended"},{"op":"add","path":"/component/-","value":{"code":{"text":"added"},"valueQuantity":{"value":7.10}}}]',
    JSON_PATCH,
  );
  t.equal(res.status, 200, '`test` compares values: 5.4 equals 5.40');
  t.equal(res.json.status, 'amended');
  t.same(values(res.text), [...EXACT, '7.10']);
  const read = await s.fhir('GET', `Observation/${id}`);
  t.same(values(read.text), [...EXACT, '7.10'], 'what is stored');
  const failed = await s.fhir('PATCH', `Observation/${id}`, '[{"op":"test","path":"/valueQuantity/value","value":5.41}]', JSON_PATCH);
  t.equal(failed.status, 422);
  const again = await s.fhir('PATCH', `Observation/${id}`, [{ op: 'replace', path: '/status', value: 'final' }], JSON_PATCH);
  t.equal(again.status, 200, 'a patch without decimals on a resource with exact ones');
  t.same(values(again.text), [...EXACT, '7.10']);
  const history = await s.fhir('GET', `Observation/${id}/_history`);
  t.equal(history.json.total, 3);
  t.same(values(JSON.stringify(history.json.entry.at(-1).resource)), ['5.4', '0.12345678901234568'], 'a plain JSON.parse would have lost them');
  t.ok(history.text.includes('"value":5.40'), 'the history text keeps them');
});
