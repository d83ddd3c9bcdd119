/**
 * Chained parameters and `_has` through HTTP — http://hl7.org/fhir/R4/search.html#chaining and
 * http://hl7.org/fhir/R4/search.html#has: nested searches over the reference rows, several levels
 * deep, with malformed chains answered 400 naming the parameter and unknown chained parameters
 * handled like any unknown parameter.
 */
import t from 'tap';
import { startTestServer, vellumCodes } from '../../helpers/server.ts';
import { ids, loadFixture, outcomeEntries } from '../search/fixtures.ts';

t.test('chains', async (t) => {
  const s = await startTestServer(t);
  await loadFixture(s);
  const cases: [string, string[]][] = [
    ['Observation?subject:Patient.name=Alpha', ['Observation/o1', 'Observation/o3']],
    ['Observation?subject.name=Alpha', ['Observation/o1', 'Observation/o3']],
    ['Observation?patient.family=beta', ['Observation/o2', 'Observation/o5']],
    ['Observation?subject:Patient.name=Alpha,Gamma', ['Observation/o1', 'Observation/o3', 'Observation/o4']],
    ['Observation?subject:Patient.family:exact=Alpha', ['Observation/o1', 'Observation/o3']],
    ['Observation?subject:Patient.family:exact=alpha', []],
    ['Observation?subject:Patient.name=Alpha&code=1234-5', ['Observation/o3']],
    ['Observation?subject:Patient.name=Alpha&subject:Patient.name=Ann', ['Observation/o1', 'Observation/o3']],
    ['Observation?subject:Patient.name=Alpha&subject:Patient.name=Bob', []],
    ['Observation?subject:Patient._id=p3', ['Observation/o4']],
    ['Observation?subject:Patient.identifier=urn:dl|12345', ['Observation/o2', 'Observation/o5']],
    ['Observation?subject:Patient.gender:missing=true&code=1234-5', ['Observation/o3', 'Observation/o4']],
    ['Observation?encounter:Encounter.subject:Patient.family=Beta', ['Observation/o2']],
    ['Observation?encounter.patient.family=Alpha', ['Observation/o1']],
    ['Observation?subject:Patient.organization:Organization.name=Acme', ['Observation/o1', 'Observation/o3']],
    ['Observation?subject:Patient.organization.name=Beta', ['Observation/o2', 'Observation/o5']],
    ['Observation?encounter:Encounter.subject:Patient.organization:Organization.name=Acme', ['Observation/o1']],
    ['Observation?subject:Patient.general-practitioner:Practitioner.name=Smith', ['Observation/o1', 'Observation/o3']],
    ['Encounter?subject:Patient.name=Nobody', []],
    ['Patient?organization.name=Acme,Beta', ['Patient/p1', 'Patient/p2']],
  ];
  for (const [query, expected] of cases) {
    const res = await s.fhir('GET', query);
    t.equal(res.status, 200, query);
    t.same(ids(res.json), expected, query);
    t.equal(res.json.total, expected.length);
    t.same(outcomeEntries(res.json), [], 'nothing ignored');
  }
  // A chain combined with _include, sorting and paging.
  const page = await s.fhir('GET', 'Observation?subject:Patient.name=Alpha&_sort=-_id&_count=1&_include=Observation:subject&_total=accurate');
  t.same(ids(page.json), ['Observation/o3']);
  t.same(ids(page.json, 'include'), ['Patient/p1']);
  t.equal(page.json.total, 2);

  // Only current, non-deleted targets count.
  await s.fhir('PUT', 'Patient/p3', { resourceType: 'Patient', id: 'p3', name: [{ family: 'Delta' }] });
  t.same(ids((await s.fhir('GET', 'Observation?subject:Patient.name=Gamma')).json), [], 'an old version does not match');
  t.same(ids((await s.fhir('GET', 'Observation?subject:Patient.name=Delta')).json), ['Observation/o4']);
  await s.fhir('DELETE', 'Patient/p3');
  t.same(ids((await s.fhir('GET', 'Observation?subject:Patient.name=Delta')).json), [], 'a deleted target does not match');
});

