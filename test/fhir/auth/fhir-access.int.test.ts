/**
 * SMART authorization and the audit trail on the real FHIR server (src/server.ts with the embedded
 * authorization server, the audit trail and the embedded chain): discovery, 401 without a token,
 * scopes per interaction, a patient user confined to its compartment through read, search,
 * _include/_revinclude, chains, _has, history, $everything and bundle entries, and the AuditEvents
 * of it all — searchable by administrators and by patients for their own, immutable, anchored.
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { startTestServer, issueCodes, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { authorizeThroughPages, basic, registerBackendClient, clientAssertion, backendForm, harnessOf, type Harness } from './harness.ts';

const BASE = 'http://vellum.test/fhir';

async function as(s: TestServer, token: string | undefined, method: string, url: string, body?: unknown) {
  return s.fhir(method, url, body, token === undefined ? {} : { authorization: `Bearer ${token}` });
}

const ids = (bundle: any, mode = 'match') =>
  (bundle?.entry ?? []).filter((e: any) => e.search?.mode === mode).map((e: any) => `${e.resource.resourceType}/${e.resource.id}`).sort();

t.test('SMART on the FHIR API, with the audit trail', async (t: Test) => {
  const s = await startTestServer(t, {
    VELLUM_AUTH: 'embedded',
    VELLUM_AUDIT: 'on',
    VELLUM_CHAIN: 'embedded',
    VELLUM_ANCHOR_INTERVAL_MS: '50',
    VELLUM_BASE_URL: BASE,
    // Scopes and compartments, not consent: consent/matrix.int.test.ts covers consent on top of them.
    VELLUM_CONSENT: 'off',
  });
  const fs = await import('node:fs');
  const adminFile = JSON.parse(fs.readFileSync(`${s.dataDir}/admin-client.json`, 'utf8'));
  t.equal((fs.statSync(`${s.dataDir}/admin-client.json`).mode & 0o777).toString(8), '600', 'admin-client.json is private');
  const h = harnessOf(s, { clientId: adminFile.client_id, secret: adminFile.client_secret });
  const admin = await h.adminToken();

  // Discovery, and nothing without a token.
  const metadata = await as(s, undefined, 'GET', 'metadata');
  t.equal(metadata.status, 200, '/metadata needs no token');
  const oauth = metadata.json.rest[0].security.extension.find((e: any) => /oauth-uris$/.test(e.url));
  t.ok(oauth.extension.some((e: any) => e.url === 'token' && e.valueUri === h.tokenUrl), 'CapabilityStatement names the token endpoint');
  const wellKnown = await s.app.inject({ method: 'GET', url: '/fhir/.well-known/smart-configuration' });
  t.equal(wellKnown.statusCode, 200);
  t.equal(JSON.parse(wellKnown.body).token_endpoint, h.tokenUrl);
  const anonymous = await as(s, undefined, 'GET', 'Patient');
  t.equal(anonymous.status, 401);
  t.match(String(anonymous.headers['www-authenticate']), /^Bearer /);
  t.same(vellumCodes(anonymous.json), ['VLM_AUTH_TOKEN_MISSING']);
  t.equal((await as(s, 'not-a-jwt', 'GET', 'Patient')).status, 401, 'a garbage token');

  // The administrator loads two patients' data.
  for (const [id, family] of [['p1', 'Alpha'], ['p2', 'Beta']]) {
    t.equal((await as(s, admin, 'PUT', `Patient/${id}`, { resourceType: 'Patient', id, name: [{ family }] })).status, 201);
  }
  t.equal((await as(s, admin, 'PUT', 'Organization/org1', { resourceType: 'Organization', id: 'org1', name: 'Clinic' })).status, 201);
  const obs = (id: string, patient: string, code: string) => ({
    resourceType: 'Observation',
    id,
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code }] },
    subject: { reference: `Patient/${patient}` },
  });
  t.equal((await as(s, admin, 'PUT', 'Observation/o1', obs('o1', 'p1', '1111-1'))).status, 201);
  t.equal((await as(s, admin, 'PUT', 'Observation/o2', obs('o2', 'p2', '1111-1'))).status, 201);
  t.equal((await as(s, admin, 'PUT', 'Observation/o3', obs('o3', 'p2', '2222-2'))).status, 201);
  t.equal(
    (await as(s, admin, 'PUT', 'Encounter/e1', { resourceType: 'Encounter', id: 'e1', status: 'finished', class: { code: 'AMB' }, subject: { reference: 'Patient/p1' }, serviceProvider: { reference: 'Organization/org1' } })).status,
    201,
  );

  t.test('a Backend Services client gets what its scopes say', async (t) => {
    const client = await registerBackendClient(h, { scope: 'system/Observation.rs system/Patient.r' });
    const res = await h.token(backendForm(await clientAssertion(h, client), { scope: 'system/Observation.rs system/Patient.r' }));
    t.equal(res.status, 200, res.text);
    const token = (res.json as any).access_token as string;
    t.same(ids((await as(s, token, 'GET', 'Observation?code=1111-1')).json), ['Observation/o1', 'Observation/o2']);
    t.equal((await as(s, token, 'GET', 'Patient/p2')).status, 200, 'read allowed');
    const search = await as(s, token, 'GET', 'Patient?family=Alpha');
    t.equal(search.status, 403, 'Patient search is not in the scopes');
    t.same(vellumCodes(search.json), ['VLM_AUTH_SCOPE_INSUFFICIENT']);
    t.same(issueCodes(search.json), ['forbidden']);
    t.equal((await as(s, token, 'POST', 'Observation', obs('x', 'p1', '3333-3'))).status, 403, 'no create scope');
    t.equal((await as(s, token, 'GET', 'Encounter/e1')).status, 403, 'another type');
    const tx = await as(s, token, 'POST', '', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ fullUrl: 'urn:uuid:2d1e6f2c-0a5b-4d6c-9a47-1c2b3d4e5f60', resource: obs('ignored', 'p1', '3333-3'), request: { method: 'POST', url: 'Observation' } }],
    });
    t.equal(tx.status, 403, 'a transaction entry is checked like a single write');
    t.equal((await as(s, admin, 'GET', 'Observation?code=3333-3&_summary=count')).json.total, 0, 'nothing stored');
  });

  t.test('a patient user sees only its own compartment', async (t) => {
    const reg = await h.register(
      {
        client_name: 'Patient app',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        redirect_uris: ['https://app.example.org/cb'],
        scope: 'openid fhirUser launch/patient patient/*.rs',
      },
      admin,
    );
    t.equal(reg.status, 201, reg.text);
    t.equal((await h.createUser({ username: 'alice', password: 'correct horse battery', fhir_user: 'Patient/p1' })).status, 201);
    const flow = await authorizeThroughPages(h, {
      clientId: (reg.json as any).client_id,
      redirectUri: 'https://app.example.org/cb',
      scope: 'openid fhirUser launch/patient patient/*.rs',
      username: 'alice',
      password: 'correct horse battery',
    });
    const res = await h.token({
      grant_type: 'authorization_code',
      code: flow.code,
      redirect_uri: 'https://app.example.org/cb',
      client_id: (reg.json as any).client_id,
      code_verifier: flow.verifier,
    });
    t.equal(res.status, 200, res.text);
    t.equal((res.json as any).patient, 'p1');
    const alice = (res.json as any).access_token as string;

    t.equal((await as(s, alice, 'GET', 'Patient/p1')).status, 200);
    const other = await as(s, alice, 'GET', 'Patient/p2');
    t.equal(other.status, 403);
    t.same(vellumCodes(other.json), ['VLM_AUTH_COMPARTMENT']);
    t.equal((await as(s, alice, 'GET', 'Observation/o2')).status, 403);
    t.equal((await as(s, alice, 'GET', 'Observation/o2/_history/1')).status, 403, 'vread');
    t.equal((await as(s, alice, 'GET', 'Observation/o2/_history')).status, 403, 'instance history');

    const all = await as(s, alice, 'GET', 'Observation');
    t.same(ids(all.json), ['Observation/o1'], 'search sees its own only');
    t.equal(all.json.total, 1, 'and the total does not count the others');
    t.equal((await as(s, alice, 'GET', 'Observation?subject=Patient/p2')).json.total, 0, 'asking for another patient finds nothing');
    t.same(ids((await as(s, alice, 'GET', 'Observation?_include=Observation:subject')).json, 'include'), ['Patient/p1']);
    t.same(ids((await as(s, alice, 'GET', 'Patient?_revinclude=Observation:subject')).json, 'include'), ['Observation/o1'], '_revinclude');
    t.same(ids((await as(s, alice, 'GET', 'Patient?_has:Observation:subject:code=2222-2')).json), [], '_has cannot probe another patient');
    t.same(ids((await as(s, alice, 'GET', 'Observation?subject:Patient.family=Beta')).json), [], 'chains neither');
    t.same(ids((await as(s, alice, 'GET', 'Encounter?_include=Encounter:service-provider')).json, 'include'), ['Organization/org1'], 'outside any compartment: by scope');
    const history = await as(s, alice, 'GET', 'Observation/_history');
    t.same(history.json.entry.map((e: any) => e.fullUrl.split('/').slice(-1)[0]), ['o1'], 'type history: its own versions');
    t.equal((await as(s, alice, 'GET', '_history')).status, 403, 'no system history');
    t.equal((await as(s, alice, 'GET', '?_type=Observation')).status, 403, 'no system search');

    const everything = await as(s, alice, 'GET', 'Patient/p1/$everything');
    t.equal(everything.status, 200);
    t.same(
      [...ids(everything.json), ...ids(everything.json, 'include')].sort(),
      ['Encounter/e1', 'Observation/o1', 'Organization/org1', 'Patient/p1'],
      '$everything: the compartment and what it references',
    );
    t.equal((await as(s, alice, 'GET', 'Patient/p2/$everything')).status, 403);
    t.equal((await as(s, alice, 'GET', 'Patient/p1/Observation')).json.total, 1, 'compartment search');

    const batch = await as(s, alice, 'POST', '', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: 'Observation/o1' } },
        { request: { method: 'GET', url: 'Observation/o2' } },
        { request: { method: 'GET', url: 'Observation' } },
      ],
    });
    t.equal(batch.status, 200);
    t.same(batch.json.entry.map((e: any) => e.response.status.split(' ')[0]), ['200', '403', '200'], 'batch entries are confined too');
    t.same(ids(batch.json.entry[2].resource), ['Observation/o1']);
    t.equal((await as(s, alice, 'POST', 'Observation', obs('x', 'p1', '3333-3'))).status, 403, 'read scopes do not write');

    // Alice's AuditEvents: hers to read, not others'.
    const mine = await as(s, alice, 'GET', 'AuditEvent?_count=1000');
    t.equal(mine.status, 200);
    t.ok(mine.json.total > 10, `the patient finds the audit of her accesses (${mine.json.total})`);
    // Hers: about her data, or made by her (an attempt on another patient's data is her own access too).
    const about = (e: any) => [
      ...(e.resource.entity ?? []).filter((x: any) => x.role?.code === '1').map((x: any) => x.what?.reference?.replace(/\/_history\/.*$/, '')),
      ...(e.resource.agent ?? []).map((a: any) => a.who?.reference),
    ];
    const notHers = mine.json.entry.filter((e: any) => e.search.mode === 'match' && !about(e).includes('Patient/p1'));
    t.same(notHers, [], 'only audit entries about her or by her');
  });

  t.test('AuditEvents: every access, searchable, immutable, anchored', async (t) => {
    const denied = await as(s, admin, 'GET', 'AuditEvent?outcome=4&_count=1000');
    t.equal(denied.status, 200);
    t.ok(denied.json.total >= 5, 'denied and failed accesses are audited');
    t.ok(
      denied.json.entry.some((e: any) => e.resource.agent?.[0]?.who?.display === 'unauthenticated client'),
      'including the ones without a token',
    );
    const byPatient = await as(s, admin, 'GET', 'AuditEvent?patient=Patient/p1&action=R&_summary=count');
    t.ok(byPatient.json.total >= 5, 'reads of p1 are found by patient and action');
    const byAgent = await as(s, admin, 'GET', 'AuditEvent?agent=Patient/p1&_summary=count');
    t.ok(byAgent.json.total >= 5, 'and by agent (the fhirUser)');
    const before = (await as(s, admin, 'GET', 'AuditEvent?subtype=create&_summary=count')).json.total;
    const tx = await as(s, admin, 'POST', '', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [1, 2, 3].map((n) => ({
        fullUrl: `urn:uuid:00000000-0000-4000-8000-00000000000${n}`,
        resource: { resourceType: 'Patient', name: [{ family: `Tx${n}` }] },
        request: { method: 'POST', url: 'Patient' },
      })),
    });
    t.equal(tx.status, 200);
    const after = (await as(s, admin, 'GET', 'AuditEvent?subtype=create&_summary=count')).json.total;
    t.equal(after - before, 3, 'one AuditEvent per transaction entry');

    const one = (await as(s, admin, 'GET', 'AuditEvent?_count=1')).json.entry[0].resource;
    t.equal((await as(s, admin, 'PUT', `AuditEvent/${one.id}`, one)).status, 405, 'no update');
    t.equal((await as(s, admin, 'DELETE', `AuditEvent/${one.id}`)).status, 405, 'no delete');
    const patch = await s.fhir('PATCH', `AuditEvent/${one.id}`, JSON.stringify([{ op: 'replace', path: '/outcome', value: '8' }]), {
      authorization: `Bearer ${admin}`,
      'content-type': 'application/json-patch+json',
    });
    t.equal(patch.status, 405, 'no patch');

    // An audit record repository (IHE BALP) loads AuditEvents by id: the 9 official examples, PUT as creates.
    const dir = path.resolve(import.meta.dirname, '../../../../shared/corpora/r4-examples/AuditEvent');
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
    t.equal(files.length, 9);
    for (const file of files) {
      const example = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
      const created = await as(s, admin, 'PUT', `AuditEvent/${example.id}`, example);
      t.equal(created.status, 201, `${file}: created by PUT`);
      const again = await as(s, admin, 'PUT', `AuditEvent/${example.id}`, { ...example, outcome: '8' });
      t.equal(again.status, 405, `${file}: a second PUT is an update, refused`);
      t.same(vellumCodes(again.json), ['VLM_AUDIT_IMMUTABLE']);
      const read = await as(s, admin, 'GET', `AuditEvent/${example.id}`);
      t.equal(read.json.meta.versionId, '1', `${file}: one version`);
      t.equal(read.json.outcome, example.outcome, `${file}: unchanged`);
    }

    const bob = await registerBackendClient(h, { scope: 'system/AuditEvent.rs', fhirUser: 'Organization/org1' });
    const bobToken = (await h.token(backendForm(await clientAssertion(h, bob), { scope: 'system/AuditEvent.rs' }))).json as any;
    t.equal((await as(s, bobToken.access_token, 'GET', 'AuditEvent')).status, 403, 'only administrators and patients read the audit trail');

    let verified = false;
    for (let i = 0; i < 200 && !verified; i++) {
      const v = await as(s, admin, 'GET', `AuditEvent/${one.id}/$verify`);
      verified = v.json?.parameter?.find((p: any) => p.name === 'verified')?.valueBoolean === true;
      if (!verified) await new Promise((r) => setTimeout(r, 50));
    }
    t.ok(verified, 'an AuditEvent is anchored and verifies like any version');
  });

  t.test('a non-admin system client gets no AuditEvent by any path (issue 12)', async (t) => {
    // system/*.cruds, no FHIR identity, consent off: scopes allow everything, but it is not the administrator.
    const client = await registerBackendClient(h, { scope: 'system/*.cruds' });
    const res = await h.token(backendForm(await clientAssertion(h, client), { scope: 'system/*.cruds' }));
    t.equal(res.status, 200, res.text);
    const sys = (res.json as any).access_token as string;
    /** Every AuditEvent a response carries, at any depth (entries, batch entries' bundles, fullUrls). */
    const auditEventsIn = (body: unknown): string[] => {
      const found: string[] = [];
      const walk = (v: any): void => {
        if (Array.isArray(v)) v.forEach(walk);
        else if (v && typeof v === 'object') {
          if (v.resourceType === 'AuditEvent') found.push(`AuditEvent/${v.id}`);
          if (typeof v.fullUrl === 'string' && v.fullUrl.includes('/AuditEvent/')) found.push(v.fullUrl);
          Object.values(v).forEach(walk);
        }
      };
      walk(body);
      return found;
    };
    const none = async (url: string) => {
      const r = await as(s, sys, 'GET', url);
      t.equal(r.status, 200, `${url}: ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`);
      t.same(auditEventsIn(r.json), [], `${url}: no AuditEvent`);
      return r.json;
    };
    const forbidden = async (url: string) => {
      const r = await as(s, sys, 'GET', url);
      t.equal(r.status, 403, url);
      t.same(vellumCodes(r.json), ['VLM_AUDIT_FORBIDDEN'], `${url}: code`);
    };
    const [ae] = ids((await as(s, admin, 'GET', 'AuditEvent?patient=Patient/p1&_count=1')).json);
    t.ok(ae, 'an AuditEvent of p1 (control)');
    const aeId = ae!.split('/')[1]!;
    // Controls: the administrator gets them through the same paths.
    const adminHistory = (await as(s, admin, 'GET', '_history?_count=1000')).json;
    t.ok(auditEventsIn(adminHistory).length > 0, 'the administrator: system history');
    t.ok(adminHistory.total <= 1000, 'one page holds the whole history (for the total below)');
    // Only reads (and AuditEvents) happen from here to the client's history: the other versions stay the same.
    const others = adminHistory.entry.filter((e: any) => !e.fullUrl.includes('/AuditEvent/')).length;
    t.ok(auditEventsIn((await as(s, admin, 'GET', 'Patient?_id=p1&_revinclude=AuditEvent:patient')).json).length > 0, 'the administrator: _revinclude');

    const history = await none('_history?_count=1000');
    t.ok((history.entry ?? []).length > 0, 'system history shows the rest (control)');
    t.equal(history.total, others, 'its total counts no AuditEvent');
    t.equal(history.entry.length, others, 'nor does its page');
    await forbidden('AuditEvent/_history');
    await forbidden(`AuditEvent/${aeId}/_history`);
    await forbidden(`AuditEvent/${aeId}`);
    await forbidden('Patient/p1/AuditEvent');
    const typed = await none('?_type=AuditEvent&_total=accurate');
    t.equal(typed.total, 0, 'system search: total 0');
    t.same(ids(await none(`?_type=AuditEvent,Patient&_id=p1,${aeId}`)), ['Patient/p1'], 'system search of two types: the Patient only');
    t.equal((await none('?_type=AuditEvent&_summary=count')).total, 0, '_summary=count');
    await none('?_count=1000');
    t.same(ids(await none('Patient?_id=p1&_revinclude=AuditEvent:patient')), ['Patient/p1'], '_revinclude: the match only');
    await none(`Observation?_id=o1&_revinclude=AuditEvent:entity`);
    t.same(ids(await none('Patient?_has:AuditEvent:patient:action=R')), [], '_has through AuditEvents finds nothing');
    t.equal((await none('Patient/p1/$everything?_type=AuditEvent')).total, 0, '$everything?_type=AuditEvent: total 0');
    await none('Patient/p1/$everything');
    const batch = await as(s, sys, 'POST', '', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: ['_history', '?_type=AuditEvent', `AuditEvent/${aeId}`, 'Patient/p1/AuditEvent', 'Patient?_id=p1&_revinclude=AuditEvent:patient'].map((url) => ({
        request: { method: 'GET', url },
      })),
    });
    t.equal(batch.status, 200);
    t.same(auditEventsIn(batch.json), [], 'batch: no AuditEvent');
    t.same(batch.json.entry.map((e: any) => e.response.status.split(' ')[0]), ['200', '200', '403', '403', '200'], 'batch entry statuses');
    t.same(vellumCodes(batch.json.entry[2].response.outcome), ['VLM_AUDIT_FORBIDDEN']);
    // Conditional matching: a withheld AuditEvent is no match.
    const ref = await as(s, sys, 'POST', '', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          request: { method: 'POST', url: 'Provenance' },
          resource: { resourceType: 'Provenance', target: [{ reference: `AuditEvent?_id=${aeId}` }], recorded: new Date().toISOString(), agent: [{ who: { reference: 'Organization/org1' } }] },
        },
      ],
    });
    t.equal(ref.status, 404, 'a conditional reference to an AuditEvent resolves to nothing');
    t.same(vellumCodes(ref.json), ['VLM_BUNDLE_REFERENCE_NOT_FOUND']);
    const probe = {
      resourceType: 'AuditEvent',
      type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' },
      recorded: new Date().toISOString(),
      agent: [{ requestor: true, who: { display: 'probe' } }],
      source: { observer: { display: 'probe' } },
    };
    const created = await s.fhir('POST', 'AuditEvent', probe, { authorization: `Bearer ${sys}`, 'if-none-exist': `_id=${aeId}` });
    t.equal(created.status, 201, 'If-None-Exist naming a withheld AuditEvent: as if absent');
    t.not(created.json?.id, aeId);
  });
});
