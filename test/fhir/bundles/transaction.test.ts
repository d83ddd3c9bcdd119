/**
 * transaction — http://hl7.org/fhir/R4/http.html#transaction: all or nothing, processed DELETE,
 * POST, PUT/PATCH, GET; `urn:uuid:` / `urn:oid:` fullUrls and conditional references rewritten
 * everywhere; `ifNoneExist` / `ifMatch` / `ifNoneMatch` per entry; one commit and one fsync.
 */
import t from 'tap';
import { issueCodes, startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { minimalPatient, type Resource } from '../interactions/examples.ts';

const P1 = 'urn:uuid:6f1c1a4e-0a6b-4d2b-9a51-1b2f3c4d5e01';
const P2 = 'urn:uuid:6f1c1a4e-0a6b-4d2b-9a51-1b2f3c4d5e02';
const O1 = 'urn:uuid:6f1c1a4e-0a6b-4d2b-9a51-1b2f3c4d5e03';
const OID = 'urn:oid:1.2.3.4.5';

type Entry = { fullUrl?: string; resource?: Resource; request?: Record<string, unknown> };

function transaction(...entry: Entry[]): Resource {
  return { resourceType: 'Bundle', type: 'transaction', entry };
}

function post(resource: Resource, fullUrl?: string, extra: Record<string, unknown> = {}): Entry {
  return { ...(fullUrl ? { fullUrl } : {}), resource, request: { method: 'POST', url: resource.resourceType, ...extra } };
}

function observation(subject: string, extra: Record<string, unknown> = {}): Resource {
  return { resourceType: 'Observation', status: 'final', code: { text: 'weight' }, subject: { reference: subject }, ...extra };
}

/** Every version ever stored (all types). */
async function versions(s: TestServer): Promise<number> {
  return (await s.fhir('GET', '_history?_summary=count')).json.total;
}

/** Type/id of a response entry's location. */
function target(entry: any): string {
  return String(entry.response.location).split('/_history')[0]!;
}

t.test('a transaction creates, rewrites references and answers a transaction-response', async (t) => {
  const s = await startTestServer(t);
  const obs = observation(P1, {
    performer: [{ reference: OID }],
    // references inside extensions and contained resources are rewritten too ...
    extension: [{ url: 'https://example.org/about', valueReference: { reference: P2 } }],
    contained: [{ resourceType: 'Provenance', id: 'p', recorded: '2024-01-01T00:00:00Z', target: [{ reference: P1 }], agent: [{ who: { reference: OID } }] }],
    // ... but a uri is not a reference
    note: [{ text: P1 }],
    derivedFrom: [{ reference: '#p', display: P1 }],
    focus: [{ reference: P2 }],
    identifier: [{ system: 'urn:ietf:rfc:3986', value: P1 }],
  });
  const body = transaction(
    post(obs, O1),
    post(minimalPatient('One'), P1),
    post({ ...minimalPatient('Two'), link: [{ other: { reference: P1 }, type: 'seealso' }] }, P2),
    post({ resourceType: 'Practitioner', name: [{ family: 'Oid' }] }, OID),
  );
  const res = await s.fhir('POST', '', body);
  t.equal(res.status, 200);
  t.equal(res.json.resourceType, 'Bundle');
  t.equal(res.json.type, 'transaction-response');
  t.equal(res.json.entry.length, 4, 'one response entry per request entry, in the same order');
  const [o, p1, p2, pr] = res.json.entry;
  for (const [entry, type] of [
    [o, 'Observation'],
    [p1, 'Patient'],
    [p2, 'Patient'],
    [pr, 'Practitioner'],
  ] as const) {
    t.equal(entry.response.status, '201 Created');
    t.match(entry.response.location, new RegExp(`^${type}/[A-Za-z0-9-]+/_history/1$`));
    t.equal(entry.response.etag, 'W/"1"');
    t.equal(entry.response.lastModified, entry.resource.meta.lastUpdated);
    t.equal(entry.resource.resourceType, type, 'the representation by default');
    t.equal(entry.fullUrl, `${s.config.baseUrl}/${target(entry)}`);
  }
  t.equal(new Set(res.json.entry.map((e: any) => e.response.lastModified)).size, 1, 'one commit: one lastUpdated');

  const stored = (await s.fhir('GET', target(o))).json;
  t.same(stored, o.resource, 'the representation is what was stored');
  t.equal(stored.subject.reference, target(p1));
  t.equal(stored.performer[0].reference, target(pr), 'urn:oid rewritten');
  t.equal(stored.extension[0].valueReference.reference, target(p2), 'inside an extension');
  t.equal(stored.contained[0].target[0].reference, target(p1), 'inside a contained resource');
  t.equal(stored.contained[0].agent[0].who.reference, target(pr));
  t.equal(stored.focus[0].reference, target(p2));
  t.equal(stored.derivedFrom[0].reference, '#p', 'a local reference is kept');
  t.equal(stored.derivedFrom[0].display, P1, 'a display is not a reference');
  t.equal(stored.note[0].text, P1, 'text is not a reference');
  t.equal(stored.identifier[0].value, P1, 'an identifier value is not a reference');
  t.equal((await s.fhir('GET', target(p2))).json.link[0].other.reference, target(p1));

  const search = await s.fhir('GET', `Observation?subject=${target(p1)}&_summary=count`);
  t.equal(search.json.total, 1, 'indexed under the rewritten reference');
});

t.test('the CapabilityStatement lists transaction and batch', async (t) => {
  const s = await startTestServer(t);
  const codes = (await s.fhir('GET', 'metadata')).json.rest[0].interaction.map((i: any) => i.code);
  t.ok(codes.includes('transaction'));
  t.ok(codes.includes('batch'));
});

t.test('an empty transaction is answered with an empty transaction-response', async (t) => {
  const s = await startTestServer(t);
  const res = await s.fhir('POST', '', transaction());
  t.equal(res.status, 200);
  t.equal(res.json.type, 'transaction-response');
  t.same(res.json.entry, []);
  const noEntry = await s.fhir('POST', '', { resourceType: 'Bundle', type: 'batch' });
  t.equal(noEntry.status, 200);
  t.equal(noEntry.json.type, 'batch-response');
});

t.test('processing order: DELETE, POST, PUT/PATCH, GET whatever the order of the entries', async (t) => {
  const s = await startTestServer(t);
  await s.fhir('PUT', 'Patient/gone', { ...minimalPatient('Gone'), id: 'gone' });
  await s.fhir('PUT', 'Patient/kept', { ...minimalPatient('Kept'), id: 'kept' });
  const patch = [{ op: 'replace', path: '/gender', value: 'female' }];
  const res = await s.fhir(
    'POST',
    '',
    transaction(
      { request: { method: 'GET', url: `Observation?subject=Patient/kept` } },
      { request: { method: 'GET', url: 'Patient/gone' } },
      { request: { method: 'GET', url: 'Patient/kept/_history/2' } },
      {
        resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from(JSON.stringify(patch)).toString('base64') },
        request: { method: 'PATCH', url: 'Patient/kept' },
      },
      post(observation('Patient/kept')),
      { request: { method: 'DELETE', url: 'Patient/gone' } },
      { resource: { ...minimalPatient('New'), id: 'new' }, request: { method: 'PUT', url: 'Patient/new' } },
      { request: { method: 'HEAD', url: 'Patient/new' } },
    ),
  );
  t.equal(res.status, 200);
  const status = res.json.entry.map((e: any) => e.response.status);
  t.same(status, ['200 OK', '410 Gone', '200 OK', '200 OK', '201 Created', '204 No Content', '201 Created', '200 OK']);
  const [search, gone, vread, patched, , deleted, put, head] = res.json.entry;
  t.equal(search.resource.type, 'searchset', 'the search ran after the POST');
  t.equal(search.resource.total, 1);
  t.same(issueCodes(gone.response.outcome), ['deleted'], 'the read ran after the DELETE: its failure is its own entry');
  t.equal(vread.resource.gender, 'female', 'the vread ran after the PATCH');
  t.equal(patched.resource.gender, 'female');
  t.equal(patched.response.location, 'Patient/kept/_history/2');
  t.equal(deleted.response.etag, 'W/"2"', 'the deletion version');
  t.notOk(deleted.resource);
  t.equal(put.response.location, 'Patient/new/_history/1');
  t.notOk(head.resource, 'HEAD: no resource');
  t.equal(head.response.etag, 'W/"1"');
  t.equal((await s.fhir('GET', 'Patient/gone')).status, 410);
});

