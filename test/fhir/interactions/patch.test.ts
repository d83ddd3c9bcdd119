/**
 * patch — http://hl7.org/fhir/R4/http.html#patch with JSON Patch (RFC 6902), and conditional
 * patch (http://hl7.org/fhir/R4/http.html#cond-patch … PATCH [base]/[type]?criteria).
 */
import t from 'tap';
import { issueCodes, startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { JSON_PATCH, TYPE_CASES, type TypeCase } from './examples.ts';

async function make(s: TestServer, c: TypeCase, key = 'p1'): Promise<any> {
  const res = await s.fhir('POST', c.type, c.mark(c.revise(c.example(), 1), key));
  if (res.status !== 201) throw new Error(`create ${c.type}: ${res.status}`);
  return res.json;
}

async function version(s: TestServer, type: string, id: string): Promise<string> {
  return (await s.fhir('GET', `${type}/${id}`)).json.meta.versionId;
}

t.test('replace, add, remove and a passing test, per type', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const resource = await make(s, c);
    const id = resource.id;
    const revised = c.revise(resource, 7);
    // Whatever field `revise` touches: add it whole (add replaces an existing member).
    const field = Object.keys(revised).find((k) => JSON.stringify(revised[k]) !== JSON.stringify(resource[k]))!;
    const res = await s.fhir(
      'PATCH',
      `${c.type}/${id}`,
      [
        { op: 'test', path: '/resourceType', value: c.type },
        { op: 'add', path: `/${field}`, value: revised[field] },
        { op: 'add', path: '/language', value: 'en' },
      ],
      JSON_PATCH,
    );
    t.equal(res.status, 200, c.type);
    t.equal(res.json.meta.versionId, '2');
    t.equal(res.headers.etag, 'W/"2"');
    t.equal(res.headers.location, `${s.config.baseUrl}/${c.type}/${id}/_history/2`);
    t.same(c.revision(res.json), c.revision(revised));
    t.equal(res.json.language, 'en');
    const removed = await s.fhir(
      'PATCH',
      `${c.type}/${id}`,
      [
        { op: 'remove', path: '/language' },
        { op: 'replace', path: `/${field}`, value: resource[field] },
      ],
      JSON_PATCH,
    );
    t.equal(removed.status, 200);
    t.notOk('language' in removed.json);
    t.same(c.revision(removed.json), c.revision(resource));
    const read = await s.fhir('GET', `${c.type}/${id}`);
    t.same(read.json, removed.json, 'the patched version is what is stored');
    const history = await s.fhir('GET', `${c.type}/${id}/_history`);
    t.same(
      history.json.entry.map((e: any) => e.request.method),
      ['PATCH', 'PATCH', 'POST'],
    );
  }
});

t.test('a patch cannot touch meta.versionId or lastUpdated', async (t) => {
  const s = await startTestServer(t);
  const p = await make(s, TYPE_CASES[0]!);
  const res = await s.fhir(
    'PATCH',
    `Patient/${p.id}`,
    [
      { op: 'replace', path: '/meta/versionId', value: '99' },
      { op: 'replace', path: '/meta/lastUpdated', value: '2000-01-01T00:00:00Z' },
    ],
    JSON_PATCH,
  );
  t.equal(res.status, 200);
  t.equal(res.json.meta.versionId, '2');
  t.not(res.json.meta.lastUpdated, '2000-01-01T00:00:00Z');
});

