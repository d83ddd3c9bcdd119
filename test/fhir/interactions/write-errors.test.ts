/**
 * Every refused write leaves nothing behind: a refused create is not in the type's history
 * or its search results, a refused update, patch or delete leaves the current version as it was.
 * Includes refusals that can only be decided after the interaction would have run (a bad
 * `_summary` / `_elements`, an unacceptable `Accept`): they must be decided before it.
 */
import t from 'tap';
import { startTestServer, type TestServer } from '../../helpers/server.ts';
import { JSON_PATCH, TYPE_CASES, minimalPatient, type TypeCase } from './examples.ts';

interface Attempt {
  name: string;
  method: string;
  path: (c: TypeCase, id: string) => string;
  body?: (c: TypeCase, id: string) => unknown;
  headers?: Record<string, string>;
}

const asIs = (c: TypeCase) => c.type;
const instance = (c: TypeCase, id: string) => `${c.type}/${id}`;
const resource = (c: TypeCase, id: string) => ({ ...c.revise(c.example(), 99), id });
const patchBody = () => [{ op: 'add', path: '/language', value: 'en' }];

const CREATES: Attempt[] = [
  { name: 'invalid resource', method: 'POST', path: asIs, body: (c) => c.invalid(c.example()) },
  { name: 'another type', method: 'POST', path: asIs, body: (c) => ({ ...c.example(), resourceType: 'Basic' }) },
  { name: 'no resourceType', method: 'POST', path: asIs, body: (c) => ({ ...c.example(), resourceType: undefined }) },
  { name: 'array body', method: 'POST', path: asIs, body: (c) => [c.example()] },
  { name: 'no body', method: 'POST', path: asIs },
  { name: 'invalid JSON', method: 'POST', path: asIs, body: () => '{"resourceType":' },
  { name: 'XML body', method: 'POST', path: asIs, body: (c) => `<${c.type} xmlns="http://hl7.org/fhir"/>`, headers: { 'content-type': 'application/fhir+xml' } },
  { name: 'text body', method: 'POST', path: asIs, body: (c) => JSON.stringify(c.example()), headers: { 'content-type': 'text/plain' } },
  { name: 'form body', method: 'POST', path: asIs, body: () => 'resourceType=Patient', headers: { 'content-type': 'application/x-www-form-urlencoded' } },
  { name: 'JSON Patch body', method: 'POST', path: asIs, body: (c) => JSON.stringify(c.example()), headers: JSON_PATCH },
  { name: 'bad _summary', method: 'POST', path: (c) => `${c.type}?_summary=everything`, body: (c) => c.example() },
  { name: 'bad _elements', method: 'POST', path: (c) => `${c.type}?_elements=name.family`, body: (c) => c.example() },
  { name: '_format=xml', method: 'POST', path: (c) => `${c.type}?_format=xml`, body: (c) => c.example() },
  { name: 'Accept XML only', method: 'POST', path: asIs, body: (c) => c.example(), headers: { accept: 'application/fhir+xml' } },
  { name: 'unknown If-None-Exist parameter', method: 'POST', path: asIs, body: (c) => c.example(), headers: { 'if-none-exist': 'no-such-param=1' } },
  { name: 'empty If-None-Exist', method: 'POST', path: asIs, body: (c) => c.example(), headers: { 'if-none-exist': '' } },
  { name: 'PUT without criteria', method: 'PUT', path: asIs, body: (c) => c.example() },
];

