/**
 * Conditional create (http://hl7.org/fhir/R4/http.html#ccreate), conditional update
 * (http://hl7.org/fhir/R4/http.html#cond-update) and conditional delete
 * (http://hl7.org/fhir/R4/http.html#cdelete): no match, one match, several matches.
 */
import t from 'tap';
import { issueCodes, startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { TYPE_CASES, type TypeCase } from './examples.ts';

async function typeTotal(s: TestServer, type: string): Promise<number> {
  return (await s.fhir('GET', `${type}/_history`)).json.total;
}

async function make(s: TestServer, c: TypeCase, key: string, n = 1): Promise<any> {
  const res = await s.fhir('POST', c.type, c.mark(c.revise(c.example(), n), key));
  if (res.status !== 201) throw new Error(`create ${c.type}: ${res.status}`);
  return res.json;
}

t.test('conditional create (If-None-Exist)', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    await t.test(c.type, async (t) => {
      const body = c.mark(c.revise(c.example(), 1), `${c.type}-cc`);
      const criteria = c.criteria(`${c.type}-cc`);

      const first = await s.fhir('POST', c.type, body, { 'if-none-exist': criteria });
      t.equal(first.status, 201, 'no match: created');
      t.equal(first.json.meta.versionId, '1');

      const second = await s.fhir('POST', c.type, c.revise(body, 2), { 'if-none-exist': criteria });
      t.equal(second.status, 200, 'one match: the existing resource');
      t.equal(second.json.id, first.json.id);
      t.equal(second.json.meta.versionId, '1', 'unchanged');
      t.same(c.revision(second.json), c.revision(body));
      t.equal(second.headers.etag, 'W/"1"');
      t.ok(String(second.headers.location).startsWith(`${s.config.baseUrl}/${c.type}/${first.json.id}`));

      // a full search URL is accepted as criteria too
      const asUrl = await s.fhir('POST', c.type, body, { 'if-none-exist': `${c.type}?${criteria}` });
      t.equal(asUrl.status, 200);
      t.equal(asUrl.json.id, first.json.id);

      await make(s, c, `${c.type}-cc`); // now two match
      const before = await typeTotal(s, c.type);
      const third = await s.fhir('POST', c.type, body, { 'if-none-exist': criteria });
      t.equal(third.status, 412, 'several matches');
      t.same(issueCodes(third.json), ['multiple-matches']);
      t.same(vellumCodes(third.json), ['VLM_FHIR_MULTIPLE_MATCHES']);

      const unknown = await s.fhir('POST', c.type, body, { 'if-none-exist': 'no-such-param=1' });
      t.equal(unknown.status, 400, 'unknown criteria parameter');
      t.same(vellumCodes(unknown.json), ['VLM_FHIR_UNKNOWN_PARAMETER']);
      const malformed = await s.fhir('POST', c.type, body, { 'if-none-exist': '_lastUpdated=gt-not-a-date' });
      t.equal(malformed.status, 400, 'malformed criteria value');
      t.same(vellumCodes(malformed.json), ['VLM_FHIR_BAD_SEARCH_PARAMETER']);
      t.same(malformed.json.issue[0].expression, ['_lastUpdated']);
      const empty = await s.fhir('POST', c.type, body, { 'if-none-exist': '' });
      t.equal(empty.status, 412, 'no criteria at all');
      t.same(vellumCodes(empty.json), ['VLM_FHIR_CRITERIA_EMPTY']);
      t.equal(await typeTotal(s, c.type), before, 'refused conditional creates stored nothing');
    });
  }
});