t.test('conditional create (ifNoneExist) inside a transaction', async (t) => {
  const s = await startTestServer(t);
  const org = { resourceType: 'Organization', identifier: [{ system: 'urn:test:org', value: 'acme' }], name: 'Acme' };
  const first = await s.fhir('POST', '', transaction(post(org, O1, { ifNoneExist: 'identifier=urn:test:org|acme' })));
  t.equal(first.json.entry[0].response.status, '201 Created');
  const orgRef = target(first.json.entry[0]);

  // One match: answered 200 with the existing resource, and the fullUrl stands for it.
  const second = await s.fhir(
    'POST',
    '',
    transaction(
      post({ ...org, name: 'Acme 2' }, O1, { ifNoneExist: 'Organization?identifier=urn:test:org|acme' }),
      post({ ...minimalPatient(), managingOrganization: { reference: O1 } }, P1),
    ),
  );
  t.equal(second.status, 200);
  const [matched, patient] = second.json.entry;
  t.equal(matched.response.status, '200 OK');
  t.equal(matched.response.location, `${orgRef}/_history/1`);
  t.equal(matched.response.etag, 'W/"1"');
  t.equal(matched.resource.name, 'Acme', 'the existing resource, unchanged');
  t.equal(patient.resource.managingOrganization.reference, orgRef, 'a reference to its fullUrl names the existing resource');

  // Several matches: 412 and nothing stored.
  await s.fhir('POST', 'Organization', org);
  const before = await versions(s);
  const third = await s.fhir('POST', '', transaction(post(minimalPatient(), P1), post(org, O1, { ifNoneExist: 'identifier=urn:test:org|acme' })));
  t.equal(third.status, 412);
  t.same(issueCodes(third.json), ['multiple-matches']);
  t.same(vellumCodes(third.json), ['VLM_FHIR_MULTIPLE_MATCHES']);
  t.same(third.json.issue[0].expression, ['Bundle.entry[1]']);
  t.equal(await versions(s), before, 'nothing stored');
});

