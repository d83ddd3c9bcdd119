/**
 * Content negotiation and request bodies — http://hl7.org/fhir/R4/http.html#mime-type,
 * `_format` and `_pretty` (http://hl7.org/fhir/R4/http.html#parameters). Vellum speaks JSON only.
 */
import t from 'tap';
import { issueCodes, startTestServer, vellumCodes } from '../../helpers/server.ts';
import { minimalPatient } from '../interactions/examples.ts';

const mediaType = (res: { headers: Record<string, unknown> }) => String(res.headers['content-type'] ?? '').split(';')[0]!.trim();

t.test('Accept and _format', async (t) => {
  const s = await startTestServer(t);
  const { id } = (await s.fhir('POST', 'Patient', minimalPatient())).json;
  const paths = ['metadata', `Patient/${id}`, `Patient/${id}/_history/1`, 'Patient', 'Patient/_history', '_history'];

  const ok: [Record<string, string>, string, string][] = [
    [{ accept: 'application/fhir+json' }, '', 'application/fhir+json'],
    [{ accept: 'application/json' }, '', 'application/json'],
    [{ accept: 'application/json+fhir' }, '', 'application/fhir+json'],
    [{ accept: '*/*' }, '', 'application/fhir+json'],
    [{ accept: 'application/*' }, '', 'application/fhir+json'],
    [{ accept: '' }, '', 'application/fhir+json'],
    [{ accept: 'application/fhir+json; fhirVersion=4.0' }, '', 'application/fhir+json'],
    [{ accept: 'application/fhir+xml, application/json;q=0.5' }, '', 'application/json'],
    [{ accept: 'text/html;q=0.9, application/fhir+json;q=0.8' }, '', 'application/fhir+json'],
    [{ accept: 'application/fhir+json;q=bogus' }, '', 'application/fhir+json'],
    [{}, '_format=json', 'application/fhir+json'],
    [{}, '_format=application/fhir%2Bjson', 'application/fhir+json'],
    [{}, '_format=application/fhir+json', 'application/fhir+json'],
    [{}, '_format=application/json', 'application/json'],
    [{}, '_format=application/json+fhir', 'application/fhir+json'],
    [{ accept: 'application/fhir+xml' }, '_format=json', 'application/fhir+json'],
  ];
  for (const [headers, query, expected] of ok) {
    for (const path of paths) {
      const url = query ? `${path}${path.includes('?') ? '&' : '?'}${query}` : path;
      const res = await s.fhir('GET', url, undefined, headers);
      t.equal(res.status, 200, `${url} ${JSON.stringify(headers)}`);
      t.equal(mediaType(res), expected);
      t.match(String(res.headers['content-type']), /charset=utf-8/i);
      t.ok(res.json?.resourceType, 'a JSON body');
    }
  }

  const refused: [Record<string, string>, string][] = [
    [{ accept: 'application/fhir+xml' }, ''],
    [{ accept: 'application/xml' }, ''],
    [{ accept: 'text/xml, application/xml;q=0.9' }, ''],
    [{ accept: 'text/html' }, ''],
    [{ accept: 'text/turtle' }, ''],
    [{ accept: 'application/fhir+json;q=0' }, ''],
    [{}, '_format=xml'],
    [{}, '_format=application/fhir%2Bxml'],
    [{}, '_format=text/xml'],
    [{}, '_format=html'],
    [{}, '_format=ttl'],
    [{}, '_format=yaml'],
    [{ accept: 'application/json' }, '_format=xml'],
  ];
  for (const [headers, query] of refused) {
    for (const path of paths) {
      const url = query ? `${path}?${query}` : path;
      const res = await s.fhir('GET', url, undefined, headers);
      t.equal(res.status, 406, `${url} ${JSON.stringify(headers)}`);
      t.equal(mediaType(res), 'application/fhir+json', 'the refusal itself is JSON');
      t.same(issueCodes(res.json), ['not-supported']);
      t.same(vellumCodes(res.json), ['VLM_FHIR_NOT_ACCEPTABLE']);
    }
  }
  // writes negotiate too, before anything is stored
  const created = await s.fhir('POST', 'Patient', minimalPatient(), { accept: 'application/json' });
  t.equal(created.status, 201);
  t.equal(mediaType(created), 'application/json');
  t.equal((await s.fhir('POST', 'Patient?_format=xml', minimalPatient())).status, 406);
  t.equal((await s.fhir('GET', 'Patient/_history')).json.total, 2, 'the refused create stored nothing');
});

