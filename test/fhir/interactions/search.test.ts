/**
 * search through HTTP — http://hl7.org/fhir/R4/http.html#search: the searchset Bundle, paging,
 * unknown and malformed parameters (http://hl7.org/fhir/R4/search.html#errors), and POST _search.
 */
import t from 'tap';
import { issueCodes, startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { TYPE_CASES, relative } from './examples.ts';

async function postSearch(s: TestServer, path: string, form: string, headers: Record<string, string> = {}) {
  const res = await s.app.inject({
    method: 'POST',
    url: `/fhir/${path}`,
    headers: { accept: 'application/fhir+json', 'content-type': 'application/x-www-form-urlencoded', ...headers },
    payload: form,
  });
  return { status: res.statusCode, headers: res.headers, json: res.body ? JSON.parse(res.body) : undefined };
}

const matches = (bundle: any) => (bundle.entry ?? []).filter((e: any) => e.search?.mode === 'match');
const outcomes = (bundle: any) => (bundle.entry ?? []).filter((e: any) => e.search?.mode === 'outcome');

t.test('searchset shape, per type', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const made = [];
    for (let i = 0; i < 3; i++) made.push((await s.fhir('POST', c.type, c.mark(c.revise(c.example(), i), `${c.type}-s`))).json);
    await s.fhir('POST', c.type, c.mark(c.example(), `${c.type}-other`));
    const gone = (await s.fhir('POST', c.type, c.mark(c.example(), `${c.type}-s`))).json;
    await s.fhir('DELETE', `${c.type}/${gone.id}`);

    const res = await s.fhir('GET', `${c.type}?${c.criteria(`${c.type}-s`)}`);
    t.equal(res.status, 200, c.type);
    t.equal(res.json.resourceType, 'Bundle');
    t.equal(res.json.type, 'searchset');
    t.equal(res.json.total, 3, 'deleted and non-matching resources are not found');
    t.same(matches(res.json).map((e: any) => e.resource.id).sort(), made.map((r) => r.id).sort());
    for (const e of matches(res.json)) {
      t.equal(e.fullUrl, `${s.config.baseUrl}/${c.type}/${e.resource.id}`);
      t.same(e.search, { mode: 'match' });
      t.same(e.resource, made.find((r) => r.id === e.resource.id), 'the current version');
    }
    t.ok(res.json.link.find((l: any) => l.relation === 'self'));
    t.same(outcomes(res.json), []);

    const byId = await s.fhir('GET', `${c.type}?_id=${made[1].id}`);
    t.same(matches(byId.json).map((e: any) => e.resource.id), [made[1].id]);
    const none = await s.fhir('GET', `${c.type}?${c.criteria(`${c.type}-nobody`)}`);
    t.equal(none.json.total, 0);
    t.same(none.json.entry ?? [], []);
  }
});