t.test('conditional update', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    await t.test(c.type, async (t) => {
      const key = `${c.type}-cu`;
      const url = `${c.type}?${c.criteria(key)}`;

      // no match, no id: created with a server id
      const created = await s.fhir('PUT', url, c.mark(c.revise(c.example(), 1), key));
      t.equal(created.status, 201);
      const id = created.json.id;
      t.equal(created.headers.location, `${s.config.baseUrl}/${c.type}/${id}/_history/1`);

      // one match, no id in the body: that resource is updated
      const updated = await s.fhir('PUT', url, c.mark(c.revise(c.example(), 2), key));
      t.equal(updated.status, 200);
      t.equal(updated.json.id, id);
      t.equal(updated.json.meta.versionId, '2');
      t.same(c.revision(updated.json), c.revision(c.revise(c.example(), 2)));

      // one match, the matching id in the body: updated
      const same = await s.fhir('PUT', url, { ...c.mark(c.revise(c.example(), 3), key), id });
      t.equal(same.status, 200);
      t.equal(same.json.meta.versionId, '3');

      // one match, another id in the body: 400, nothing changes
      const other = await s.fhir('PUT', url, { ...c.mark(c.revise(c.example(), 4), key), id: 'someone-else' });
      t.equal(other.status, 400);
      t.same(vellumCodes(other.json), ['VLM_FHIR_ID_MISMATCH']);
      t.equal((await s.fhir('GET', `${c.type}/${id}`)).json.meta.versionId, '3');
      t.equal((await s.fhir('GET', `${c.type}/someone-else`)).status, 404);

      // If-Match applies to the matched resource
      const stale = await s.fhir('PUT', url, c.mark(c.revise(c.example(), 5), key), { 'if-match': 'W/"1"' });
      t.equal(stale.status, 412);
      const fresh = await s.fhir('PUT', url, c.mark(c.revise(c.example(), 5), key), { 'if-match': 'W/"3"' });
      t.equal(fresh.status, 200);
      t.equal(fresh.json.meta.versionId, '4');

      // no match, an id in the body: update-as-create with that id
      const chosenKey = `${c.type}-cu-chosen`;
      const chosen = await s.fhir('PUT', `${c.type}?${c.criteria(chosenKey)}`, { ...c.mark(c.example(), chosenKey), id: `${c.type.toLowerCase()}-chosen` });
      t.equal(chosen.status, 201);
      t.equal(chosen.json.id, `${c.type.toLowerCase()}-chosen`);

      // no match, but the body id names an existing resource that does not match: refused
      const clash = await s.fhir('PUT', `${c.type}?${c.criteria(`${c.type}-cu-nobody`)}`, { ...c.example(), id });
      t.equal(clash.status, 409);
      t.same(vellumCodes(clash.json), ['VLM_FHIR_ID_EXISTS']);
      t.equal((await s.fhir('GET', `${c.type}/${id}`)).json.meta.versionId, '4');

      // several matches: 412, nothing changes
      await make(s, c, key);
      const before = await typeTotal(s, c.type);
      const several = await s.fhir('PUT', url, c.mark(c.revise(c.example(), 6), key));
      t.equal(several.status, 412);
      t.same(issueCodes(several.json), ['multiple-matches']);

      const unknown = await s.fhir('PUT', `${c.type}?no-such-param=1`, c.example());
      t.equal(unknown.status, 400);
      t.same(vellumCodes(unknown.json), ['VLM_FHIR_UNKNOWN_PARAMETER']);
      const empty = await s.fhir('PUT', c.type, c.example());
      t.equal(empty.status, 412);
      t.same(vellumCodes(empty.json), ['VLM_FHIR_CRITERIA_EMPTY']);
      const invalid = await s.fhir('PUT', `${c.type}?${c.criteria(`${c.type}-cu-invalid`)}`, c.invalid(c.example()));
      t.equal(invalid.status, 400);
      t.ok(vellumCodes(invalid.json).includes('VLM_FHIR_INVALID_RESOURCE'));
      t.equal(await typeTotal(s, c.type), before, 'refused conditional updates stored nothing');
    });
  }
});

t.test('conditional delete', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    await t.test(c.type, async (t) => {
      const one = await make(s, c, `${c.type}-cd-one`);
      await make(s, c, `${c.type}-cd-two`);
      await make(s, c, `${c.type}-cd-two`);

      const deleted = await s.fhir('DELETE', `${c.type}?${c.criteria(`${c.type}-cd-one`)}`);
      t.equal(deleted.status, 204, 'one match: deleted');
      t.equal((await s.fhir('GET', `${c.type}/${one.id}`)).status, 410);
      const search = await s.fhir('GET', `${c.type}?${c.criteria(`${c.type}-cd-one`)}`);
      t.equal(search.json.total, 0, 'no longer found by search');

      const before = await typeTotal(s, c.type);
      const none = await s.fhir('DELETE', `${c.type}?${c.criteria(`${c.type}-cd-one`)}`);
      t.equal(none.status, 204, 'no match: nothing to delete');
      const several = await s.fhir('DELETE', `${c.type}?${c.criteria(`${c.type}-cd-two`)}`);
      t.equal(several.status, 412, 'several matches');
      t.same(issueCodes(several.json), ['multiple-matches']);
      t.equal((await s.fhir('GET', `${c.type}?${c.criteria(`${c.type}-cd-two`)}`)).json.total, 2, 'neither was deleted');
      const unknown = await s.fhir('DELETE', `${c.type}?no-such-param=1`);
      t.equal(unknown.status, 400);
      t.same(vellumCodes(unknown.json), ['VLM_FHIR_UNKNOWN_PARAMETER']);
      const malformed = await s.fhir('DELETE', `${c.type}?_lastUpdated=ge-last-week`);
      t.equal(malformed.status, 400);
      t.same(vellumCodes(malformed.json), ['VLM_FHIR_BAD_SEARCH_PARAMETER']);
      const empty = await s.fhir('DELETE', c.type);
      t.equal(empty.status, 412, 'no criteria: never "delete everything"');
      t.same(vellumCodes(empty.json), ['VLM_FHIR_CRITERIA_EMPTY']);
      t.equal(await typeTotal(s, c.type), before, 'nothing else was recorded');
    });
  }
});
