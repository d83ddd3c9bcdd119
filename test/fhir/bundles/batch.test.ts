/**
 * batch — http://hl7.org/fhir/R4/http.html#transaction: each entry succeeds or fails on its own,
 * with its status and an OperationOutcome in `response.outcome`; entries may not reference each
 * other's fullUrls. The whole batch still waits for one fsync.
 */
import t from 'tap';
import { issueCodes, startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { minimalPatient, type Resource } from '../interactions/examples.ts';

const P1 = 'urn:uuid:0b0c2d5e-7f1a-4c3b-8d2e-000000000001';

type Entry = { fullUrl?: string; resource?: Resource; request?: Record<string, unknown> };

function batch(...entry: Entry[]): Resource {
  return { resourceType: 'Bundle', type: 'batch', entry };
}

function post(resource: Resource, fullUrl?: string, extra: Record<string, unknown> = {}): Entry {
  return { ...(fullUrl ? { fullUrl } : {}), resource, request: { method: 'POST', url: resource.resourceType, ...extra } };
}

async function versions(s: TestServer): Promise<number> {
  return (await s.fhir('GET', '_history?_summary=count')).json.total;
}

t.test('entries succeed or fail independently', async (t) => {
  const s = await startTestServer(t);
  await s.fhir('PUT', 'Patient/b1', { ...minimalPatient(), id: 'b1' });
  const res = await s.fhir(
    'POST',
    '',
    batch(
      post(minimalPatient('Good'), P1),
      post({ ...minimalPatient('Bad'), birthDate: 'never' }),
      post({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: P1 } }),
      { request: { method: 'GET', url: 'Patient/b1' } },
      { request: { method: 'GET', url: 'Patient/nobody' } },
      { resource: minimalPatient(), request: { method: 'TRACE', url: 'Patient' } },
      { resource: minimalPatient() },
      { resource: { ...minimalPatient('Updated'), id: 'b1' }, request: { method: 'PUT', url: 'Patient/b1', ifMatch: 'W/"1"' } },
      { resource: { ...minimalPatient('Stale'), id: 'b1' }, request: { method: 'PUT', url: 'Patient/b1', ifMatch: 'W/"1"' } },
      { request: { method: 'GET', url: 'Patient?_id=b1' } },
    ),
  );
  t.equal(res.status, 200);
  t.equal(res.json.type, 'batch-response');
  const entries = res.json.entry;
  t.same(
    entries.map((e: any) => e.response.status),
    ['201 Created', '400 Bad Request', '400 Bad Request', '200 OK', '404 Not Found', '400 Bad Request', '400 Bad Request', '200 OK', '412 Precondition Failed', '200 OK'],
  );
  t.equal(entries[0].resource.name[0].family, 'Good');
  const codes = entries.map((e: any) => vellumCodes(e.response.outcome));
  t.same(codes[1], ['VLM_FHIR_INVALID_RESOURCE']);
  t.equal(entries[1].response.outcome.issue[0].expression[0], 'Bundle.entry[1]');
  t.same(codes[2], ['VLM_BUNDLE_ENTRY_REFERENCE'], 'a batch entry may not reference another entry');
  t.same(codes[4], ['VLM_FHIR_NOT_FOUND']);
  t.same(issueCodes(entries[4].response.outcome), ['not-found']);
  t.same(codes[5], ['VLM_BUNDLE_METHOD']);
  t.same(codes[6], ['VLM_BUNDLE_REQUEST_MISSING']);
  t.same(codes[8], ['VLM_FHIR_VERSION_MISMATCH'], 'the second PUT saw the first');
  t.equal(entries[3].resource.name[0].family, 'Updated', 'GET entries run after the writes (DELETE, POST, PUT, GET)…');
  t.equal(entries[3].response.etag, 'W/"2"');
  t.equal(entries[9].resource.entry[0].resource.name[0].family, 'Updated', '…and so does a search');

  t.equal(await versions(s), 3, 'the good entries were stored: b1 (2 versions) and the new patient');
  t.equal((await s.fhir('GET', 'Observation?_summary=count')).json.total, 0);
});

t.test('conditional create in a batch, and one fsync for the batch', async (t) => {
  const s = await startTestServer(t);
  const org = (value: string) => ({ resourceType: 'Organization', identifier: [{ system: 'urn:test:org', value }], name: value });
  const entries = ['a', 'b', 'c'].map((v) => post(org(v), undefined, { ifNoneExist: `identifier=urn:test:org|${v}` }));
  const first = await s.fhir('POST', '', batch(...entries));
  t.same(first.json.entry.map((e: any) => e.response.status), ['201 Created', '201 Created', '201 Created']);

  const { repository } = s.services;
  let flushes = 0;
  const flush = repository.flush.bind(repository);
  repository.flush = async () => {
    flushes++;
    return flush();
  };
  const again = await s.fhir('POST', '', batch(...entries, post(org('d'))));
  t.same(again.json.entry.map((e: any) => e.response.status), ['200 OK', '200 OK', '200 OK', '201 Created']);
  t.same(
    again.json.entry.slice(0, 3).map((e: any) => e.response.location),
    first.json.entry.map((e: any) => e.response.location),
  );
  t.equal(flushes, 1, 'one fsync for the whole batch');

  await s.fhir('POST', 'Organization', org('a'));
  const several = await s.fhir('POST', '', batch(entries[0]!, entries[1]!));
  t.same(several.json.entry.map((e: any) => e.response.status), ['412 Precondition Failed', '200 OK']);
  t.same(vellumCodes(several.json.entry[0].response.outcome), ['VLM_FHIR_MULTIPLE_MATCHES']);
});

t.test('conditional references in a batch', async (t) => {
  const s = await startTestServer(t);
  const made = await s.fhir('POST', 'Practitioner', { resourceType: 'Practitioner', identifier: [{ system: 'urn:npi', value: '7' }] });
  const obs = (ref: string) => ({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, performer: [{ reference: ref }] });
  const res = await s.fhir('POST', '', batch(post(obs('Practitioner?identifier=urn:npi|7')), post(obs('Practitioner?identifier=urn:npi|8'))));
  t.same(res.json.entry.map((e: any) => e.response.status), ['201 Created', '404 Not Found']);
  t.equal(res.json.entry[0].resource.performer[0].reference, `Practitioner/${made.json.id}`);
  t.same(vellumCodes(res.json.entry[1].response.outcome), ['VLM_BUNDLE_REFERENCE_NOT_FOUND']);
});

t.test('a batch-level error fails the whole batch', async (t) => {
  const s = await startTestServer(t);
  const res = await s.fhir('POST', '', batch(post(minimalPatient(), P1), post(minimalPatient(), P1)));
  t.equal(res.status, 400);
  t.same(vellumCodes(res.json), ['VLM_BUNDLE_DUPLICATE_FULLURL']);
  t.equal(await versions(s), 0);
});