t.test('conditional references are resolved by search', async (t) => {
  const s = await startTestServer(t);
  const made = await s.fhir('POST', 'Practitioner', { resourceType: 'Practitioner', identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '111' }] });
  const ref = 'Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|111';
  const res = await s.fhir(
    'POST',
    '',
    transaction(post(minimalPatient(), P1), post(observation(P1, { performer: [{ reference: ref }] })), post(observation(P1, { performer: [{ reference: ref }] }))),
  );
  t.equal(res.status, 200);
  t.equal(res.json.entry[1].resource.performer[0].reference, `Practitioner/${made.json.id}`);
  t.equal(res.json.entry[2].resource.performer[0].reference, `Practitioner/${made.json.id}`);

  const before = await versions(s);
  const none = await s.fhir('POST', '', transaction(post(minimalPatient(), P1), post(observation(P1, { performer: [{ reference: 'Practitioner?identifier=urn:x|none' }] }))));
  t.equal(none.status, 404, 'no match');
  t.same(issueCodes(none.json), ['not-found']);
  t.same(vellumCodes(none.json), ['VLM_BUNDLE_REFERENCE_NOT_FOUND']);
  t.same(none.json.issue[0].expression, ['Bundle.entry[1]']);

  await s.fhir('POST', 'Practitioner', { resourceType: 'Practitioner', identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '111' }] });
  const several = await s.fhir('POST', '', transaction(post(observation('Patient/x', { performer: [{ reference: ref }] }))));
  t.equal(several.status, 412, 'several matches');
  t.same(vellumCodes(several.json), ['VLM_FHIR_MULTIPLE_MATCHES']);

  const unknown = await s.fhir('POST', '', transaction(post(observation('Patient/x', { performer: [{ reference: 'Practitioner?nonsense=1' }] }))));
  t.equal(unknown.status, 400, 'unknown criteria');
  t.same(vellumCodes(unknown.json), ['VLM_FHIR_UNKNOWN_PARAMETER']);
  const badType = await s.fhir('POST', '', transaction(post(observation('Patient/x', { performer: [{ reference: 'Nothing?identifier=1' }] }))));
  t.equal(badType.status, 400, 'unknown type');
  t.same(vellumCodes(badType.json), ['VLM_BUNDLE_BAD_REFERENCE']);
  t.equal(await versions(s), before + 1, 'none of the failed transactions stored anything');
});

