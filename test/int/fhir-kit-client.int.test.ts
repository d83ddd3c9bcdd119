/**
 * A real FHIR client (fhir-kit-client, as EHR integrators use it) against the real server started
 * as `npm start` starts it: every interaction the client offers and the CapabilityStatement claims.
 * http://hl7.org/fhir/R4/http.html
 */
import t from 'tap';
import { Client, type FhirResource } from 'fhir-kit-client';
import { startProcessServer, type ProcessServer } from '../helpers/process-server.ts';

type Resource = FhirResource & Record<string, any>;

/** HTTP status of a client result (fhir-kit-client keeps the Response on a hidden property). */
function statusOf(result: FhirResource): number | undefined {
  return Client.httpFor(result).response?.status;
}

function headerOf(result: FhirResource, name: string): string | null | undefined {
  return Client.httpFor(result).response?.headers.get(name);
}

/** The rejection of a client call: HTTP status and the OperationOutcome's issue codes. */
async function rejection(promise: Promise<unknown>): Promise<{ status: number | undefined; resourceType: unknown; codes: string[] }> {
  try {
    await promise;
  } catch (err) {
    const data = (err as { response?: { status?: number; data?: any } }).response;
    return {
      status: data?.status,
      resourceType: data?.data?.resourceType,
      codes: (data?.data?.issue ?? []).map((i: any) => i.code),
    };
  }
  throw new Error('expected the call to reject');
}

const matchIds = (bundle: Resource): string[] =>
  (bundle.entry ?? []).filter((e: any) => e.search?.mode === 'match').map((e: any) => e.resource.id);

let server: ProcessServer;
let client: Client;

t.before(async () => {
  // The audit trail is off here: this test counts system history entries, and every call would add an AuditEvent.
  server = await startProcessServer(t, { env: { VELLUM_AUDIT: 'off' } });
  client = new Client({ baseUrl: server.baseUrl, bearerToken: server.token });
});


t.test('capabilityStatement', async (t) => {
  const cs = (await client.capabilityStatement()) as Resource;
  t.equal(cs.resourceType, 'CapabilityStatement');
  t.equal(cs.fhirVersion, '4.0.1');
  t.ok(cs.format.includes('application/fhir+json') || cs.format.includes('json'));
  t.ok(cs.patchFormat.includes('application/json-patch+json'));
  const rest = cs.rest[0];
  t.ok(rest.interaction.some((i: any) => i.code === 'history-system'));
  for (const type of ['Patient', 'Observation', 'MedicationRequest', 'Practitioner', 'Organization']) {
    const entry = rest.resource.find((r: any) => r.type === type);
    t.ok(entry, `${type} is listed`);
    const codes = entry.interaction.map((i: any) => i.code);
    for (const code of ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type']) {
      t.ok(codes.includes(code), `${type}: ${code}`);
    }
    t.equal(entry.conditionalCreate, true, `${type}: conditional create`);
  }
});

