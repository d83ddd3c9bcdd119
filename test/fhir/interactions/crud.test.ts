import t from 'tap';
import { issueCodes, startTestServer, vellumCodes } from '../../helpers/server.ts';

const patient = {
  resourceType: 'Patient',
  name: [{ family: 'Chalmers', given: ['Peter', 'James'] }],
  gender: 'male',
  birthDate: '1974-12-25',
};

t.test('create, read, vread, update, delete, history', async (t) => {
  const s = await startTestServer(t);
  const created = await s.fhir('POST', 'Patient', { ...patient, id: 'ignored' });
  t.equal(created.status, 201);
  const id = created.json.id;
  t.not(id, 'ignored', 'server assigns the id');
  t.equal(created.json.meta.versionId, '1');
  t.equal(created.headers.etag, 'W/"1"');
  t.equal(created.headers.location, `${s.config.baseUrl}/Patient/${id}/_history/1`);
  t.ok(created.headers['last-modified']);

  const read = await s.fhir('GET', `Patient/${id}`);
  t.equal(read.status, 200);
  t.same(read.json.name, patient.name);
  t.equal(read.json.meta.lastUpdated, created.json.meta.lastUpdated);

  const updated = await s.fhir('PUT', `Patient/${id}`, { ...patient, id, gender: 'other' });
  t.equal(updated.status, 200);
  t.equal(updated.json.meta.versionId, '2');
  t.equal(updated.headers.etag, 'W/"2"');

  const v1 = await s.fhir('GET', `Patient/${id}/_history/1`);
  t.equal(v1.status, 200);
  t.equal(v1.json.gender, 'male');
  t.equal((await s.fhir('GET', `Patient/${id}/_history/9`)).status, 404);

  const deleted = await s.fhir('DELETE', `Patient/${id}`);
  t.equal(deleted.status, 204);
  const gone = await s.fhir('GET', `Patient/${id}`);
  t.equal(gone.status, 410);
  t.same(issueCodes(gone.json), ['deleted']);
  t.equal((await s.fhir('GET', `Patient/${id}/_history/3`)).status, 410);

  const history = await s.fhir('GET', `Patient/${id}/_history`);
  t.equal(history.status, 200);
  t.equal(history.json.type, 'history');
  t.equal(history.json.total, 3);
  t.same(
    history.json.entry.map((e: any) => e.request.method),
    ['DELETE', 'PUT', 'POST'],
    'newest first, every version kept',
  );
  t.notOk(history.json.entry[0].resource, 'a deletion has no resource');
});

t.test('update as create with a client id, and id mismatch', async (t) => {
  const s = await startTestServer(t);
  const res = await s.fhir('PUT', 'Patient/pat-1', { ...patient, id: 'pat-1' });
  t.equal(res.status, 201);
  t.equal(res.json.id, 'pat-1');
  const mismatch = await s.fhir('PUT', 'Patient/pat-1', { ...patient, id: 'other' });
  t.equal(mismatch.status, 400);
  t.same(vellumCodes(mismatch.json), ['VLM_FHIR_ID_MISMATCH']);
  const noId = await s.fhir('PUT', 'Patient/pat-1', patient);
  t.equal(noId.status, 400);
  const wrongType = await s.fhir('PUT', 'Patient/pat-1', { ...patient, resourceType: 'Observation', id: 'pat-1' });
  t.equal(wrongType.status, 400);
  t.equal((await s.fhir('GET', 'Patient/pat-1')).json.meta.versionId, '1', 'rejected writes change nothing');
});