t.test('ifMatch and ifNoneMatch per entry', async (t) => {
  const s = await startTestServer(t);
  await s.fhir('PUT', 'Patient/m', { ...minimalPatient(), id: 'm' });
  const put = (headers: Record<string, string>) => ({ resource: { ...minimalPatient('Changed'), id: 'm' }, request: { method: 'PUT', url: 'Patient/m', ...headers } });

  const stale = await s.fhir('POST', '', transaction(post(minimalPatient(), P1), put({ ifMatch: 'W/"2"' })));
  t.equal(stale.status, 412);
  t.same(vellumCodes(stale.json), ['VLM_FHIR_VERSION_MISMATCH']);
  t.same(stale.json.issue[0].expression, ['Bundle.entry[1]']);
  const noneMatch = await s.fhir('POST', '', transaction(put({ ifNoneMatch: '*' })));
  t.equal(noneMatch.status, 412, 'ifNoneMatch: * refuses to replace');
  t.same(vellumCodes(noneMatch.json), ['VLM_BUNDLE_IF_NONE_MATCH']);
  t.equal(await versions(s), 1, 'nothing stored');

  const ok = await s.fhir('POST', '', transaction(put({ ifMatch: 'W/"1"' })));
  t.equal(ok.status, 200);
  t.equal(ok.json.entry[0].response.status, '200 OK');
  t.equal(ok.json.entry[0].response.location, 'Patient/m/_history/2');

  const notModified = await s.fhir('POST', '', transaction({ request: { method: 'GET', url: 'Patient/m', ifNoneMatch: 'W/"2"' } }));
  t.equal(notModified.json.entry[0].response.status, '304 Not Modified');
  t.notOk(notModified.json.entry[0].resource);
});

t.test('conditional update, delete and patch entries', async (t) => {
  const s = await startTestServer(t);
  const tagged = (value: string) => ({ ...minimalPatient(), identifier: [{ system: 'urn:test:p', value }] });
  await s.fhir('POST', 'Patient', tagged('a'));
  await s.fhir('POST', 'Patient', tagged('b'));
  const patch = [{ op: 'add', path: '/active', value: true }];
  const res = await s.fhir(
    'POST',
    '',
    transaction(
      { fullUrl: P1, resource: { ...tagged('a'), gender: 'female' }, request: { method: 'PUT', url: 'Patient?identifier=urn:test:p|a' } },
      { request: { method: 'DELETE', url: 'Patient?identifier=urn:test:p|b' } },
      { resource: tagged('c'), request: { method: 'PUT', url: 'Patient?identifier=urn:test:p|c' } },
      post(observation(P1)),
      { request: { method: 'DELETE', url: 'Patient?identifier=urn:test:p|nobody' } },
    ),
  );
  t.equal(res.status, 200);
  t.same(
    res.json.entry.map((e: any) => e.response.status),
    ['200 OK', '204 No Content', '201 Created', '201 Created', '204 No Content'],
  );
  t.equal(res.json.entry[3].resource.subject.reference, target(res.json.entry[0]), 'the fullUrl of a conditional update names its match');
  t.equal((await s.fhir('GET', 'Patient?identifier=urn:test:p|b&_summary=count')).json.total, 0);

  const patched = await s.fhir(
    'POST',
    '',
    transaction({
      resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from(JSON.stringify(patch)).toString('base64') },
      request: { method: 'PATCH', url: 'Patient?identifier=urn:test:p|c' },
    }),
  );
  t.equal(patched.json.entry[0].response.status, '200 OK');
  t.equal(patched.json.entry[0].resource.active, true);
});

