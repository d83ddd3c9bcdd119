/**
 * Routing — the URL forms of http://hl7.org/fhir/R4/http.html#general: a method a path does not
 * take is 405 with Allow; unknown or non-R4 types are 404; malformed ids are 400.
 */
import t from 'tap';
import { issueCodes, startTestServer, vellumCodes } from '../../helpers/server.ts';
import { JSON_PATCH, minimalPatient } from '../interactions/examples.ts';

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

t.test('405 with Allow', async (t) => {
  const s = await startTestServer(t);
  const { id } = (await s.fhir('PUT', 'Patient/r1', { ...minimalPatient(), id: 'r1' })).json;
  const table: [string, string[]][] = [
    ['metadata', ['GET', 'HEAD']],
    ['_history', ['GET', 'HEAD']],
    ['Patient', ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']],
    ['Patient/_search', ['POST']],
    ['Patient/_history', ['GET', 'HEAD']],
    ['Patient/$validate', ['POST']],
    [`Patient/${id}`, ['GET', 'HEAD', 'PUT', 'PATCH', 'DELETE']],
    [`Patient/${id}/_history`, ['GET', 'HEAD']],
    [`Patient/${id}/_history/1`, ['GET', 'HEAD']],
    [`Patient/${id}/$validate`, ['POST']],
  ];
  for (const [path, allowed] of table) {
    for (const method of METHODS.filter((m) => !allowed.includes(m))) {
      const res = await s.fhir(method, path, ['POST', 'PUT'].includes(method) ? minimalPatient() : undefined);
      t.equal(res.status, 405, `${method} ${path}`);
      if (method !== 'HEAD') {
        t.same(issueCodes(res.json), ['not-supported']);
        t.same(vellumCodes(res.json), ['VLM_FHIR_METHOD_NOT_ALLOWED']);
      }
      t.same(String(res.headers.allow).split(/,\s*/).sort(), [...allowed].sort(), `Allow: ${allowed.join(', ')}`);
    }
  }
  t.equal((await s.fhir('GET', `Patient/${id}`)).json.meta.versionId, '1', 'no 405 wrote anything');
  t.equal((await s.fhir('GET', '_history')).json.total, 1);
});

t.test('HEAD answers like GET, without a body', async (t) => {
  const s = await startTestServer(t);
  await s.fhir('PUT', 'Patient/h1', { ...minimalPatient(), id: 'h1' });
  for (const path of ['metadata', 'Patient/h1', 'Patient/h1/_history/1', 'Patient', 'Patient/h1/_history', 'Patient/nope']) {
    const get = await s.fhir('GET', path);
    const head = await s.fhir('HEAD', path);
    t.equal(head.status, get.status, `HEAD ${path}`);
    t.equal(head.text, '');
    t.equal(head.headers.etag, get.headers.etag);
    t.equal(head.headers['content-type'], get.headers['content-type']);
  }
});

t.test('unknown, non-R4 and misspelt types are 404', async (t) => {
  const s = await startTestServer(t);
  const types = ['Foo', 'Project', 'Bot', 'ClientApplication', 'User', 'Login', 'SubscriptionStatus', 'Resource', 'DomainResource', 'patient', 'PATIENT', 'HumanName', 'constructor', '__proto__', 'toString'];
  for (const type of types) {
    for (const [method, path, body, headers] of [
      ['GET', type, undefined, {}],
      ['POST', type, { resourceType: type }, {}],
      ['GET', `${type}/1`, undefined, {}],
      ['PUT', `${type}/1`, { resourceType: type, id: '1' }, {}],
      ['PATCH', `${type}/1`, [{ op: 'add', path: '/a', value: 1 }], JSON_PATCH],
      ['DELETE', `${type}/1`, undefined, {}],
      ['GET', `${type}/_history`, undefined, {}],
      ['GET', `${type}/1/_history`, undefined, {}],
      ['GET', `${type}/1/_history/1`, undefined, {}],
      ['POST', `${type}/$validate`, { resourceType: type }, {}],
      ['POST', `${type}/_search`, undefined, {}],
    ] as const) {
      const res = await s.fhir(method, path, body, headers);
      t.equal(res.status, 404, `${method} ${path}`);
      t.same(vellumCodes(res.json), ['VLM_FHIR_UNKNOWN_TYPE']);
    }
  }
  t.equal((await s.fhir('GET', '_history')).json.total, 0);
  const noRoute = await s.fhir('GET', 'Patient/1/_history/1/extra');
  t.equal(noRoute.status, 404);
  t.same(vellumCodes(noRoute.json), ['VLM_FHIR_NO_ROUTE']);
  const elsewhere = await s.app.inject({ method: 'GET', url: '/fhir-not/Patient' });
  t.equal(elsewhere.statusCode, 404);
});

t.test('malformed ids are 400; unknown versions are 404', async (t) => {
  const s = await startTestServer(t);
  await s.fhir('PUT', 'Patient/ok-1', { ...minimalPatient(), id: 'ok-1' });
  const bad = ['a$b', 'a_b', 'a b', 'a%2Fb', 'ümlaut', '%E2%98%83', 'a'.repeat(65), 'a:b', "a'b", 'a,b'];
  for (const id of bad) {
    for (const [method, path, body, headers] of [
      ['GET', `Patient/${id}`, undefined, {}],
      ['PUT', `Patient/${id}`, { ...minimalPatient(), id: decodeURIComponent(id) }, {}],
      ['PATCH', `Patient/${id}`, [{ op: 'add', path: '/active', value: true }], JSON_PATCH],
      ['DELETE', `Patient/${id}`, undefined, {}],
      ['GET', `Patient/${id}/_history`, undefined, {}],
      ['GET', `Patient/${id}/_history/1`, undefined, {}],
      ['POST', `Patient/${id}/$validate`, { ...minimalPatient(), id: decodeURIComponent(id) }, {}],
    ] as const) {
      const res = await s.fhir(method, path, body, headers);
      t.equal(res.status, 400, `${method} ${path}`);
      t.same(issueCodes(res.json), ['invalid']);
      t.same(vellumCodes(res.json), ['VLM_FHIR_BAD_ID']);
    }
  }
  const longest = 'a'.repeat(64);
  t.equal((await s.fhir('PUT', `Patient/${longest}`, { ...minimalPatient(), id: longest })).status, 201, 'a 64-character id is valid');
  t.equal((await s.fhir('PUT', 'Patient/A-Z.0-9', { ...minimalPatient(), id: 'A-Z.0-9' })).status, 201, 'every id character class');
  t.equal((await s.fhir('GET', '_history')).json.total, 3, 'no malformed id was written');

  for (const vid of ['abc', '0', '-1', '1.0', '01', '99999999999999999999', '2']) {
    const res = await s.fhir('GET', `Patient/ok-1/_history/${vid}`);
    t.equal(res.status, 404, `_history/${vid}`);
    t.same(vellumCodes(res.json), ['VLM_FHIR_VERSION_NOT_FOUND']);
  }
  t.equal((await s.fhir('GET', 'Patient/ok-1/_history/1')).status, 200);
  t.equal((await s.fhir('GET', 'Patient/ok-1/')).status, 200, 'a trailing slash is ignored');
});

t.test('router-level URL errors are OperationOutcomes too', async (t) => {
  // Fastify's router answers these before any route runs (src/server.ts frameworkErrors).
  const s = await startTestServer(t);
  for (const path of [`Patient/${'a'.repeat(200)}`, 'Patient/%E2%98', `Patient/${'a'.repeat(200)}/_history`]) {
    const res = await s.fhir('GET', path);
    t.equal(res.status, 400, path.slice(0, 40));
    t.equal(res.json?.resourceType, 'OperationOutcome');
    t.same(vellumCodes(res.json), ['VLM_FHIR_BAD_URL']);
  }
});