t.test('_count and next links', async (t) => {
  const s = await startTestServer(t);
  const ids = [];
  for (let i = 0; i < 7; i++) ids.push((await s.fhir('POST', 'Practitioner', TYPE_CASES[5]!.revise(TYPE_CASES[5]!.example(), i))).json.id);
  // `total` costs every match: given when asked for, or when the first page holds the whole result.
  const accurate = await s.fhir('GET', 'Practitioner?_count=3&_total=accurate');
  t.equal(accurate.json.total, 7, '_total=accurate counts');
  t.equal((await s.fhir('GET', 'Practitioner?_count=3&_total=estimate')).json.total, 7, '_total=estimate counts (few matches)');
  t.equal((await s.fhir('GET', 'Practitioner?_count=7')).json.total, 7, 'the whole result on the first page: total given');
  t.equal((await s.fhir('GET', 'Practitioner')).json.total, 7, 'default page size');
  let page = await s.fhir('GET', 'Practitioner?_count=3');
  t.equal(matches(page.json).length, 3);
  t.notOk('total' in page.json, 'more matches than the page and no _total: no total');
  const seen: string[] = [];
  let pages = 0;
  for (;;) {
    seen.push(...matches(page.json).map((e: any) => e.resource.id));
    pages++;
    const next = page.json.link.find((l: any) => l.relation === 'next');
    if (!next) break;
    t.equal(new URL(next.url).searchParams.get('_count'), '3');
    page = await s.fhir('GET', relative(s.config.baseUrl, next.url));
    t.equal(page.status, 200);
    t.notOk('total' in page.json, 'a later page is not counted either');
  }
  t.equal(pages, 3);
  t.same([...seen].sort(), [...ids].sort(), 'every match exactly once');
  const count = await s.fhir('GET', 'Practitioner?_summary=count');
  t.equal(count.json.total, 7);
  t.same(matches(count.json), [], '_summary=count returns no entries');
  const noTotal = await s.fhir('GET', 'Practitioner?_total=none&_count=2');
  t.notOk('total' in noTotal.json);
  t.ok(noTotal.json.link.some((l: any) => l.relation === 'next'));
  for (const bad of ['_count=many', '_count=-1', '_total=some', '_offset=x']) {
    const res = await s.fhir('GET', `Practitioner?${bad}`);
    t.equal(res.status, 400, bad);
    t.same(vellumCodes(res.json), ['VLM_FHIR_BAD_PARAMETER']);
    t.same(res.json.issue[0].expression, [bad.split('=')[0]]);
  }
});

t.test('unknown parameters: ignored with an outcome, or 400 when strict', async (t) => {
  const s = await startTestServer(t);
  await s.fhir('POST', 'Patient', TYPE_CASES[0]!.example());
  await s.fhir('POST', 'Patient', TYPE_CASES[0]!.revise(TYPE_CASES[0]!.example(), 2));
  const plain = await s.fhir('GET', 'Patient');
  for (const unknown of ['no-such-param=1', 'nonsense:exact=x', '_include=Patient:nope', '_revinclude=Observation:nope', '_has:Observation:subject:nope=1234', 'general-practitioner:Practitioner.nope=x']) {
    const name = unknown.split('=')[0]!;
    const lenient = await s.fhir('GET', `Patient?${unknown}`);
    t.equal(lenient.status, 200, `${name}: lenient`);
    t.equal(lenient.json.total, plain.json.total, 'as if it were absent');
    const [outcome] = outcomes(lenient.json);
    t.ok(outcome, 'an outcome entry reports it');
    t.equal(outcome?.resource.resourceType, 'OperationOutcome');
    t.same(outcome?.resource.issue.map((i: any) => i.severity), ['warning']);
    t.same(issueCodes(outcome?.resource), ['not-supported']);
    t.same(vellumCodes(outcome?.resource), ['VLM_FHIR_UNKNOWN_PARAMETER']);
    t.same(outcome?.resource.issue[0].expression, [name]);
    t.notOk(lenient.json.link.some((l: any) => new URL(l.url).searchParams.has(name)), 'links drop what was ignored');
    const strict = await s.fhir('GET', `Patient?${unknown}`, undefined, { prefer: 'handling=strict' });
    t.equal(strict.status, 400, `${name}: strict`);
    t.same(vellumCodes(strict.json), ['VLM_FHIR_UNKNOWN_PARAMETER']);
    const explicitLenient = await s.fhir('GET', `Patient?${unknown}`, undefined, { prefer: 'handling=lenient' });
    t.equal(explicitLenient.status, 200);
  }
});