const CHANGES: Attempt[] = [
  { name: 'invalid update', method: 'PUT', path: instance, body: (c, id) => ({ ...c.invalid(c.example()), id }) },
  { name: 'id mismatch', method: 'PUT', path: instance, body: (c) => ({ ...c.example(), id: 'someone-else' }) },
  { name: 'id missing', method: 'PUT', path: instance, body: (c) => c.example() },
  { name: 'stale If-Match', method: 'PUT', path: instance, body: resource, headers: { 'if-match': 'W/"9"' } },
  { name: 'malformed If-Match', method: 'PUT', path: instance, body: resource, headers: { 'if-match': 'nine' } },
  { name: 'bad _summary on update', method: 'PUT', path: (c, id) => `${c.type}/${id}?_summary=all`, body: resource },
  { name: 'bad _elements on update', method: 'PUT', path: (c, id) => `${c.type}/${id}?_elements=a.b`, body: resource },
  { name: 'Accept XML on update', method: 'PUT', path: instance, body: resource, headers: { accept: 'text/xml' } },
  { name: 'text body update', method: 'PUT', path: instance, body: (c, id) => JSON.stringify(resource(c, id)), headers: { 'content-type': 'text/plain' } },
  { name: 'bad _summary on patch', method: 'PATCH', path: (c, id) => `${c.type}/${id}?_summary=all`, body: patchBody, headers: JSON_PATCH },
  { name: 'Accept XML on patch', method: 'PATCH', path: instance, body: patchBody, headers: { ...JSON_PATCH, accept: 'application/xml' } },
  { name: 'stale If-Match on delete', method: 'DELETE', path: instance, headers: { 'if-match': 'W/"9"' } },
  { name: 'bad _summary on delete', method: 'DELETE', path: (c, id) => `${c.type}/${id}?_summary=all` },
  { name: 'bad _elements on delete', method: 'DELETE', path: (c, id) => `${c.type}/${id}?_elements=*` },
  { name: '_format=xml on delete', method: 'DELETE', path: (c, id) => `${c.type}/${id}?_format=xml` },
  { name: 'Accept XML on delete', method: 'DELETE', path: instance, headers: { accept: 'application/fhir+xml' } },
  { name: 'conditional update, unknown parameter', method: 'PUT', path: (c) => `${c.type}?no-such-param=1`, body: (c) => c.example() },
  { name: 'conditional delete, unknown parameter', method: 'DELETE', path: (c) => `${c.type}?no-such-param=1` },
];

async function attempt(s: TestServer, a: Attempt, c: TypeCase, id: string) {
  const body = a.body?.(c, id);
  return s.fhir(a.method, a.path(c, id), body, a.headers ?? {});
}

t.test('refused writes leave nothing behind', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const existing = (await s.fhir('POST', c.type, c.revise(c.example(), 1))).json;
    const before = (await s.fhir('GET', `${c.type}/_history`)).json.total;
    const beforeSearch = (await s.fhir('GET', c.type)).json.total;
    for (const a of [...CREATES, ...CHANGES]) {
      const res = await attempt(s, a, c, existing.id);
      t.ok(res.status >= 400 && res.status < 500, `${c.type}: ${a.name} refused (${res.status})`);
      t.equal(res.json?.resourceType, 'OperationOutcome', 'with an OperationOutcome');
      const history = await s.fhir('GET', `${c.type}/_history`);
      t.equal(history.json.total, before, `${c.type}: ${a.name} recorded no version`);
      const current = await s.fhir('GET', `${c.type}/${existing.id}`);
      t.same(current.json, existing, `${c.type}: ${a.name} left the resource as it was`);
    }
    t.equal((await s.fhir('GET', c.type)).json.total, beforeSearch, `${c.type}: search finds nothing new`);
    t.equal((await s.fhir('GET', '_history')).json.entry.filter((e: any) => e.fullUrl.includes(`/${c.type}/`)).length, before);
  }
});

t.test('a body over the limit is refused and stores nothing', async (t) => {
  const s = await startTestServer(t, { VELLUM_BODY_LIMIT: '2048' });
  const c = TYPE_CASES[0]!;
  const created = await s.fhir('POST', c.type, minimalPatient());
  t.equal(created.status, 201, 'a small body is fine');
  const existing = created.json;
  const big = { ...minimalPatient(), name: [{ family: 'x'.repeat(4000) }] };
  const create = await s.fhir('POST', c.type, big);
  t.equal(create.status, 413);
  const update = await s.fhir('PUT', `${c.type}/${existing.id}`, { ...big, id: existing.id });
  t.equal(update.status, 413);
  const patch = await s.fhir('PATCH', `${c.type}/${existing.id}`, [{ op: 'add', path: '/language', value: 'x'.repeat(4000) }], JSON_PATCH);
  t.equal(patch.status, 413);
  t.equal((await s.fhir('GET', `${c.type}/_history`)).json.total, 1);
  t.same((await s.fhir('GET', `${c.type}/${existing.id}`)).json, existing);
});
