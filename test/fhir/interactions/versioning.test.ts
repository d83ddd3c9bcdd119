/**
 * Versioning headers and conditional requests: ETag / Last-Modified / Location
 * (http://hl7.org/fhir/R4/http.html#versioning), If-Match (http://hl7.org/fhir/R4/http.html#concurrency),
 * If-None-Match and If-Modified-Since (http://hl7.org/fhir/R4/http.html#cread).
 */
import t from 'tap';
import { issueCodes, startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { JSON_PATCH, TYPE_CASES } from './examples.ts';

async function current(s: TestServer, type: string, id: string): Promise<any> {
  return (await s.fhir('GET', `${type}/${id}`)).json;
}

t.test('ETag, Last-Modified and Location follow every write', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const created = await s.fhir('POST', c.type, c.example());
    const id = created.json.id;
    const steps = [
      created,
      await s.fhir('PUT', `${c.type}/${id}`, { ...c.revise(c.example(), 2), id }),
      await s.fhir('PATCH', `${c.type}/${id}`, [{ op: 'add', path: '/language', value: 'en' }], JSON_PATCH),
    ];
    steps.forEach((res, i) => {
      const v = i + 1;
      t.equal(res.headers.etag, `W/"${v}"`, `${c.type} v${v} ETag`);
      t.equal(res.headers.location, `${s.config.baseUrl}/${c.type}/${id}/_history/${v}`);
      t.equal(res.json.meta.versionId, String(v));
      t.equal(new Date(String(res.headers['last-modified'])).toUTCString(), res.headers['last-modified'], 'an HTTP date');
      t.equal(Date.parse(String(res.headers['last-modified'])), Math.floor(Date.parse(res.json.meta.lastUpdated) / 1000) * 1000);
    });
    const read = await s.fhir('GET', `${c.type}/${id}`);
    t.equal(read.headers.etag, 'W/"3"');
    t.equal(read.headers['last-modified'], steps[2]!.headers['last-modified']);
    const vread = await s.fhir('GET', `${c.type}/${id}/_history/2`);
    t.equal(vread.headers.etag, 'W/"2"');
    t.equal(vread.headers['last-modified'], steps[1]!.headers['last-modified']);
  }
});

t.test('If-Match on update, patch and delete', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const { id } = (await s.fhir('PUT', `${c.type}/im-${c.type}`, { ...c.revise(c.example(), 1), id: `im-${c.type}` })).json;
    const url = `${c.type}/${id}`;

    const ok = await s.fhir('PUT', url, { ...c.revise(c.example(), 2), id }, { 'if-match': 'W/"1"' });
    t.equal(ok.status, 200, `${c.type}: matching If-Match`);
    const strong = await s.fhir('PUT', url, { ...c.revise(c.example(), 3), id }, { 'if-match': '"2"' });
    t.equal(strong.status, 200, 'a strong ETag of the current version matches too');

    for (const [name, request] of [
      ['update', () => s.fhir('PUT', url, { ...c.revise(c.example(), 9), id }, { 'if-match': 'W/"1"' })],
      ['patch', () => s.fhir('PATCH', url, [{ op: 'add', path: '/language', value: 'en' }], { ...JSON_PATCH, 'if-match': 'W/"2"' })],
      ['delete', () => s.fhir('DELETE', url, undefined, { 'if-match': 'W/"4"' })],
    ] as const) {
      const res = await request();
      t.equal(res.status, 412, `${c.type}: stale If-Match on ${name}`);
      t.same(issueCodes(res.json), ['conflict']);
      t.same(vellumCodes(res.json), ['VLM_FHIR_VERSION_MISMATCH']);
      const now = await current(s, c.type, id);
      t.equal(now.meta.versionId, '3', 'nothing changed');
      t.same(c.revision(now), c.revision(c.revise(c.example(), 3)));
    }
    for (const bad of ['3', 'W/3', 'W/"three"', '"3', 'W/""', 'W/"3" garbage']) {
      const res = await s.fhir('PUT', url, { ...c.revise(c.example(), 9), id }, { 'if-match': bad });
      t.equal(res.status, 400, `${c.type}: malformed If-Match ${bad}`);
      t.same(vellumCodes(res.json), ['VLM_FHIR_BAD_IF_MATCH']);
    }
    const any = await s.fhir('PUT', url, { ...c.revise(c.example(), 4), id }, { 'if-match': '*' });
    t.equal(any.status, 200, 'If-Match: * matches any current version');
    t.equal((await current(s, c.type, id)).meta.versionId, '4');

    const deleted = await s.fhir('DELETE', url, undefined, { 'if-match': 'W/"4"' });
    t.equal(deleted.status, 204, `${c.type}: delete with the current ETag`);
    t.equal(deleted.headers.etag, 'W/"5"', 'the deletion has an ETag of its own');
    for (const stale of ['W/"4"', '*']) {
      const res = await s.fhir('PUT', url, { ...c.example(), id }, { 'if-match': stale });
      t.equal(res.status, 412, `${c.type}: If-Match ${stale} on a deleted resource`);
    }
    t.equal((await s.fhir('GET', url)).status, 410, 'still deleted');
    // "servers MAY include an ETag on the delete response to allow version contention
    // management when a resource is brought back to life" (http.html#delete)
    const revived = await s.fhir('PUT', url, { ...c.revise(c.example(), 6), id }, { 'if-match': 'W/"5"' });
    t.equal(revived.status, 201, `${c.type}: If-Match with the deletion's ETag brings it back`);
    t.equal(revived.json.meta.versionId, '6');
    t.equal((await s.fhir('GET', url)).status, 200);
  }
});

