/**
 * Composite parameters and identifier `:of-type` through HTTP —
 * http://hl7.org/fhir/R4/search.html#composite, http://hl7.org/fhir/R4/search.html#token:
 * components match within the same element (one Observation.component, one Identifier), never
 * one component in one element and the other in another.
 */
import t from 'tap';
import { startTestServer } from '../../helpers/server.ts';
import { ids, loadFixture, V2_0203 } from '../search/fixtures.ts';

t.test('composite parameters', async (t) => {
  const s = await startTestServer(t);
  await loadFixture(s);
  const cases: [string, string[]][] = [
    // o5 has a systolic component (90) and another component above 100 (140): not a match.
    ['Observation?component-code-value-quantity=http://loinc.org|8480-6$gt100', ['Observation/o1', 'Observation/o2']],
    ['Observation?component-code-value-quantity=8480-6$gt100', ['Observation/o1', 'Observation/o2']],
    ['Observation?component-code-value-quantity=8480-6$lt100', ['Observation/o5']],
    ['Observation?component-code-value-quantity=8462-4$gt100', ['Observation/o5']],
    ['Observation?component-code-value-quantity=http://loinc.org|8480-6$120|http://unitsofmeasure.org|mm[Hg]', ['Observation/o1']],
    ['Observation?component-code-value-quantity=http://loinc.org|8480-6$120||mg', []],
    ['Observation?component-code-value-quantity=http://other|8480-6$gt100', []],
    ['Observation?component-code-value-quantity=8480-6$gt140,8462-4$lt85', ['Observation/o1', 'Observation/o2']],
    ['Observation?component-code-value-quantity=8480-6$gt100&component-code-value-quantity=8462-4$gt90', ['Observation/o2']],
    ['Observation?component-code-value-quantity=8480-6$gt100&subject=Patient/p1', ['Observation/o1']],
    ['Observation?code-value-quantity=1234-5$gt5', ['Observation/o3']],
    ['Observation?code-value-quantity=http://loinc.org|1234-5$7', ['Observation/o3']],
    ['Observation?code-value-quantity=1234-5$le3', ['Observation/o4']],
    ['Observation?code-value-quantity=85354-9$gt0', [], 'the panel has no value of its own'],
    ['Observation?combo-code-value-quantity=8462-4$gt90', ['Observation/o2', 'Observation/o5']],
    ['Observation?combo-code-value-quantity=1234-5$gt1', ['Observation/o3', 'Observation/o4']],
    ['Observation?combo-code-value-quantity=1234-5$gt100', []],
    ['Observation?code-value-quantity:missing=false', ['Observation/o3', 'Observation/o4']],
    ['Observation?code-value-quantity:missing=true', ['Observation/o1', 'Observation/o2', 'Observation/o5']],
    ['Observation?component-code-value-quantity:missing=true', ['Observation/o3', 'Observation/o4']],
  ].map(([q, e]) => [q as string, e as string[]]);
  for (const [query, expected] of cases) {
    const res = await s.fhir('GET', query);
    t.equal(res.status, 200, query);
    t.same(ids(res.json), expected, query);
    t.equal(res.json.total, expected.length);
  }
  // Composites inside chains and _has.
  t.same(
    ids((await s.fhir('GET', 'Patient?_has:Observation:subject:component-code-value-quantity=8480-6$lt100')).json),
    ['Patient/p2'],
  );
  // An update re-indexes the groups.
  await s.fhir('PUT', 'Observation/o5', {
    resourceType: 'Observation',
    id: 'o5',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '85354-9' }] },
    subject: { reference: 'Patient/p2' },
    component: [{ code: { coding: [{ system: 'http://loinc.org', code: '8480-6' }] }, valueQuantity: { value: 101 } }],
  });
  t.same(ids((await s.fhir('GET', 'Observation?component-code-value-quantity=8480-6$lt100')).json), []);
  t.same(ids((await s.fhir('GET', 'Observation?component-code-value-quantity=8480-6$101')).json), ['Observation/o5']);
});

t.test('identifier:of-type', async (t) => {
  const s = await startTestServer(t);
  await loadFixture(s);
  const cases: [string, string[]][] = [
    [`Patient?identifier:of-type=${V2_0203}|MR|12345`, ['Patient/p1']],
    [`Patient?identifier:of-type=${V2_0203}|DL|12345`, ['Patient/p2']],
    // p1 has an MR identifier and a 999 identifier, but 999 is its DL.
    [`Patient?identifier:of-type=${V2_0203}|MR|999`, []],
    [`Patient?identifier:of-type=${V2_0203}|DL|999`, ['Patient/p1']],
    ['Patient?identifier:of-type=|MR|12345', ['Patient/p1'], ],
    ['Patient?identifier:of-type=http://other|MR|12345', []],
    [`Patient?identifier:of-type=${V2_0203}|MR|12345,${V2_0203}|DL|12345`, ['Patient/p1', 'Patient/p2']],
    ['Patient?identifier=12345', ['Patient/p1', 'Patient/p2']],
    [`Observation?subject:Patient.identifier:of-type=${V2_0203}|MR|12345`, ['Observation/o1', 'Observation/o3']],
  ];
  for (const [query, expected] of cases) {
    const res = await s.fhir('GET', query.replaceAll('|', '%7C'));
    t.equal(res.status, 200, query);
    t.same(ids(res.json), expected, query);
  }
});
