/**
 * No 500 for garbage: every route, every method, ~50 kinds of malformed input. A request may
 * succeed if the input happens to be acceptable; it may never fault, and every refusal is an
 * OperationOutcome carrying a Vellum code (http://hl7.org/fhir/R4/http.html#errors).
 */
import t from 'tap';
import { startTestServer, vellumCodes } from '../../helpers/server.ts';
import { minimalPatient } from '../interactions/examples.ts';

interface Garbage {
  name: string;
  body?: string | Buffer;
  headers?: Record<string, string>;
  query?: string;
}

const JSON_CT = { 'content-type': 'application/fhir+json' };
const patient = JSON.stringify({ ...minimalPatient(), id: 'g1' });
const deep = (n: number, open: string, close: string, inner = '1') => open.repeat(n) + inner + close.repeat(n);

const GARBAGE: Garbage[] = [
  // bodies
  { name: 'random bytes as JSON', body: Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x80, 0x7b, 0x22]), headers: JSON_CT },
  { name: 'random bytes, octet-stream', body: Buffer.from([0x00, 0x9f, 0x92, 0x96]), headers: { 'content-type': 'application/octet-stream' } },
  { name: 'empty JSON body', body: '', headers: JSON_CT },
  { name: 'JSON null', body: 'null', headers: JSON_CT },
  { name: 'JSON empty array', body: '[]', headers: JSON_CT },
  { name: 'JSON number', body: '42', headers: JSON_CT },
  { name: 'JSON string', body: '"Patient"', headers: JSON_CT },
  { name: 'JSON true', body: 'true', headers: JSON_CT },
  { name: 'truncated JSON', body: '{"resourceType":', headers: JSON_CT },
  { name: 'trailing garbage', body: `${patient}xyz`, headers: JSON_CT },
  { name: 'JSON with comments', body: '{/* c */"resourceType":"Patient"}', headers: JSON_CT },
  { name: 'NaN and Infinity', body: '{"resourceType":"Patient","multipleBirthInteger":NaN,"x":Infinity}', headers: JSON_CT },
  { name: '__proto__ key', body: '{"resourceType":"Patient","id":"g1","__proto__":{"polluted":true}}', headers: JSON_CT },
  { name: 'constructor.prototype', body: '{"resourceType":"Patient","id":"g1","constructor":{"prototype":{"polluted":true}}}', headers: JSON_CT },
  { name: 'deeply nested arrays', body: `{"resourceType":"Patient","id":"g1","extension":${deep(50_000, '[', ']')}}`, headers: JSON_CT },
  { name: 'deeply nested objects', body: `{"resourceType":"Patient","id":"g1","x":${deep(50_000, '{"a":', '}')}}`, headers: JSON_CT },
  { name: 'deeply nested extensions', body: `{"resourceType":"Patient","id":"g1","extension":${deep(20_000, '[{"url":"http://x.org","extension":', '}]', '[]')}}`, headers: JSON_CT },
  { name: 'numbers as strings', body: '{"resourceType":"Patient","id":"g1","active":"true","multipleBirthInteger":"3"}', headers: JSON_CT },
  { name: 'strings as numbers', body: '{"resourceType":"Patient","id":"g1","gender":1,"birthDate":19741225}', headers: JSON_CT },
  { name: 'huge numbers', body: '{"resourceType":"Patient","id":"g1","multipleBirthInteger":1e400}', headers: JSON_CT },
  { name: 'unicode everywhere', body: JSON.stringify({ ...minimalPatient('Ñandú 🦜 שלום ́'), id: 'g1' }), headers: JSON_CT },
  { name: 'lone surrogates', body: '{"resourceType":"Patient","id":"g1","name":[{"family":"\\ud800\\udfff\\ud800"}]}', headers: JSON_CT },
  { name: 'NUL and control characters', body: '{"resourceType":"Patient","id":"g1","name":[{"family":"a\\u0000b\\u001b"}]}', headers: JSON_CT },
  { name: 'duplicate keys', body: '{"resourceType":"Patient","resourceType":"Observation","id":"g1","id":"g2"}', headers: JSON_CT },
  { name: 'resourceType missing', body: '{"id":"g1","name":[{"family":"x"}]}', headers: JSON_CT },
  { name: 'resourceType an object', body: '{"resourceType":{"a":1},"id":"g1"}', headers: JSON_CT },
  { name: 'id an object', body: '{"resourceType":"Patient","id":{"a":1}}', headers: JSON_CT },
  { name: 'id an array', body: '{"resourceType":"Patient","id":["g1"]}', headers: JSON_CT },
  { name: 'meta a string', body: '{"resourceType":"Patient","id":"g1","meta":"x"}', headers: JSON_CT },
  { name: 'meta.tag junk', body: '{"resourceType":"Patient","id":"g1","meta":{"tag":[null,5,{"code":{}}]}}', headers: JSON_CT },
  { name: 'contained junk', body: '{"resourceType":"Patient","id":"g1","contained":[null,5,{"resourceType":"Project"}]}', headers: JSON_CT },
  { name: 'a long string', body: JSON.stringify({ ...minimalPatient('x'.repeat(200_000)), id: 'g1' }), headers: JSON_CT },
  { name: 'many elements', body: JSON.stringify({ ...minimalPatient(), id: 'g1', identifier: Array.from({ length: 5000 }, (_, i) => ({ value: String(i) })) }), headers: JSON_CT },
  { name: 'XML body', body: '<Patient xmlns="http://hl7.org/fhir"><id value="g1"/></Patient>', headers: { 'content-type': 'application/fhir+xml' } },
  { name: 'form body', body: 'resourceType=Patient&id=g1&%zz=%', headers: { 'content-type': 'application/x-www-form-urlencoded' } },
  { name: 'multipart body', body: '--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--b--', headers: { 'content-type': 'multipart/form-data; boundary=b' } },
  { name: 'JSON Patch junk', body: '[{"op":"add","path":"/__proto__/x","value":1},{"op":null},"x"]', headers: { 'content-type': 'application/json-patch+json' } },
  { name: 'JSON Patch, deep value', body: `[{"op":"add","path":"/extension","value":${deep(30_000, '[', ']')}}]`, headers: { 'content-type': 'application/json-patch+json' } },
  { name: 'Parameters junk', body: '{"resourceType":"Parameters","parameter":[null,5,{"name":"mode","valueCode":{}},{"name":"resource","resource":[]}]}', headers: JSON_CT },
  // headers
  { name: 'Accept junk', headers: { accept: ';;;,,q=,*/;q=x' } },
  { name: 'Accept, a thousand ranges', headers: { accept: Array.from({ length: 1000 }, (_, i) => `type/${i};q=0.${i % 10}`).join(',') } },
  { name: 'Content-Type junk', body: patient, headers: { 'content-type': ';;;/' } },
  { name: 'Content-Type, odd charset', body: patient, headers: { 'content-type': 'application/fhir+json; charset=ebcdic; x' } },
  { name: 'If-Match junk', body: patient, headers: { ...JSON_CT, 'if-match': 'W/"1", *, "x' } },
  { name: 'If-Match, huge version', body: patient, headers: { ...JSON_CT, 'if-match': `W/"${'9'.repeat(400)}"` } },
  { name: 'If-None-Match junk', headers: { 'if-none-match': 'W/W/"""' } },
  { name: 'If-Modified-Since junk', headers: { 'if-modified-since': 'Thu, 99 Foo 99999 99:99:99 XYZ' } },
  { name: 'If-None-Exist junk', body: patient, headers: { ...JSON_CT, 'if-none-exist': '%%%&&==&_id=%zz&a:b:c=' } },
  { name: 'Prefer junk', body: patient, headers: { ...JSON_CT, prefer: 'return=;handling=;respond-async=x,,,' } },
  { name: 'X-Request-Id junk', headers: { 'x-request-id': '../../etc/passwd\t;' } },
  { name: 'Latin-1 header bytes', headers: { prefer: 'return=mÿnimal', accept: 'application/fhir+json; x=é' } },
  // query strings
  { name: 'undecodable query', query: '%zz&=&&=x&%E2%98=1' },
  { name: 'bad paging values', query: '_count=1e3&_offset=-1&_snapshot=x' },
  { name: 'bad _summary and _elements', query: '_summary=x&_elements=a.b.c' },
  { name: 'NUL in _format', query: '_format=%00' },
  { name: 'a thousand OR values', query: `_id=${Array.from({ length: 1000 }, (_, i) => `x${i}`).join(',')}` },
  { name: 'bad dates', query: '_since=x&_at=y&_lastUpdated=gt&birthdate=2020-99-99' },
  { name: 'bad modifiers and sort', query: 'name:xyz=1&gender:missing=perhaps&_sort=zz,-,' },
  { name: 'a very long query', query: `name=${'n'.repeat(8000)}` },
  { name: 'prototype-named parameters', query: '__proto__=1&constructor=2&toString=3&hasOwnProperty=4' },
  { name: 'mode junk', query: 'mode=%00%ff' },
];

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];