t.test('an invalid entry fails the whole transaction, naming it, and nothing is stored', async (t) => {
  const s = await startTestServer(t);
  await s.fhir('PUT', 'Patient/keep', { ...minimalPatient(), id: 'keep' });
  const before = await versions(s);
  const entries = [
    post(minimalPatient('A'), P1),
    { request: { method: 'DELETE', url: 'Patient/keep' } },
    post(observation(P1)),
    post({ ...minimalPatient('Bad'), birthDate: 'not-a-date' }, P2),
    post(observation(P2)),
  ];
  const res = await s.fhir('POST', '', transaction(...entries));
  t.equal(res.status, 400);
  t.equal(res.json.resourceType, 'OperationOutcome');
  t.same(vellumCodes(res.json), ['VLM_FHIR_INVALID_RESOURCE']);
  t.equal(res.json.issue[0].expression[0], 'Bundle.entry[3]', 'the entry is named');
  t.equal(res.json.issue[0].expression[1], 'Bundle.entry[3].resource.birthDate', 'and the element inside it');
  t.equal(await versions(s), before, 'nothing stored');
  t.equal((await s.fhir('GET', 'Patient/keep')).status, 200, 'the DELETE was not applied');
  t.equal((await s.fhir('GET', 'Observation?_summary=count')).json.total, 0);

  // The same with the valid entry alone goes through.
  const good = await s.fhir('POST', '', transaction(entries[0]!, entries[2]!));
  t.equal(good.status, 200);
});