t.test('create, read, vread, update, patch, delete across resource types', async (t) => {
  const org = (await client.create({
    resourceType: 'Organization',
    body: { resourceType: 'Organization', name: 'Burgers University Medical Center', active: true },
  })) as Resource;
  t.equal(statusOf(org), 201);
  t.ok(org.id);
  t.equal(org.meta.versionId, '1');
  t.equal(headerOf(org, 'location'), `${server.baseUrl}/Organization/${org.id}/_history/1`);

  const practitioner = (await client.create({
    resourceType: 'Practitioner',
    body: {
      resourceType: 'Practitioner',
      identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '9941339108' }],
      name: [{ family: 'Careful', given: ['Adam'], prefix: ['Dr'] }],
    },
  })) as Resource;
  t.equal(statusOf(practitioner), 201);

  const patient = (await client.create({
    resourceType: 'Patient',
    body: {
      resourceType: 'Patient',
      name: [{ family: 'Chalmers', given: ['Peter'] }],
      gender: 'male',
      birthDate: '1974-12-25',
      managingOrganization: { reference: `Organization/${org.id}` },
      generalPractitioner: [{ reference: `Practitioner/${practitioner.id}` }],
    },
  })) as Resource;
  t.equal(statusOf(patient), 201);

  const observation = (await client.create({
    resourceType: 'Observation',
    body: {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '29463-7', display: 'Body weight' }] },
      subject: { reference: `Patient/${patient.id}` },
      effectiveDateTime: '2024-03-01T09:30:00Z',
      valueQuantity: { value: 72.5, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
    },
  })) as Resource;
  t.equal(statusOf(observation), 201);

  const medication = (await client.create({
    resourceType: 'MedicationRequest',
    body: {
      resourceType: 'MedicationRequest',
      status: 'active',
      intent: 'order',
      medicationCodeableConcept: { coding: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '582620' }] },
      subject: { reference: `Patient/${patient.id}` },
      requester: { reference: `Practitioner/${practitioner.id}` },
    },
  })) as Resource;
  t.equal(statusOf(medication), 201);

  // read
  for (const created of [org, practitioner, patient, observation, medication]) {
    const read = (await client.read({ resourceType: created.resourceType, id: created.id as string })) as Resource;
    t.equal(statusOf(read), 200);
    t.same(read, created, `${created.resourceType} reads back exactly as created`);
    t.equal(headerOf(read, 'etag'), 'W/"1"');
  }
  const fromReference = (await client.resolve({ reference: `Practitioner/${practitioner.id}` })) as Resource;
  t.equal(fromReference.id, practitioner.id, 'resolve() follows a relative reference');

  // update → version 2; vread keeps version 1
  const updated = (await client.update({
    resourceType: 'Patient',
    id: patient.id as string,
    body: { ...patient, meta: undefined, gender: 'other' },
  })) as Resource;
  t.equal(statusOf(updated), 200);
  t.equal(updated.meta.versionId, '2');
  t.equal(updated.gender, 'other');
  const v1 = (await client.vread({ resourceType: 'Patient', id: patient.id as string, version: '1' })) as Resource;
  t.equal(v1.gender, 'male');
  t.equal(v1.meta.versionId, '1');

  // If-Match on a stale version → 412
  const stale = await rejection(
    client.update({ resourceType: 'Patient', id: patient.id as string, body: { ...updated, meta: undefined }, options: { headers: { 'If-Match': 'W/"1"' } } }),
  );
  t.equal(stale.status, 412);
  t.equal(stale.resourceType, 'OperationOutcome');

  // patch (JSON Patch) → version 3
  const patched = (await client.patch({
    resourceType: 'Patient',
    id: patient.id as string,
    jsonPatch: [
      { op: 'replace', path: '/birthDate', value: '1974-12-26' },
      { op: 'add', path: '/telecom', value: [{ system: 'phone', value: '+1 555 0100', use: 'home' }] },
      { op: 'test', path: '/gender', value: 'other' },
    ],
  })) as Resource;
  t.equal(statusOf(patched), 200);
  t.equal(patched.meta.versionId, '3');
  t.equal(patched.birthDate, '1974-12-26');
  t.same(patched.telecom, [{ system: 'phone', value: '+1 555 0100', use: 'home' }]);
  t.same((await client.read({ resourceType: 'Patient', id: patient.id as string })) as Resource, patched, 'the patch is stored');

  const failedTest = await rejection(
    client.patch({ resourceType: 'Patient', id: patient.id as string, jsonPatch: [{ op: 'test', path: '/gender', value: 'male' }] }),
  );
  t.equal(failedTest.status, 422, 'a failing JSON Patch test op is 422');
  t.equal(failedTest.resourceType, 'OperationOutcome');
  const invalidResult = await rejection(
    client.patch({ resourceType: 'Patient', id: patient.id as string, jsonPatch: [{ op: 'replace', path: '/gender', value: 42 }] }),
  );
  t.ok([400, 422].includes(invalidResult.status!), `a patch producing an invalid resource is rejected (${invalidResult.status})`);
  t.equal(invalidResult.resourceType, 'OperationOutcome');
  t.equal(((await client.read({ resourceType: 'Patient', id: patient.id as string })) as Resource).meta.versionId, '3', 'failed patches change nothing');

  // instance history: newest first, every version
  const history = (await client.resourceHistory({ resourceType: 'Patient', id: patient.id as string })) as Resource;
  t.equal(history.type, 'history');
  t.equal(history.total, 3);
  t.same(
    history.entry.map((e: any) => e.resource.meta.versionId),
    ['3', '2', '1'],
  );
  t.same(
    history.entry.map((e: any) => e.request.method),
    ['PATCH', 'PUT', 'POST'],
  );

  // delete → 410 on read; history keeps it
  const deleted = await client.delete({ resourceType: 'MedicationRequest', id: medication.id as string });
  t.ok([200, 204].includes(statusOf(deleted)!), 'delete succeeds');
  const gone = await rejection(client.read({ resourceType: 'MedicationRequest', id: medication.id as string }));
  t.equal(gone.status, 410);
  t.same(gone.codes, ['deleted']);
  const medHistory = (await client.history({ resourceType: 'MedicationRequest', id: medication.id as string })) as Resource;
  t.equal(medHistory.total, 2);
  t.same(medHistory.entry.map((e: any) => e.request.method), ['DELETE', 'POST']);
});