t.test('_has, nested', async (t) => {
  const s = await startTestServer(t);
  await loadFixture(s);
  const cases: [string, string[]][] = [
    ['Patient?_has:Observation:patient:code=1234-5', ['Patient/p1', 'Patient/p3']],
    ['Patient?_has:Observation:subject:code=http://loinc.org|85354-9', ['Patient/p1', 'Patient/p2']],
    ['Patient?_has:Observation:subject:code=http://loinc.org|85354-9&_has:Observation:subject:code=1234-5', ['Patient/p1']],
    ['Patient?_has:Observation:subject:code=1234-5,85354-9&name=Gamma', ['Patient/p3']],
    ['Patient?_has:Observation:patient:value-quantity=gt5', ['Patient/p1']],
    ['Patient?_has:Observation:patient:subject:Patient.name=Beta', ['Patient/p2']],
    ['Patient?_has:Encounter:subject:_has:Observation:encounter:component-code-value-quantity=http://loinc.org|8480-6$gt140', ['Patient/p2']],
    ['Organization?_has:Patient:organization:_has:Observation:subject:code=1234-5', ['Organization/org1']],
    ['Practitioner?_has:Patient:general-practitioner:name=Alpha', ['Practitioner/pr1']],
    ['Encounter?_has:Observation:encounter:code=1234-5', []],
  ];
  for (const [query, expected] of cases) {
    const res = await s.fhir('GET', query);
    t.equal(res.status, 200, query);
    t.same(ids(res.json), expected, query);
    t.equal(res.json.total, expected.length);
  }
  await s.fhir('DELETE', 'Observation/o4');
  t.same(ids((await s.fhir('GET', 'Patient?_has:Observation:patient:code=1234-5')).json), ['Patient/p1'], 'a deleted source does not count');
});

t.test('malformed chains and _has: 400 naming the parameter; unknown chained parameters: ignored or strict 400', async (t) => {
  const s = await startTestServer(t);
  await loadFixture(s);
  for (const bad of [
    'Observation?subject:Nope.name=x',
    'Observation?code.name=x',
    'Observation?subject:Organization.name=x',
    'Observation?subject.=x',
    'Observation?subject:Patient.birthdate=notadate',
    'Observation?encounter.subject.organization.partof.partof.name=x',
    'Patient?_has:Observation=1',
    'Patient?_has:Observation:patient=1',
    'Patient?_has:Nope:patient:code=1',
    'Patient?_has:Observation:code:code=1',
    'Practitioner?_has:Observation:patient:code=1',
    'Observation?component-code-value-quantity=8480-6',
    'Observation?component-code-value-quantity=8480-6$abc',
    'Observation?component-code-value-quantity:exact=8480-6$1',
    'Patient?identifier:of-type=MR|12345',
    'Patient?identifier:of-type=http://x||12345',
  ]) {
    const res = await s.fhir('GET', bad);
    t.equal(res.status, 400, bad);
    t.same(vellumCodes(res.json), ['VLM_FHIR_BAD_SEARCH_PARAMETER'], bad);
    t.same(res.json.issue[0].expression, [bad.slice(bad.indexOf('?') + 1, bad.indexOf('=', bad.indexOf('?')))], 'names the parameter');
  }
  for (const unknown of ['Observation?subject:Patient.nope=x', 'Observation?subject.nope=x', 'Patient?_has:Observation:nope:code=1', 'Patient?_has:Observation:patient:nope=1']) {
    const name = unknown.slice(unknown.indexOf('?') + 1, unknown.lastIndexOf('='));
    const lenient = await s.fhir('GET', unknown);
    t.equal(lenient.status, 200, unknown);
    t.same(vellumCodes(outcomeEntries(lenient.json)[0]), ['VLM_FHIR_UNKNOWN_PARAMETER']);
    t.same(outcomeEntries(lenient.json)[0].issue[0].expression, [name]);
    const strict = await s.fhir('GET', unknown, undefined, { prefer: 'handling=strict' });
    t.equal(strict.status, 400, `${unknown}: strict`);
    t.same(vellumCodes(strict.json), ['VLM_FHIR_UNKNOWN_PARAMETER']);
  }
});