t.test('malformed transactions are 4xx OperationOutcomes that change nothing', async (t) => {
  const s = await startTestServer(t);
  await s.fhir('PUT', 'Patient/x', { ...minimalPatient(), id: 'x' });
  const before = await versions(s);
  const cases: [string, unknown, number, string, string[]?][] = [
    ['a collection', { resourceType: 'Bundle', type: 'collection', entry: [] }, 400, 'VLM_BUNDLE_TYPE'],
    ['a document', { resourceType: 'Bundle', type: 'document', entry: [] }, 400, 'VLM_BUNDLE_TYPE'],
    ['a message', { resourceType: 'Bundle', type: 'message', entry: [] }, 400, 'VLM_BUNDLE_TYPE'],
    ['a searchset', { resourceType: 'Bundle', type: 'searchset' }, 400, 'VLM_BUNDLE_TYPE'],
    ['no type', { resourceType: 'Bundle' }, 400, 'VLM_BUNDLE_TYPE'],
    ['a transaction-response', { resourceType: 'Bundle', type: 'transaction-response', entry: [] }, 400, 'VLM_BUNDLE_TYPE'],
    ['not a Bundle', minimalPatient(), 400, 'VLM_FHIR_TYPE_MISMATCH'],
    ['entry not an array', { resourceType: 'Bundle', type: 'transaction', entry: {} }, 400, 'VLM_BUNDLE_ENTRY_INVALID'],
    ['an entry that is not an object', transaction('x' as never), 400, 'VLM_BUNDLE_ENTRY_INVALID', ['Bundle.entry[0]']],
    ['an entry without request', transaction(post(minimalPatient()), { resource: minimalPatient() }), 400, 'VLM_BUNDLE_REQUEST_MISSING', ['Bundle.entry[1]']],
    ['an unknown method', transaction({ resource: minimalPatient(), request: { method: 'COPY', url: 'Patient' } }), 400, 'VLM_BUNDLE_METHOD'],
    ['a lower-case method', transaction({ resource: minimalPatient(), request: { method: 'post', url: 'Patient' } }), 400, 'VLM_BUNDLE_METHOD'],
    ['no url', transaction({ resource: minimalPatient(), request: { method: 'POST' } }), 400, 'VLM_BUNDLE_BAD_URL'],
    ['a url of another server', transaction({ resource: { ...minimalPatient(), id: 'x' }, request: { method: 'PUT', url: 'http://other.example/fhir/Patient/x' } }), 400, 'VLM_BUNDLE_BAD_URL'],
    ['an operation', transaction({ resource: minimalPatient(), request: { method: 'POST', url: 'Patient/$validate' } }), 400, 'VLM_BUNDLE_BAD_URL'],
    ['POST without resource', transaction({ request: { method: 'POST', url: 'Patient' } }), 400, 'VLM_BUNDLE_RESOURCE_MISSING'],
    ['a resource of another type', transaction({ resource: minimalPatient(), request: { method: 'POST', url: 'Observation' } }), 400, 'VLM_FHIR_TYPE_MISMATCH'],
    ['an unknown type', transaction({ resource: { resourceType: 'Nope' }, request: { method: 'POST', url: 'Nope' } }), 404, 'VLM_FHIR_UNKNOWN_TYPE'],
    ['PUT without id', transaction({ resource: minimalPatient(), request: { method: 'PUT', url: 'Patient/x' } }), 400, 'VLM_FHIR_ID_MISSING'],
    ['PUT with another id', transaction({ resource: { ...minimalPatient(), id: 'y' }, request: { method: 'PUT', url: 'Patient/x' } }), 400, 'VLM_FHIR_ID_MISMATCH'],
    ['a bad id', transaction({ request: { method: 'DELETE', url: 'Patient/a$b' } }), 400, 'VLM_FHIR_BAD_ID'],
    ['PATCH as JSON', transaction({ resource: [{ op: 'add' }] as never, request: { method: 'PATCH', url: 'Patient/x' } }), 400, 'VLM_BUNDLE_PATCH_FORMAT'],
    [
      'a failing patch',
      transaction({
        resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from('[{"op":"test","path":"/gender","value":"x"}]').toString('base64') },
        request: { method: 'PATCH', url: 'Patient/x' },
      }),
      422,
      'VLM_FHIR_PATCH_TEST_FAILED',
    ],
    ['PATCH of nothing', transaction({ resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: 'W10=' }, request: { method: 'PATCH', url: 'Patient/none' } }), 404, 'VLM_FHIR_NOT_FOUND'],
    ['a GET of no route', transaction({ request: { method: 'GET', url: 'Patient/x/y/z/w/v' } }), 404, 'VLM_FHIR_NO_ROUTE'],
    ['a GET with a bad _summary', transaction({ request: { method: 'GET', url: 'Patient/x?_summary=nope' } }), 400, 'VLM_FHIR_BAD_PARAMETER'],
    ['duplicate fullUrls', transaction(post(minimalPatient(), P1), post(minimalPatient(), P1)), 400, 'VLM_BUNDLE_DUPLICATE_FULLURL', ['Bundle.entry[0]', 'Bundle.entry[1]']],
    [
      'two entries on one resource',
      transaction({ resource: { ...minimalPatient(), id: 'x' }, request: { method: 'PUT', url: 'Patient/x' } }, { request: { method: 'DELETE', url: 'Patient/x' } }),
      400,
      'VLM_BUNDLE_DUPLICATE_RESOURCE',
      ['Bundle.entry[0]', 'Bundle.entry[1]'],
    ],
    ['a urn:uuid naming no entry', transaction(post(observation(P1))), 400, 'VLM_BUNDLE_UNRESOLVED_REFERENCE', ['Bundle.entry[0]']],
    ['an ifNoneExist without criteria', transaction(post(minimalPatient(), P1, { ifNoneExist: '' })), 412, 'VLM_FHIR_CRITERIA_EMPTY'],
    ['a non-string ifMatch', transaction({ resource: { ...minimalPatient(), id: 'x' }, request: { method: 'PUT', url: 'Patient/x', ifMatch: 1 } }), 400, 'VLM_BUNDLE_ENTRY_INVALID'],
  ];
  for (const [name, body, status, code, expression] of cases) {
    const res = await s.fhir('POST', '', body);
    t.equal(res.status, status, name);
    t.equal(res.json?.resourceType, 'OperationOutcome', `${name}: an OperationOutcome`);
    t.same(vellumCodes(res.json), [code], `${name}: ${code}`);
    if (expression) t.same(res.json.issue[0].expression, expression, `${name}: names ${expression.join(', ')}`);
  }
  const deep = `{"resourceType":"Patient","extension":${'['.repeat(5000)}${']'.repeat(5000)}}`;
  const deepRef = `{"resourceType":"Patient","extension":[${'{"extension":['.repeat(1500)}{"valueReference":{"reference":"${P1}"}}${']}'.repeat(1500)}]}`;
  const garbage = [
    '{',
    '[]',
    '"x"',
    'null',
    '{"resourceType":"Bundle","type":"transaction","entry":[null]}',
    `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":${deep},"request":{"method":"POST","url":"Patient"}}]}`,
    `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":${deepRef},"request":{"method":"POST","url":"Patient"}}]}`,
    `{"resourceType":"Bundle","type":"batch","entry":[{"resource":${deepRef},"request":{"method":"POST","url":"Patient"}}]}`,
    '{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","__proto__":{"reference":"x"},"constructor":{"reference":"urn:uuid:1"}},"request":{"method":"POST","url":"Patient"}}]}',
  ];
  for (const text of garbage) {
    const res = await s.fhir('POST', '', text);
    if (res.status === 200) {
      t.ok(res.json.entry.every((e: any) => e.response.status.startsWith('4')), `${text.slice(0, 80)}: batch entries refused`);
      continue;
    }
    t.ok(res.status >= 400 && res.status < 500, `${text.slice(0, 80)} → ${res.status}`);
    t.ok(vellumCodes(res.json).length > 0);
  }
  t.equal(await versions(s), before, 'nothing stored');
});