t.test('no 500 for garbage, on any route', async (t) => {
  const s = await startTestServer(t);
  await s.fhir('PUT', 'Patient/g1', JSON.parse(patient));
  const paths = ['metadata', '_history', 'Patient', 'Patient/_search', 'Patient/_history', 'Patient/$validate', 'Patient/g1', 'Patient/g1/_history', 'Patient/g1/_history/1', 'Patient/g1/$validate'];
  let requests = 0;
  for (const g of GARBAGE) {
    const failures: string[] = [];
    for (const path of paths) {
      for (const method of METHODS) {
        const url = `/fhir/${path}${g.query ? `?${g.query}` : ''}`;
        const res = await s.app.inject({ method: method as 'GET', url, headers: { accept: 'application/fhir+json', ...g.headers }, payload: g.body });
        requests++;
        const where = `${method} ${path}`;
        if (res.statusCode >= 500) {
          failures.push(`${where} → ${res.statusCode}`);
          continue;
        }
        if (method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304) continue;
        let json: any;
        try {
          json = JSON.parse(res.body);
        } catch {
          failures.push(`${where} → ${res.statusCode} with a body that is not JSON`);
          continue;
        }
        if (res.statusCode >= 400) {
          if (json.resourceType !== 'OperationOutcome') failures.push(`${where} → ${res.statusCode} without an OperationOutcome`);
          else if (!vellumCodes(json).some((c) => c.startsWith('VLM_'))) failures.push(`${where} → ${res.statusCode} without a Vellum code`);
        }
      }
    }
    t.same(failures, [], g.name);
  }
  t.equal(requests, GARBAGE.length * paths.length * METHODS.length);
  t.ok(GARBAGE.length >= 40, `${GARBAGE.length} kinds of garbage`);

  // The server still works, and nothing was polluted. (Some garbage is a valid request: a
  // DELETE with an odd X-Request-Id deletes Patient/g1, and a later PUT re-creates it.)
  t.equal((await s.fhir('GET', 'metadata')).status, 200);
  t.notOk('polluted' in ({} as any), 'no prototype pollution');
  const history = await s.fhir('GET', 'Patient/g1/_history?_count=1000');
  for (const e of history.json.entry) if (e.resource) t.notOk('polluted' in e.resource, 'no stored version carries the polluting key');
});