t.test('failures: nothing is stored', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const { id } = await make(s, c);
    const url = `${c.type}/${id}`;
    const cases: { name: string; body: unknown; headers?: Record<string, string>; status: number; code: string }[] = [
      { name: 'failed test op', body: [{ op: 'test', path: '/resourceType', value: 'Basic' }], status: 422, code: 'VLM_FHIR_PATCH_TEST_FAILED' },
      {
        name: 'failed test after a replace',
        body: [
          { op: 'add', path: '/language', value: 'en' },
          { op: 'test', path: '/language', value: 'fr' },
        ],
        status: 422,
        code: 'VLM_FHIR_PATCH_TEST_FAILED',
      },
      { name: 'unknown op', body: [{ op: 'frobnicate', path: '/language' }], status: 400, code: 'VLM_FHIR_PATCH_INVALID' },
      { name: 'op without path', body: [{ op: 'add', value: 1 }], status: 400, code: 'VLM_FHIR_PATCH_INVALID' },
      { name: 'path without slash', body: [{ op: 'add', path: 'language', value: 'en' }], status: 400, code: 'VLM_FHIR_PATCH_INVALID' },
      { name: 'remove a missing member', body: [{ op: 'remove', path: '/nonexistent' }], status: 400, code: 'VLM_FHIR_PATCH_INVALID' },
      { name: 'not an array', body: { op: 'add', path: '/language', value: 'en' }, status: 400, code: 'VLM_FHIR_PATCH_NOT_ARRAY' },
      { name: 'array of junk', body: [null, 1, 'x'], status: 400, code: 'VLM_FHIR_PATCH_INVALID' },
      { name: 'prototype path', body: [{ op: 'add', path: '/__proto__/polluted', value: 1 }], status: 400, code: 'VLM_FHIR_PATCH_INVALID' },
      { name: 'constructor path', body: [{ op: 'add', path: '/constructor/prototype/polluted', value: 1 }], status: 400, code: 'VLM_FHIR_PATCH_INVALID' },
      { name: 'changes the id', body: [{ op: 'replace', path: '/id', value: 'other' }], status: 422, code: 'VLM_FHIR_PATCH_IDENTITY' },
      { name: 'removes the id', body: [{ op: 'remove', path: '/id' }], status: 422, code: 'VLM_FHIR_PATCH_IDENTITY' },
      { name: 'changes the type', body: [{ op: 'replace', path: '/resourceType', value: 'Basic' }], status: 422, code: 'VLM_FHIR_PATCH_IDENTITY' },
      { name: 'replaces the root with an array', body: [{ op: 'replace', path: '', value: [] }], status: 422, code: 'VLM_FHIR_PATCH_NOT_RESOURCE' },
      { name: 'result is invalid', body: [{ op: 'add', path: '/implicitRules', value: 42 }], status: 400, code: 'VLM_FHIR_INVALID_RESOURCE' },
      { name: 'result has an unknown element', body: [{ op: 'add', path: '/colour', value: 'blue' }], status: 400, code: 'VLM_FHIR_INVALID_RESOURCE' },
      { name: 'wrong content type', body: [{ op: 'add', path: '/language', value: 'en' }], headers: { 'content-type': 'application/fhir+json' }, status: 415, code: 'VLM_FHIR_PATCH_MEDIA_TYPE' },
      { name: 'json content type', body: [{ op: 'add', path: '/language', value: 'en' }], headers: { 'content-type': 'application/json' }, status: 415, code: 'VLM_FHIR_PATCH_MEDIA_TYPE' },
      { name: 'malformed JSON', body: '[{"op":', headers: JSON_PATCH, status: 400, code: 'VLM_FHIR_JSON_SYNTAX' },
      { name: 'stale If-Match', body: [{ op: 'add', path: '/language', value: 'en' }], headers: { ...JSON_PATCH, 'if-match': 'W/"7"' }, status: 412, code: 'VLM_FHIR_VERSION_MISMATCH' },
      { name: 'malformed If-Match', body: [{ op: 'add', path: '/language', value: 'en' }], headers: { ...JSON_PATCH, 'if-match': 'seven' }, status: 400, code: 'VLM_FHIR_BAD_IF_MATCH' },
    ];
    for (const k of cases) {
      const res = await s.fhir('PATCH', url, k.body, k.headers ?? JSON_PATCH);
      t.equal(res.status, k.status, `${c.type}: ${k.name}`);
      t.ok(vellumCodes(res.json).includes(k.code), `${c.type}: ${k.name} → ${k.code}`, { got: vellumCodes(res.json) });
    }
    t.equal(await version(s, c.type, id), '1', `${c.type}: no failed patch made a version`);
    t.equal((await s.fhir('GET', `${c.type}/${id}/_history`)).json.total, 1);
  }
});