t.test('VELLUM_BUNDLE_MAX_ENTRIES: beyond it, 413', async (t) => {
  const s = await startTestServer(t, { VELLUM_BUNDLE_MAX_ENTRIES: '3' });
  const three = Array.from({ length: 3 }, () => post(minimalPatient()));
  t.equal((await s.fhir('POST', '', transaction(...three))).status, 200, 'at the limit');
  const four = await s.fhir('POST', '', transaction(...three, post(minimalPatient())));
  t.equal(four.status, 413);
  t.same(issueCodes(four.json), ['too-long']);
  t.same(vellumCodes(four.json), ['VLM_BUNDLE_TOO_MANY_ENTRIES']);
  const batch = await s.fhir('POST', '', { resourceType: 'Bundle', type: 'batch', entry: [...three, post(minimalPatient())] });
  t.equal(batch.status, 413, 'batches too');
  t.equal(await versions(s), 3);
});

t.test('Prefer: return=minimal and return=OperationOutcome', async (t) => {
  const s = await startTestServer(t);
  const minimal = await s.fhir('POST', '', transaction(post(minimalPatient(), P1), post(observation(P1))), { prefer: 'return=minimal' });
  t.equal(minimal.status, 200);
  for (const entry of minimal.json.entry) {
    t.notOk(entry.resource, 'no resource');
    t.equal(entry.response.status, '201 Created');
    t.ok(entry.response.location);
    t.ok(entry.response.etag);
    t.ok(entry.response.lastModified);
  }
  const outcome = await s.fhir('POST', '', transaction(post(minimalPatient())), { prefer: 'return=OperationOutcome' });
  t.notOk(outcome.json.entry[0].resource);
  t.same(issueCodes(outcome.json.entry[0].response.outcome), ['informational']);
});

