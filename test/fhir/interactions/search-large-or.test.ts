/**
 * Long OR lists through HTTP — http://hl7.org/fhir/R4/search.html#combining: up to
 * MAX_SEARCH_VALUES (1,000) values on a token (system|code and code only), string, reference or
 * uri parameter are one search returning exactly the matches (GET, POST _search, conditional
 * criteria); one value more is 400 too-costly; and a search the index cannot plan is 400, not 500.
 */
import t from 'tap';
import { MAX_SEARCH_VALUES } from '../../../src/fhir/interactions/search.ts';
import { issueCodes, startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { TEST_SYSTEM, TYPE_CASES } from './examples.ts';
import { testDatabase } from '../../helpers/postgres.ts';

const PATIENT = TYPE_CASES.find((c) => c.type === 'Patient')!;
const OBSERVATION = TYPE_CASES.find((c) => c.type === 'Observation')!;
const PROFILE = 'http://example.org/fhir/StructureDefinition/or-list';

const matches = (bundle: any): string[] =>
  (bundle.entry ?? []).filter((e: any) => e.search?.mode === 'match').map((e: any) => e.resource.id).sort();

/** `n` values: `hits` spread among misses. */
function list(n: number, hits: readonly string[], miss: (i: number) => string): string[] {
  const values = Array.from({ length: n - hits.length }, (_, i) => miss(i));
  hits.forEach((h, k) => values.splice(Math.floor((k * values.length) / hits.length) + k, 0, h));
  return values;
}

const query = (name: string, values: readonly string[]) => `${name}=${values.map((v) => encodeURIComponent(v.replace(/[\\,]/g, (c) => `\\${c}`))).join(',')}`;

async function postSearch(s: TestServer, type: string, form: string) {
  const res = await s.app.inject({
    method: 'POST',
    url: `/fhir/${type}/_search`,
    headers: { accept: 'application/fhir+json', 'content-type': 'application/x-www-form-urlencoded' },
    payload: form,
  });
  return { status: res.statusCode, json: JSON.parse(res.body) };
}

t.test(`${MAX_SEARCH_VALUES} OR values on each parameter kind: 200 and exactly the matches; one more is too costly`, async (t) => {
  t.equal(MAX_SEARCH_VALUES, 1000);
  const s = await startTestServer(t);
  const patients: any[] = [];
  for (let k = 0; k < 4; k++) {
    const patient = {
      ...PATIENT.example(),
      meta: { profile: [`${PROFILE}/${k}`] },
      identifier: [{ system: TEST_SYSTEM, value: `or-${k}` }],
      name: [{ family: `Orfam${k}q`, given: ['Ada'] }],
    };
    const res = await s.fhir('POST', 'Patient', patient);
    t.equal(res.status, 201);
    patients.push(res.json);
  }
  const observations: any[] = [];
  for (const p of patients) {
    const res = await s.fhir('POST', 'Observation', { ...OBSERVATION.example(), subject: { reference: `Patient/${p.id}` } });
    t.equal(res.status, 201);
    observations.push(res.json);
  }
  const ids = (rs: any[], ks: number[]) => ks.map((k) => rs[k].id).sort();

  const cases = [
    {
      kind: 'token system|code',
      type: 'Patient',
      param: 'identifier',
      hits: [`${TEST_SYSTEM}|or-0`, `${TEST_SYSTEM}|or-2`],
      miss: (i: number) => `${TEST_SYSTEM}|none-${i}`,
      expect: ids(patients, [0, 2]),
    },
    {
      kind: 'token code only',
      type: 'Patient',
      param: 'identifier',
      hits: ['or-1', 'or-3'],
      miss: (i: number) => `none-${i}`,
      expect: ids(patients, [1, 3]),
    },
    {
      kind: 'string',
      type: 'Patient',
      param: 'family',
      hits: ['Orfam0', 'orfam3Q'],
      miss: (i: number) => `Nobody${i}`,
      expect: ids(patients, [0, 3]),
    },
    {
      kind: 'reference',
      type: 'Observation',
      param: 'subject',
      hits: [`Patient/${patients[1].id}`, patients[2].id],
      miss: (i: number) => (i % 2 ? `Patient/none-${i}` : `none-${i}`),
      expect: ids(observations, [1, 2]),
    },
    {
      kind: 'uri',
      type: 'Patient',
      param: '_profile',
      hits: [`${PROFILE}/1`],
      miss: (i: number) => `${PROFILE}/none-${i}`,
      expect: ids(patients, [1]),
    },
  ];
  for (const c of cases) {
    const values = list(MAX_SEARCH_VALUES, c.hits, c.miss);
    t.equal(values.length, 1000);
    const get = await s.fhir('GET', `${c.type}?${query(c.param, values)}&_count=100`);
    t.equal(get.status, 200, `${c.kind}: 1,000 values`);
    t.equal(get.json.total, c.expect.length, `${c.kind}: total`);
    t.same(matches(get.json), c.expect, `${c.kind}: exactly the matches`);
    const post = await postSearch(s, c.type, `${query(c.param, values)}&_count=100`);
    t.equal(post.status, 200, `${c.kind}: POST _search`);
    t.same(matches(post.json), c.expect);

    const over = await s.fhir('GET', `${c.type}?${query(c.param, [...values, c.miss(5000)])}`);
    t.equal(over.status, 400, `${c.kind}: 1,001 values`);
    t.same(issueCodes(over.json), ['too-costly']);
    t.same(vellumCodes(over.json), ['VLM_FHIR_SEARCH_TOO_COMPLEX']);
    const overPost = await postSearch(s, c.type, query(c.param, [...values, c.miss(5000)]));
    t.equal(overPost.status, 400, `${c.kind}: 1,001 values by POST`);
  }

  // The cap counts values across parameters: 999 OR values plus one more parameter is fine.
  const identifiers = list(999, [`${TEST_SYSTEM}|or-0`], (i) => `${TEST_SYSTEM}|none-${i}`);
  const mixed = await s.fhir('GET', `Patient?${query('identifier', identifiers)}&family=Orfam`);
  t.equal(mixed.status, 200);
  t.same(matches(mixed.json), ids(patients, [0]));
  const tooMany = await s.fhir('GET', `Patient?${query('identifier', identifiers)}&family=Orfam&gender=female`);
  t.equal(tooMany.status, 400);
  t.same(vellumCodes(tooMany.json), ['VLM_FHIR_SEARCH_TOO_COMPLEX']);
});

t.test('conditional criteria with 1,000 values', async (t) => {
  const s = await startTestServer(t);
  const created = await s.fhir('POST', 'Patient', { ...PATIENT.example(), identifier: [{ system: TEST_SYSTEM, value: 'cond-1' }] });
  t.equal(created.status, 201);
  const values = list(1000, [`${TEST_SYSTEM}|cond-1`], (i) => `${TEST_SYSTEM}|none-${i}`);
  const again = await s.fhir('POST', 'Patient', { ...PATIENT.example(), identifier: [{ system: TEST_SYSTEM, value: 'cond-1' }] }, {
    'if-none-exist': query('identifier', values),
  });
  t.equal(again.status, 200, 'If-None-Exist finds the one match among 1,000 values');
  t.equal(again.json.id, created.json.id);
  const over = await s.fhir('DELETE', `Patient?${query('identifier', [...values, 'one-more'])}`);
  t.equal(over.status, 400, '1,001 values in conditional criteria');
  t.same(vellumCodes(over.json), ['VLM_FHIR_SEARCH_TOO_COMPLEX']);
  t.equal((await s.fhir('GET', `Patient/${created.json.id}`)).status, 200, 'nothing deleted');
});

t.test('a search the index cannot run is 400 invalid, not a server fault', async (t) => {
  const s = await startTestServer(t);
  await s.fhir('POST', 'Patient', PATIENT.example());
  // One value, but a LIKE pattern longer than SQLite's 50,000-byte limit (PostgreSQL has none: it runs).
  const res = await s.fhir('GET', `Patient?name:contains=${'a'.repeat(60_000)}`);
  if (testDatabase() === 'sqlite') {
    t.equal(res.status, 400);
    t.same(issueCodes(res.json), ['invalid']);
    t.same(vellumCodes(res.json), ['VLM_INDEX_QUERY_TOO_COMPLEX']);
  } else {
    t.equal(res.status, 200);
    t.equal(res.json.entry, undefined, 'nothing matches');
  }
  t.equal((await s.fhir('GET', 'Patient?name:contains=a')).status, 200, 'the server carries on');
});