t.test('_pretty', async (t) => {
  const s = await startTestServer(t);
  const { id } = (await s.fhir('POST', 'Patient', minimalPatient())).json;
  for (const path of [`Patient/${id}`, 'Patient', 'Patient/_history', 'metadata']) {
    const sep = path.includes('?') ? '&' : '?';
    const plain = await s.fhir('GET', path);
    const pretty = await s.fhir('GET', `${path}${sep}_pretty=true`);
    const notPretty = await s.fhir('GET', `${path}${sep}_pretty=false`);
    t.equal(pretty.status, 200);
    t.match(pretty.text, /^\{\n {2}"resourceType"/, `${path}: indented`);
    t.notMatch(plain.text, /\n/, 'compact by default');
    t.notMatch(notPretty.text, /\n/, '_pretty=false is compact');
    const strip = (x: any) => (x.resourceType === 'Bundle' ? { ...x, link: undefined } : x);
    t.same(strip(pretty.json), strip(plain.json), 'the same content');
  }
  const error = await s.fhir('GET', 'Patient/never-was?_pretty=true');
  t.equal(error.status, 404);
  t.equal(error.json.resourceType, 'OperationOutcome');
  const created = await s.fhir('POST', 'Patient?_pretty=true', minimalPatient());
  t.equal(created.status, 201);
  t.match(created.text, /^\{\n {2}"resourceType": "Patient"/, 'write responses too');
});

t.test('request bodies', async (t) => {
  const s = await startTestServer(t);
  const body = JSON.stringify(minimalPatient());

  for (const type of ['application/fhir+json', 'application/json', 'application/json+fhir', 'application/fhir+json; charset=utf-8', 'Application/FHIR+JSON']) {
    const res = await s.fhir('POST', 'Patient', body, { 'content-type': type });
    t.equal(res.status, 201, `accepts ${type}`);
  }
  const refused: [string, string, string, number, string, string][] = [
    ['XML', 'application/fhir+xml', '<Patient xmlns="http://hl7.org/fhir"/>', 415, 'not-supported', 'VLM_FHIR_UNSUPPORTED_MEDIA_TYPE'],
    ['plain XML', 'application/xml', '<Patient xmlns="http://hl7.org/fhir"/>', 415, 'not-supported', 'VLM_FHIR_UNSUPPORTED_MEDIA_TYPE'],
    ['text/plain', 'text/plain', body, 415, 'not-supported', 'VLM_FHIR_UNSUPPORTED_MEDIA_TYPE'],
    ['octet-stream', 'application/octet-stream', body, 415, 'not-supported', 'VLM_FHIR_UNSUPPORTED_MEDIA_TYPE'],
    ['form', 'application/x-www-form-urlencoded', 'resourceType=Patient', 415, 'not-supported', 'VLM_FHIR_UNSUPPORTED_MEDIA_TYPE'],
    ['empty JSON', 'application/fhir+json', '', 400, 'required', 'VLM_FHIR_BODY_MISSING'],
    ['invalid JSON', 'application/fhir+json', '{"resourceType": "Patient",', 400, 'structure', 'VLM_FHIR_JSON_SYNTAX'],
    ['JSON array', 'application/fhir+json', `[${body}]`, 400, 'structure', 'VLM_FHIR_BODY_NOT_RESOURCE'],
    ['JSON string', 'application/fhir+json', '"Patient"', 400, 'structure', 'VLM_FHIR_BODY_NOT_RESOURCE'],
    ['JSON null', 'application/fhir+json', 'null', 400, 'required', 'VLM_FHIR_BODY_MISSING'],
  ];
  for (const [name, type, payload, status, code, vellum] of refused) {
    for (const [method, path] of [
      ['POST', 'Patient'],
      ['PUT', 'Patient/body-test'],
    ]) {
      const res = await s.fhir(method!, path!, payload, { 'content-type': type });
      t.equal(res.status, status, `${method} ${name}`);
      t.same(issueCodes(res.json), [code]);
      t.same(vellumCodes(res.json), [vellum]);
    }
  }
  const noBody = await s.fhir('POST', 'Patient');
  t.equal(noBody.status, 400, 'POST without a body');
  t.same(issueCodes(noBody.json), ['required']);
  t.same(vellumCodes(noBody.json), ['VLM_FHIR_BODY_MISSING']);
  const noBodyPut = await s.fhir('PUT', 'Patient/body-test');
  t.equal(noBodyPut.status, 400, 'PUT without a body');
  const noType = await s.app.inject({ method: 'POST', url: '/fhir/Patient', payload: body });
  t.equal(noType.statusCode, 415, 'a body without Content-Type');
  t.equal((await s.fhir('GET', 'Patient/_history')).json.total, 5, 'only the accepted bodies were stored');
});

t.test('a body over VELLUM_BODY_LIMIT is 413', async (t) => {
  const s = await startTestServer(t, { VELLUM_BODY_LIMIT: '2048' });
  const small = await s.fhir('POST', 'Patient', minimalPatient());
  t.equal(small.status, 201);
  const big = { ...minimalPatient(), name: [{ family: 'x'.repeat(3000) }] };
  for (const [method, path, type] of [
    ['POST', 'Patient', 'application/fhir+json'],
    ['PUT', `Patient/${small.json.id}`, 'application/fhir+json'],
    ['PATCH', `Patient/${small.json.id}`, 'application/json-patch+json'],
    ['POST', 'Patient/$validate', 'application/fhir+json'],
    ['POST', 'Patient', 'text/plain'],
    ['POST', 'Patient', 'application/fhir+xml'],
    ['POST', 'Patient/_search', 'application/x-www-form-urlencoded'],
  ]) {
    const payload = type === 'application/x-www-form-urlencoded' ? `family=${'x'.repeat(3000)}` : JSON.stringify(big);
    const res = await s.fhir(method!, path!, payload, { 'content-type': type! });
    t.equal(res.status, 413, `${method} ${path} ${type}`);
    t.same(issueCodes(res.json), ['too-long']);
    t.same(vellumCodes(res.json), ['VLM_FHIR_BODY_TOO_LARGE']);
  }
  const justUnder = JSON.stringify({ ...minimalPatient(), name: [{ family: 'y'.repeat(1800) }] });
  t.ok(Buffer.byteLength(justUnder) < 2048);
  t.equal((await s.fhir('POST', 'Patient', justUnder)).status, 201, 'just under the limit is fine');
});
