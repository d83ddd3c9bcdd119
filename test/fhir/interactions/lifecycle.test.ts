/**
 * create, read, vread, update, update-as-create and delete on the types Vellum is most used for
 * (http://hl7.org/fhir/R4/http.html#create … #delete), each with its official R4 example.
 */
import t from 'tap';
import { issueCodes, startTestServer, vellumCodes } from '../../helpers/server.ts';
import { TYPE_CASES } from './examples.ts';

t.test('the full life of a resource, per type', async (t) => {
  const s = await startTestServer(t);
  const base = s.config.baseUrl;

  for (const c of TYPE_CASES) {
    await t.test(c.type, async (t) => {
      // create: the server assigns the id; an id in the body is ignored.
      const body = c.revise({ ...c.example(), id: 'chosen-by-client' }, 1);
      const created = await s.fhir('POST', c.type, body);
      t.equal(created.status, 201);
      const id = created.json.id;
      t.type(id, 'string');
      t.not(id, 'chosen-by-client', 'the server assigns the id');
      t.equal(created.json.resourceType, c.type);
      t.equal(created.json.meta.versionId, '1');
      t.equal(created.headers.etag, 'W/"1"');
      t.equal(created.headers.location, `${base}/${c.type}/${id}/_history/1`);
      t.equal(Date.parse(String(created.headers['last-modified'])), Math.floor(Date.parse(created.json.meta.lastUpdated) / 1000) * 1000);
      t.equal(c.revision(created.json), c.revision(body));
      t.equal((await s.fhir('GET', `${c.type}/chosen-by-client`)).status, 404, 'the body id names nothing');

      // read returns exactly what create returned.
      const read = await s.fhir('GET', `${c.type}/${id}`);
      t.equal(read.status, 200);
      t.same(read.json, created.json);
      t.equal(read.headers.etag, 'W/"1"');
      t.equal(read.headers['last-modified'], created.headers['last-modified']);

      // update: a new version; the old one stays readable by vread.
      const updated = await s.fhir('PUT', `${c.type}/${id}`, { ...c.revise(c.example(), 2), id });
      t.equal(updated.status, 200);
      t.equal(updated.json.meta.versionId, '2');
      t.equal(updated.headers.etag, 'W/"2"');
      t.equal(updated.headers.location, `${base}/${c.type}/${id}/_history/2`);
      t.equal(c.revision(updated.json), c.revision(c.revise(c.example(), 2)));
      const v1 = await s.fhir('GET', `${c.type}/${id}/_history/1`);
      t.equal(v1.status, 200);
      t.same(v1.json, created.json, 'vread 1 is the created version');
      t.equal(v1.headers.etag, 'W/"1"');
      const v2 = await s.fhir('GET', `${c.type}/${id}/_history/2`);
      t.same(v2.json, updated.json);
      const v9 = await s.fhir('GET', `${c.type}/${id}/_history/9`);
      t.equal(v9.status, 404);
      t.same(vellumCodes(v9.json), ['VLM_FHIR_VERSION_NOT_FOUND']);

      // an invalid update is refused and changes nothing.
      const invalid = await s.fhir('PUT', `${c.type}/${id}`, { ...c.invalid(c.example()), id });
      t.equal(invalid.status, 400);
      t.ok(vellumCodes(invalid.json).includes('VLM_FHIR_INVALID_RESOURCE'));
      t.equal((await s.fhir('GET', `${c.type}/${id}`)).json.meta.versionId, '2');

      // delete: 204, then read is 410 Gone; the deletion is a version of its own.
      const deleted = await s.fhir('DELETE', `${c.type}/${id}`);
      t.equal(deleted.status, 204);
      t.equal(deleted.text, '');
      t.equal(deleted.headers.etag, 'W/"3"');
      const gone = await s.fhir('GET', `${c.type}/${id}`);
      t.equal(gone.status, 410);
      t.same(issueCodes(gone.json), ['deleted']);
      t.same(vellumCodes(gone.json), ['VLM_FHIR_DELETED']);
      const goneVersion = await s.fhir('GET', `${c.type}/${id}/_history/3`);
      t.equal(goneVersion.status, 410, 'vread of the deletion version is 410');
      t.same(vellumCodes(goneVersion.json), ['VLM_FHIR_DELETED']);
      t.equal((await s.fhir('GET', `${c.type}/${id}/_history/2`)).status, 200, 'older versions stay readable');

      // deleting again is 204 and records nothing.
      t.equal((await s.fhir('DELETE', `${c.type}/${id}`)).status, 204);
      const history = await s.fhir('GET', `${c.type}/${id}/_history`);
      t.equal(history.status, 200);
      t.equal(history.json.total, 3);
      t.same(
        history.json.entry.map((e: any) => [e.request.method, e.response.etag]),
        [
          ['DELETE', 'W/"3"'],
          ['PUT', 'W/"2"'],
          ['POST', 'W/"1"'],
        ],
      );
      t.notOk(history.json.entry[0].resource);
      t.same(history.json.entry[2].resource, created.json);

      // re-creating the deleted resource by PUT: 201, version 4, history keeps everything.
      const recreated = await s.fhir('PUT', `${c.type}/${id}`, { ...c.revise(c.example(), 4), id });
      t.equal(recreated.status, 201);
      t.equal(recreated.json.meta.versionId, '4');
      t.equal(recreated.headers.location, `${base}/${c.type}/${id}/_history/4`);
      t.equal((await s.fhir('GET', `${c.type}/${id}`)).status, 200);
      const after = await s.fhir('GET', `${c.type}/${id}/_history`);
      t.equal(after.json.total, 4);
      t.equal(after.json.entry[0].request.method, 'PUT');
      t.match(after.json.entry[0].response.status, /^201\b/, 'the re-creation is recorded as a create');
    });
  }
});