t.test('If-Match on a resource that does not exist', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const url = `${c.type}/absent-${c.type}`;
    for (const header of ['W/"1"', '*']) {
      const put = await s.fhir('PUT', url, { ...c.example(), id: `absent-${c.type}` }, { 'if-match': header });
      t.equal(put.status, 412, `${c.type}: PUT with If-Match ${header}`);
      t.same(vellumCodes(put.json), ['VLM_FHIR_VERSION_MISMATCH']);
      const del = await s.fhir('DELETE', url, undefined, { 'if-match': header });
      t.equal(del.status, 412, `${c.type}: DELETE with If-Match ${header}`);
    }
    t.equal((await s.fhir('GET', url)).status, 404, 'nothing was created');
  }
});

t.test('If-None-Match and If-Modified-Since on read and vread', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const created = await s.fhir('POST', c.type, c.example());
    const id = created.json.id;
    const updated = await s.fhir('PUT', `${c.type}/${id}`, { ...c.revise(c.example(), 2), id });
    const url = `${c.type}/${id}`;

    const same = await s.fhir('GET', url, undefined, { 'if-none-match': 'W/"2"' });
    t.equal(same.status, 304, `${c.type}: If-None-Match of the current version`);
    t.equal(same.text, '', 'no body');
    t.equal(same.headers.etag, 'W/"2"');
    t.equal((await s.fhir('GET', url, undefined, { 'if-none-match': '"2"' })).status, 304, 'weak comparison');
    t.equal((await s.fhir('GET', url, undefined, { 'if-none-match': 'W/"9", W/"2"' })).status, 304, 'one of a list');
    t.equal((await s.fhir('GET', url, undefined, { 'if-none-match': '*' })).status, 304);
    const old = await s.fhir('GET', url, undefined, { 'if-none-match': 'W/"1"' });
    t.equal(old.status, 200, `${c.type}: If-None-Match of an older version`);
    t.same(old.json, updated.json);

    t.equal((await s.fhir('GET', `${url}/_history/1`, undefined, { 'if-none-match': 'W/"1"' })).status, 304, 'vread 304');
    t.equal((await s.fhir('GET', `${url}/_history/1`, undefined, { 'if-none-match': 'W/"2"' })).status, 200, 'vread 200');

    const lastModified = Date.parse(String(updated.headers['last-modified']));
    const later = new Date(lastModified + 60_000).toUTCString();
    const exactly = new Date(lastModified).toUTCString();
    const earlier = new Date(lastModified - 60_000).toUTCString();
    t.equal((await s.fhir('GET', url, undefined, { 'if-modified-since': later })).status, 304, `${c.type}: not modified since later`);
    t.equal((await s.fhir('GET', url, undefined, { 'if-modified-since': exactly })).status, 304, 'not modified since its own Last-Modified');
    const changed = await s.fhir('GET', url, undefined, { 'if-modified-since': earlier });
    t.equal(changed.status, 200, 'modified since earlier');
    t.same(changed.json, updated.json);
    t.equal((await s.fhir('GET', url, undefined, { 'if-modified-since': 'not a date' })).status, 200, 'an unreadable date is ignored');
    // If-None-Match takes precedence over If-Modified-Since (RFC 9110 §13.1.3)
    t.equal((await s.fhir('GET', url, undefined, { 'if-none-match': 'W/"1"', 'if-modified-since': later })).status, 200);
  }
});