t.test('malformed values are 400 naming the parameter', async (t) => {
  const s = await startTestServer(t);
  for (const [path, query] of [
    ['Patient', 'birthdate=not-a-date'],
    ['Patient', 'birthdate=2020-02-30'],
    ['Patient', 'birthdate:exact=2020'],
    ['Patient', 'name:fuzzy=x'],
    ['Patient', '_lastUpdated=xx2020'],
    ['Patient', 'gender:missing=maybe'],
    ['Observation', 'value-quantity=heavy'],
    ['Observation', 'value-quantity=5|a|b|c'],
    ['Observation', 'subject=NoSuchType/123'],
    ['RiskAssessment', 'probability=lots'],
    ['Patient', '_sort=no-such-param'],
    ['MedicationRequest', 'authoredon=gt'],
    ['Consent', 'date=2020-01-01T25:00:00Z'],
    ['AuditEvent', 'date=yesterday'],
  ] as const) {
    const res = await s.fhir('GET', `${path}?${query}`);
    t.equal(res.status, 400, `${path}?${query}`);
    t.same(vellumCodes(res.json), ['VLM_FHIR_BAD_SEARCH_PARAMETER']);
    t.same(res.json.issue[0].expression, [query.split('=')[0]], 'names the parameter');
  }
  // one bad value among good ones still fails, naming only the bad one
  const mixed = await s.fhir('GET', 'Patient?family=x&birthdate=soon&gender=male');
  t.equal(mixed.status, 400);
  t.same(mixed.json.issue.map((i: any) => i.expression), [['birthdate']]);
});

t.test('a search too large to plan is refused, not failed', async (t) => {
  const s = await startTestServer(t);
  const ids = (n: number) => Array.from({ length: n }, (_, i) => `id-${i}`);
  const fine = await s.fhir('GET', `Patient?_id=${ids(1000).join(',')}`);
  t.equal(fine.status, 200, '1,000 OR values');
  const fineAnds = await s.fhir('GET', `Patient?${ids(1000).map((v) => `name=${v}`).join('&')}`);
  t.equal(fineAnds.status, 200, '1,000 AND values');
  const ors = await s.fhir('GET', `Patient?_id=${ids(1001).join(',')}`);
  t.equal(ors.status, 400, '1,001 OR values');
  t.same(issueCodes(ors.json), ['too-costly']);
  t.same(vellumCodes(ors.json), ['VLM_FHIR_SEARCH_TOO_COMPLEX']);
  const ands = await s.fhir('GET', `Patient?${ids(1001).map((v) => `name=${v}`).join('&')}`);
  t.equal(ands.status, 400, '1,001 AND values');
  t.same(vellumCodes(ands.json), ['VLM_FHIR_SEARCH_TOO_COMPLEX']);
  const conditional = await s.fhir('DELETE', `Patient?_id=${ids(1001).join(',')}`);
  t.equal(conditional.status, 400, 'conditional criteria too');
});

t.test('POST _search returns exactly what GET returns', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    for (let i = 0; i < 4; i++) await s.fhir('POST', c.type, c.mark(c.revise(c.example(), i), `${c.type}-post`));
    const criteria = c.criteria(`${c.type}-post`);
    for (const extra of ['', '&_count=2', '&_count=2&_offset=2', '&_summary=count', '&_elements=id', '&_sort=_lastUpdated']) {
      const query = `${criteria}${extra}`;
      const get = await s.fhir('GET', `${c.type}?${query}`);
      const post = await postSearch(s, `${c.type}/_search`, query);
      t.equal(post.status, 200, `${c.type} POST _search ${extra}`);
      t.same(post.json, get.json, `${c.type}: POST ${query} equals GET`);
    }
    // parameters split between the URL and the form are merged
    const [name, value] = [criteria.slice(0, criteria.indexOf('=')), criteria.slice(criteria.indexOf('=') + 1)];
    const split = await postSearch(s, `${c.type}/_search?_count=2`, `${name}=${value}`);
    t.same(split.json, (await s.fhir('GET', `${c.type}?_count=2&${criteria}`)).json);
  }
  const badForm = await postSearch(s, 'Patient/_search', 'birthdate=nope');
  t.equal(badForm.status, 400);
  t.same(badForm.json.issue[0].expression, ['birthdate']);
  const strict = await postSearch(s, 'Patient/_search', 'no-such-param=1', { prefer: 'handling=strict' });
  t.equal(strict.status, 400);
  const json = await s.fhir('POST', 'Patient/_search', { resourceType: 'Parameters' });
  t.equal(json.status, 415, 'POST _search takes a form');
  t.same(vellumCodes(json.json), ['VLM_FHIR_UNSUPPORTED_MEDIA_TYPE']);
});