t.test('update as create with a client-chosen id', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const id = `${c.type.toLowerCase()}-client-1`;
    const res = await s.fhir('PUT', `${c.type}/${id}`, { ...c.example(), id });
    t.equal(res.status, 201, c.type);
    t.equal(res.json.id, id);
    t.equal(res.json.meta.versionId, '1');
    t.equal(res.headers.location, `${s.config.baseUrl}/${c.type}/${id}/_history/1`);
    const again = await s.fhir('PUT', `${c.type}/${id}`, { ...c.example(), id });
    t.equal(again.status, 200, 'the second PUT is an update');
    t.equal(again.json.meta.versionId, '2');
    const history = await s.fhir('GET', `${c.type}/${id}/_history`);
    t.match(history.json.entry[1].response.status, /^201\b/, 'version 1 was a create');
    t.same(history.json.entry[1].request, { method: 'PUT', url: `${c.type}/${id}` }, 'made by PUT');
  }
  const noId = await s.fhir('PUT', 'Patient/pat-2', TYPE_CASES[0]!.example());
  t.equal(noId.status, 400);
  t.same(vellumCodes(noId.json), ['VLM_FHIR_ID_MISSING']);
  const wrongType = await s.fhir('PUT', 'Patient/pat-2', { ...TYPE_CASES[1]!.example(), id: 'pat-2' });
  t.equal(wrongType.status, 400);
  t.same(vellumCodes(wrongType.json), ['VLM_FHIR_TYPE_MISMATCH']);
  t.equal((await s.fhir('GET', 'Patient/pat-2')).status, 404, 'nothing was created');
});

t.test('reading, deleting and listing what never existed', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const read = await s.fhir('GET', `${c.type}/never-was`);
    t.equal(read.status, 404);
    t.same(issueCodes(read.json), ['not-found']);
    t.same(vellumCodes(read.json), ['VLM_FHIR_NOT_FOUND']);
    t.equal((await s.fhir('GET', `${c.type}/never-was/_history/1`)).status, 404);
    t.equal((await s.fhir('GET', `${c.type}/never-was/_history`)).status, 404);
    const deleted = await s.fhir('DELETE', `${c.type}/never-was`);
    t.equal(deleted.status, 204, 'deleting an unknown resource succeeds (http.html#delete)');
    t.equal((await s.fhir('GET', `${c.type}/never-was`)).status, 404, 'and records no deletion');
    t.equal((await s.fhir('GET', `${c.type}/_history`)).json.total, 0);
  }
});