t.test('garbage in the path', async (t) => {
  const s = await startTestServer(t);
  for (const path of [
    'Patient/%E2%98%83',
    'Patient/%00',
    'Patient/..%2F..%2Fetc',
    // (A bare 'Patient/%2e%2e' is resolved to '/fhir/' by the WHATWG URL parser before it is
    // sent, and GET [base] is a valid system search.)
    'Patient/%2e%2e%2fetc',
    'Patient//_history',
    'Patient/1/_history/%F0%9F%A6%9C',
    // answered by Fastify's router itself (src/server.ts frameworkErrors)
    `Patient/${'a'.repeat(101)}`,
    `${'P'.repeat(500)}/1`,
    'Patient/%E2%98',
    'Patient/%',
  ]) {
    for (const method of METHODS) {
      const res = await s.app.inject({ method: method as 'GET', url: `/fhir/${path}` });
      t.ok(res.statusCode >= 400 && res.statusCode < 500, `${method} ${path.slice(0, 30)} → ${res.statusCode}`);
      if (method === 'HEAD') continue;
      const isOutcome = (() => {
        try {
          return JSON.parse(res.body).resourceType === 'OperationOutcome';
        } catch {
          return false;
        }
      })();
      t.ok(isOutcome, `${method} ${path.slice(0, 30)}: an OperationOutcome`);
    }
  }
});