t.test('exact decimals survive a transaction', async (t) => {
  const s = await startTestServer(t);
  const text = `{"resourceType":"Bundle","type":"transaction","entry":[
    {"fullUrl":"${P1}","resource":{"resourceType":"Patient","gender":"male"},"request":{"method":"POST","url":"Patient"}},
    {"resource":{"resourceType":"Observation","status":"final","code":{"text":"w"},"subject":{"reference":"${P1}"},"valueQuantity":{"value":5.40}},"request":{"method":"POST","url":"Observation"}}]}`;
  const res = await s.fhir('POST', '', text);
  t.equal(res.status, 200);
  t.match(res.text, /"value":5\.40\b/, 'answered exactly');
  const stored = await s.fhir('GET', target(res.json.entry[1]));
  t.match(stored.text, /"value":5\.40\b/, 'stored exactly');
  t.equal(stored.json.subject.reference, target(res.json.entry[0]), 'and its reference rewritten');
});

t.test('one commit, one index transaction and one fsync for the whole transaction', async (t) => {
  const s = await startTestServer(t);
  const { writer, repository } = s.services;
  const counts = { commit: 0, ops: 0, index: 0, flush: 0 };
  const commit = writer.commit.bind(writer);
  writer.commit = async (ops, context) => {
    counts.commit++;
    counts.ops += ops.length;
    return commit(ops, context);
  };
  const indexCommit = repository.index.commit.bind(repository.index);
  repository.index.commit = async (writes) => {
    counts.index++;
    return indexCommit(writes);
  };
  const flush = repository.flush.bind(repository);
  repository.flush = async () => {
    counts.flush++;
    return flush();
  };
  const entries = [post(minimalPatient(), P1)];
  for (let i = 0; i < 50; i++) entries.push(post(observation(P1)));
  const res = await s.fhir('POST', '', transaction(...entries, { request: { method: 'GET', url: 'Observation?_summary=count' } }));
  t.equal(res.status, 200);
  t.equal(res.json.entry[51].resource.total, 50);
  t.same(counts, { commit: 1, ops: 51, index: 1, flush: 1 });
});

t.test('entry URLs with a trailing slash are accepted as on the HTTP interface', async (t) => {
  const s = await startTestServer(t);
  const res = await s.fhir(
    'POST',
    '',
    transaction(
      { fullUrl: 'urn:uuid:00000000-0000-4000-8000-0000000000a1', resource: minimalPatient(), request: { method: 'POST', url: 'Patient/' } },
      { resource: { ...minimalPatient(), id: 'slash' }, request: { method: 'PUT', url: 'Patient/slash/' } },
    ),
  );
  t.equal(res.status, 200);
  t.same(
    res.json.entry.map((e: any) => e.response.status.split(' ')[0]),
    ['201', '201'],
  );
  t.equal((await s.fhir('GET', 'Patient/slash')).status, 200);
  const http = await s.app.inject({
    method: 'POST',
    url: '/fhir/Patient/',
    headers: { 'content-type': 'application/fhir+json' },
    payload: JSON.stringify(minimalPatient()),
  });
  t.equal(http.statusCode, 201, 'as POST /fhir/Patient/ is');
  // Empty segments inside the path stay refused.
  const bad = await s.fhir('POST', '', transaction({ resource: minimalPatient(), request: { method: 'POST', url: 'Patient//x' } }));
  t.equal(bad.status, 400);
  t.same(vellumCodes(bad.json), ['VLM_BUNDLE_BAD_URL']);
});
