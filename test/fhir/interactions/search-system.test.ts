/**
 * System-level search through HTTP — GET [base]?_type=… (http://hl7.org/fhir/R4/http.html#search,
 * http://hl7.org/fhir/R4/search.html#type): the types listed, other parameters resolved in every
 * listed type, includes and paging links on the base URL.
 */
import t from 'tap';
import { startTestServer, vellumCodes } from '../../helpers/server.ts';
import { ids, loadFixture, outcomeEntries } from '../search/fixtures.ts';

t.test('GET [base]?_type=…', async (t) => {
  const s = await startTestServer(t);
  await loadFixture(s);
  const cases: [string, string[]][] = [
    ['?_type=Patient,Practitioner', ['Patient/p1', 'Patient/p2', 'Patient/p3', 'Practitioner/pr1']],
    ['?_type=Patient,Practitioner&name=Smith', ['Practitioner/pr1']],
    ['?_type=Patient,Organization&name=a', ['Organization/org1', 'Patient/p1']],
    ['?_type=Patient&family=Beta', ['Patient/p2']],
    ['?_id=p1', ['Patient/p1']],
    ['?_id=p1,org2,o3', ['Observation/o3', 'Organization/org2', 'Patient/p1']],
    ['?_type=Observation,Encounter&subject=Patient/p2', ['Encounter/e2', 'Observation/o2', 'Observation/o5']],
    ['?_type=Observation,Encounter&subject:Patient.name=Alpha', ['Encounter/e1', 'Observation/o1', 'Observation/o3']],
    ['?_type=Patient,Organization&_has:Observation:subject:code=1234-5', ['Patient/p1', 'Patient/p3']],
  ];
  for (const [query, expected] of cases) {
    const res = await s.fhir('GET', query);
    t.equal(res.status, 200, query);
    t.same(ids(res.json), expected, query);
    t.equal(res.json.total, expected.length, query);
    t.same(outcomeEntries(res.json), [], query);
  }
  const all = await s.fhir('GET', '?_count=2&_total=accurate');
  t.equal(all.json.total, 13, 'no _type: every type');
  const next = all.json.link.find((l: any) => l.relation === 'next');
  t.ok(next.url.startsWith(`${s.config.baseUrl}?`), 'links on the base URL');

  const withInclude = await s.fhir('GET', '?_type=Observation&code=1234-5&_include=Observation:subject');
  t.same(ids(withInclude.json, 'include'), ['Patient/p1', 'Patient/p3']);

  // A parameter one of the listed types lacks is unknown.
  const partial = await s.fhir('GET', '?_type=Patient,Observation&family=Beta');
  t.equal(partial.status, 200);
  t.same(vellumCodes(outcomeEntries(partial.json)[0]), ['VLM_FHIR_UNKNOWN_PARAMETER']);
  const strict = await s.fhir('GET', '?_type=Patient,Observation&family=Beta', undefined, { prefer: 'handling=strict' });
  t.equal(strict.status, 400);

  const bad = await s.fhir('GET', '?_type=Nope');
  t.equal(bad.status, 400);
  t.same(vellumCodes(bad.json), ['VLM_FHIR_BAD_SEARCH_PARAMETER']);
  t.same(bad.json.issue[0].expression, ['_type']);
});
