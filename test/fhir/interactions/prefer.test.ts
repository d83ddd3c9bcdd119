/**
 * `Prefer: return=minimal | representation | OperationOutcome` on create, update, patch and
 * delete (http://hl7.org/fhir/R4/http.html#ops).
 */
import t from 'tap';
import { issueCodes, startTestServer, type TestServer } from '../../helpers/server.ts';
import { JSON_PATCH, TYPE_CASES } from './examples.ts';

type Write = (s: TestServer, type: string, id: string, n: number, prefer?: string) => ReturnType<TestServer['fhir']>;

t.test('Prefer on create, update and patch', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const seed = await s.fhir('POST', c.type, c.example());
    const id = seed.json.id;
    const writes: [string, number, Write][] = [
      ['create', 201, (s, type, _id, n, prefer) => s.fhir('POST', type, c.revise(c.example(), n), prefer ? { prefer } : {})],
      ['update', 200, (s, type, id, n, prefer) => s.fhir('PUT', `${type}/${id}`, { ...c.revise(c.example(), n), id }, prefer ? { prefer } : {})],
      [
        'patch',
        200,
        (s, type, id, n, prefer) =>
          s.fhir('PATCH', `${type}/${id}`, [{ op: 'add', path: '/language', value: n % 2 ? 'en' : 'fr' }], prefer ? { ...JSON_PATCH, prefer } : JSON_PATCH),
      ],
    ];
    let n = 1;
    for (const [name, status, write] of writes) {
      const minimal = await write(s, c.type, id, n++, 'return=minimal');
      t.equal(minimal.status, status, `${c.type} ${name} minimal`);
      t.equal(minimal.text, '', 'no body');
      t.match(minimal.headers.etag, /^W\/"\d+"$/);
      t.match(minimal.headers.location, new RegExp(`^${s.config.baseUrl}/${c.type}/[^/]+/_history/\\d+$`));

      const representation = await write(s, c.type, id, n++, 'return=representation');
      t.equal(representation.status, status, `${c.type} ${name} representation`);
      t.equal(representation.json.resourceType, c.type);
      t.equal(`W/"${representation.json.meta.versionId}"`, representation.headers.etag);
      const read = await s.fhir('GET', `${c.type}/${representation.json.id}`);
      t.same(representation.json, read.json, 'the representation is what was stored');

      const outcome = await write(s, c.type, id, n++, 'return=OperationOutcome');
      t.equal(outcome.status, status, `${c.type} ${name} OperationOutcome`);
      t.equal(outcome.json.resourceType, 'OperationOutcome');
      t.same(issueCodes(outcome.json), ['informational']);
      t.match(outcome.headers.location, /\/_history\/\d+$/);

      const plain = await write(s, c.type, id, n++);
      t.equal(plain.json.resourceType, c.type, `${c.type} ${name}: representation by default`);
      const unknown = await write(s, c.type, id, n++, 'return=everything');
      t.equal(unknown.json.resourceType, c.type, 'an unknown preference is ignored');
      const combined = await write(s, c.type, id, n++, 'respond-async, return=minimal; handling=lenient');
      t.equal(combined.text, '', 'return= found among other preferences');
    }
  }
});

t.test('Prefer on delete', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await s.fhir('POST', c.type, c.example())).json.id);
    const minimal = await s.fhir('DELETE', `${c.type}/${ids[0]}`, undefined, { prefer: 'return=minimal' });
    t.equal(minimal.status, 204, `${c.type} delete minimal`);
    t.equal(minimal.text, '');
    const representation = await s.fhir('DELETE', `${c.type}/${ids[1]}`, undefined, { prefer: 'return=representation' });
    t.equal(representation.status, 204, 'there is nothing to represent after a delete');
    t.equal(representation.text, '');
    const outcome = await s.fhir('DELETE', `${c.type}/${ids[2]}`, undefined, { prefer: 'return=OperationOutcome' });
    t.equal(outcome.status, 200, `${c.type} delete OperationOutcome`);
    t.equal(outcome.json.resourceType, 'OperationOutcome');
    t.same(issueCodes(outcome.json), ['informational']);
    for (const id of ids) t.equal((await s.fhir('GET', `${c.type}/${id}`)).status, 410, 'each was deleted');
    const again = await s.fhir('DELETE', `${c.type}/${ids[2]}`, undefined, { prefer: 'return=OperationOutcome' });
    t.equal(again.status, 200);
    t.same(issueCodes(again.json), ['informational']);
    t.equal((await s.fhir('GET', `${c.type}/${ids[2]}/_history`)).json.total, 2, 'a repeated delete records nothing');
  }
});

t.test('Prefer does not change what an error looks like', async (t) => {
  const s = await startTestServer(t);
  for (const prefer of ['return=minimal', 'return=representation', 'return=OperationOutcome']) {
    const res = await s.fhir('POST', 'Patient', TYPE_CASES[0]!.invalid(TYPE_CASES[0]!.example()), { prefer });
    t.equal(res.status, 400, prefer);
    t.equal(res.json.resourceType, 'OperationOutcome');
    t.ok(res.json.issue.some((i: any) => i.severity === 'error'));
  }
});