t.test('If-Match is honoured', async (t) => {
  const s = await startTestServer(t);
  const { id } = await make(s, TYPE_CASES[0]!);
  const ok = await s.fhir('PATCH', `Patient/${id}`, [{ op: 'replace', path: '/gender', value: 'female' }], { ...JSON_PATCH, 'if-match': 'W/"1"' });
  t.equal(ok.status, 200);
  t.equal(ok.json.gender, 'female');
  const stale = await s.fhir('PATCH', `Patient/${id}`, [{ op: 'replace', path: '/gender', value: 'other' }], { ...JSON_PATCH, 'if-match': 'W/"1"' });
  t.equal(stale.status, 412);
  t.same(issueCodes(stale.json), ['conflict']);
  t.equal((await s.fhir('GET', `Patient/${id}`)).json.gender, 'female');
});

t.test('patching what is not there', async (t) => {
  const s = await startTestServer(t);
  const op = [{ op: 'add', path: '/language', value: 'en' }];
  const missing = await s.fhir('PATCH', 'Patient/never-was', op, JSON_PATCH);
  t.equal(missing.status, 404);
  t.same(vellumCodes(missing.json), ['VLM_FHIR_NOT_FOUND']);
  const { id } = await make(s, TYPE_CASES[0]!);
  t.equal((await s.fhir('DELETE', `Patient/${id}`)).status, 204);
  const gone = await s.fhir('PATCH', `Patient/${id}`, op, JSON_PATCH);
  t.equal(gone.status, 410);
  t.same(vellumCodes(gone.json), ['VLM_FHIR_DELETED']);
  t.equal((await s.fhir('GET', `Patient/${id}/_history`)).json.total, 2, 'no version after the deletion');
});

t.test('Prefer on patch', async (t) => {
  const s = await startTestServer(t);
  const { id } = await make(s, TYPE_CASES[0]!);
  const minimal = await s.fhir('PATCH', `Patient/${id}`, [{ op: 'add', path: '/language', value: 'en' }], { ...JSON_PATCH, prefer: 'return=minimal' });
  t.equal(minimal.status, 200);
  t.equal(minimal.text, '');
  t.equal(minimal.headers.etag, 'W/"2"');
  const outcome = await s.fhir('PATCH', `Patient/${id}`, [{ op: 'add', path: '/language', value: 'fr' }], { ...JSON_PATCH, prefer: 'return=OperationOutcome' });
  t.equal(outcome.status, 200);
  t.equal(outcome.json.resourceType, 'OperationOutcome');
  t.same(issueCodes(outcome.json), ['informational']);
});

t.test('conditional patch', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const one = await make(s, c, `${c.type}-one`);
    await make(s, c, `${c.type}-two`);
    await make(s, c, `${c.type}-two`);
    const op = [{ op: 'add', path: '/language', value: 'en' }];

    const res = await s.fhir('PATCH', `${c.type}?${c.criteria(`${c.type}-one`)}`, op, JSON_PATCH);
    t.equal(res.status, 200, `${c.type}: one match is patched`);
    t.equal(res.json.id, one.id);
    t.equal(res.json.language, 'en');

    const none = await s.fhir('PATCH', `${c.type}?${c.criteria(`${c.type}-none`)}`, op, JSON_PATCH);
    t.equal(none.status, 404, `${c.type}: no match`);
    t.same(vellumCodes(none.json), ['VLM_FHIR_NOT_FOUND']);

    const several = await s.fhir('PATCH', `${c.type}?${c.criteria(`${c.type}-two`)}`, op, JSON_PATCH);
    t.equal(several.status, 412, `${c.type}: several matches`);
    t.same(issueCodes(several.json), ['multiple-matches']);

    const unknown = await s.fhir('PATCH', `${c.type}?no-such-param=1`, op, JSON_PATCH);
    t.equal(unknown.status, 400, `${c.type}: unknown criteria parameter`);
    t.same(vellumCodes(unknown.json), ['VLM_FHIR_UNKNOWN_PARAMETER']);

    const empty = await s.fhir('PATCH', c.type, op, JSON_PATCH);
    t.equal(empty.status, 412, `${c.type}: no criteria`);
    t.same(vellumCodes(empty.json), ['VLM_FHIR_CRITERIA_EMPTY']);

    t.equal((await s.fhir('GET', `${c.type}/_history`)).json.total, 4, `${c.type}: only the one patch was recorded`);
  }
});