t.test('search with paging (nextPage / prevPage), POST _search', async (t) => {
  const patient = (await client.create({
    resourceType: 'Patient',
    body: { resourceType: 'Patient', name: [{ family: 'Pagewalker', given: ['Ada'] }] },
  })) as Resource;
  const ids: string[] = [];
  for (let i = 0; i < 8; i++) {
    const obs = (await client.create({
      resourceType: 'Observation',
      body: {
        resourceType: 'Observation',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
        subject: { reference: `Patient/${patient.id}` },
        effectiveDateTime: `2024-01-0${i + 1}T08:00:00Z`,
        valueQuantity: { value: 60 + i, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
      },
    })) as Resource;
    ids.push(obs.id as string);
  }

  const searchParams = { subject: `Patient/${patient.id}`, code: 'http://loinc.org|8867-4', _count: 3, _total: 'accurate' };
  let page = (await client.search({ resourceType: 'Observation', searchParams })) as Resource | undefined;
  t.equal(page!.type, 'searchset');
  t.equal(page!.total, 8);
  const seen: string[] = [];
  const pages: Resource[] = [];
  while (page) {
    pages.push(page);
    t.ok(matchIds(page).length <= 3, 'no page exceeds _count');
    seen.push(...matchIds(page));
    page = (await client.nextPage({ bundle: page as never })) as Resource | undefined;
  }
  t.equal(pages.length, 3, '8 results in pages of 3');
  t.same([...seen].sort(), [...ids].sort(), 'paging visits every match exactly once');
  const back = (await client.prevPage({ bundle: pages[2] as never })) as Resource;
  t.same(matchIds(back), matchIds(pages[1]!), 'prevPage returns the previous page');

  const posted = (await client.resourceSearch({
    resourceType: 'Observation',
    searchParams: { subject: `Patient/${patient.id}`, _count: 100 },
    options: { postSearch: true },
  })) as Resource;
  t.equal(posted.total, 8, 'POST _search gives the same result');
  t.same(matchIds(posted).sort(), [...ids].sort());

  const byName = (await client.search({ resourceType: 'Patient', searchParams: { family: 'Pagewalker' } })) as Resource;
  t.same(matchIds(byName), [patient.id]);
  const none = (await client.search({ resourceType: 'Patient', searchParams: { family: 'Nobody-by-this-name' } })) as Resource;
  t.equal(none.total, 0);
  t.same(matchIds(none), []);
});

t.test('type and system history', async (t) => {
  const before = (await client.typeHistory({ resourceType: 'Organization' })) as Resource;
  const systemBefore = (await client.systemHistory()) as Resource;
  const org = (await client.create({ resourceType: 'Organization', body: { resourceType: 'Organization', name: 'History Clinic' } })) as Resource;
  await client.update({ resourceType: 'Organization', id: org.id as string, body: { resourceType: 'Organization', id: org.id, name: 'History Clinic II' } });

  const after = (await client.typeHistory({ resourceType: 'Organization' })) as Resource;
  t.equal(after.type, 'history');
  t.equal(after.total, before.total + 2, 'two more Organization versions');
  t.same(
    after.entry.slice(0, 2).map((e: any) => [e.resource.id, e.resource.meta.versionId]),
    [
      [org.id, '2'],
      [org.id, '1'],
    ],
    'newest first',
  );
  t.ok(after.entry.every((e: any) => e.resource === undefined || e.resource.resourceType === 'Organization'));

  const system = (await client.systemHistory()) as Resource;
  t.equal(system.type, 'history');
  t.equal(system.total, systemBefore.total + 2);
  const types = new Set(system.entry.map((e: any) => e.fullUrl.split('/').slice(-2, -1)[0]));
  t.ok(types.has('Organization') && types.has('Observation') && types.has('Patient'), 'system history spans types');
  const viaHistory = (await client.history()) as Resource;
  t.equal(viaHistory.total, system.total, 'history() without arguments is system history');
});

t.test('conditional create (If-None-Exist) and conditional update', async (t) => {
  const body = {
    resourceType: 'Patient',
    identifier: [{ system: 'urn:oid:1.2.36.146.595.217.0.1', value: 'COND-12345' }],
    name: [{ family: 'Conditional' }],
  };
  const options = { headers: { 'If-None-Exist': 'identifier=urn:oid:1.2.36.146.595.217.0.1|COND-12345' } };
  const first = (await client.create({ resourceType: 'Patient', body, options })) as Resource;
  t.equal(statusOf(first), 201, 'no match: created');
  const second = (await client.create({ resourceType: 'Patient', body, options })) as Resource;
  t.equal(statusOf(second), 200, 'one match: the existing resource, nothing created');
  t.equal(second.id, first.id);
  t.equal(second.meta.versionId, '1');
  const found = (await client.search({ resourceType: 'Patient', searchParams: { identifier: 'urn:oid:1.2.36.146.595.217.0.1|COND-12345' } })) as Resource;
  t.equal(found.total, 1);

  const updated = (await client.update({
    resourceType: 'Patient',
    searchParams: { identifier: 'urn:oid:1.2.36.146.595.217.0.1|COND-12345' },
    body: { ...body, gender: 'female' },
  })) as Resource;
  t.equal(statusOf(updated), 200, 'conditional update of the one match');
  t.equal(updated.id, first.id);
  t.equal(updated.meta.versionId, '2');

  const createdByUpdate = (await client.update({
    resourceType: 'Patient',
    searchParams: { identifier: 'urn:oid:1.2.36.146.595.217.0.1|COND-NEW' },
    body: { ...body, identifier: [{ system: 'urn:oid:1.2.36.146.595.217.0.1', value: 'COND-NEW' }] },
  })) as Resource;
  t.equal(statusOf(createdByUpdate), 201, 'conditional update without a match creates');
  t.not(createdByUpdate.id, first.id);

  // Two matches → 412
  await client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', name: [{ family: 'Twin' }] } });
  await client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', name: [{ family: 'Twin' }] } });
  const multiple = await rejection(
    client.create({ resourceType: 'Patient', body: { resourceType: 'Patient' }, options: { headers: { 'If-None-Exist': 'family=Twin' } } }),
  );
  t.equal(multiple.status, 412);
  t.same(multiple.codes, ['multiple-matches']);
});

t.test('errors are OperationOutcomes the client can read', async (t) => {
  const unknown = await rejection(client.read({ resourceType: 'Patient', id: 'does-not-exist' }));
  t.equal(unknown.status, 404);
  t.equal(unknown.resourceType, 'OperationOutcome');
  t.same(unknown.codes, ['not-found']);

  const unknownVersion = await rejection(client.vread({ resourceType: 'Observation', id: 'does-not-exist', version: '1' }));
  t.equal(unknownVersion.status, 404);
  t.equal(unknownVersion.resourceType, 'OperationOutcome');

  const invalid = await rejection(
    client.create({ resourceType: 'Observation', body: { resourceType: 'Observation', status: 'not-a-status', code: { text: 'x' } } }),
  );
  t.ok([400, 422].includes(invalid.status!), `an invalid resource is rejected (${invalid.status})`);
  t.equal(invalid.resourceType, 'OperationOutcome');

  const badId = await rejection(client.read({ resourceType: 'Patient', id: 'bad_id!' }));
  t.ok([400, 404].includes(badId.status!), `a malformed id is rejected (${badId.status})`);
  t.equal(badId.resourceType, 'OperationOutcome');

  const deleteUnknown = await client.delete({ resourceType: 'Practitioner', id: 'never-existed' }).then(
    (res) => ({ status: statusOf(res as FhirResource) }),
    (err: { response?: { status?: number } }) => ({ status: err.response?.status }),
  );
  t.ok([200, 204, 404].includes(deleteUnknown.status!), `delete of an unknown id: ${deleteUnknown.status}`);
});

t.test('the server stops cleanly after a keep-alive client', async (t) => {
  t.equal(await server.stop(), 0);
});
