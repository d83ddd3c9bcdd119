/**
 * Bulk Data export with SMART authorization on (the embedded authorization server, real tokens):
 * what each caller's scopes let into its export, 403 for a type it names without them, jobs and
 * files private to the client that kicked them off (and 401 without a token), files encrypted to a
 * client's registered `enc` key (JWE the test decrypts with the private key), and a patient user's
 * export confined to its own compartment.
 */
import fs from 'node:fs';
import path from 'node:path';
import { compactDecrypt, decodeProtectedHeader, exportJWK, generateKeyPair } from 'jose';
import t from 'tap';
import { startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { backendForm, backendKey, clientAssertion, harnessOf, registerBackendClient, type BackendClient, type Harness } from '../auth/harness.ts';
import { patientToken, type ConsentHarness } from '../consent/harness.ts';
import { ASYNC, auth, jobOf, ndjson, refs, rel, runExport, show } from './helpers.ts';

const BASE = 'http://vellum.test/fhir';

async function tokenOf(h: Harness, client: BackendClient, scope: string): Promise<string> {
  const res = await h.token(backendForm(await clientAssertion(h, client), { scope }));
  if (res.status !== 200) throw new Error(`token: ${res.status} ${res.text}`);
  return res.json.access_token as string;
}

t.test('exports under SMART authorization', async (t) => {
  const s: TestServer = await startTestServer(t, { VELLUM_AUTH: 'embedded', VELLUM_BASE_URL: BASE });
  const adminFile = JSON.parse(fs.readFileSync(`${s.dataDir}/admin-client.json`, 'utf8'));
  const h = harnessOf(s, { clientId: adminFile.client_id, secret: adminFile.client_secret });
  const admin = await h.adminToken();
  const put = async (resource: Record<string, any>) => {
    const res = await s.fhir('PUT', `${resource.resourceType}/${resource.id}`, resource, auth(admin));
    if (res.status !== 200 && res.status !== 201) throw new Error(`PUT: ${show(res)}`);
  };
  for (const id of ['p1', 'p2']) await put({ resourceType: 'Patient', id, name: [{ family: `Fam${id}` }] });
  for (const [id, patient] of [['o1', 'p1'], ['o2', 'p2']]) {
    await put({ resourceType: 'Observation', id, status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${patient}` } });
  }
  await put({ resourceType: 'Organization', id: 'org1', name: 'Clinic' });
  await put({ resourceType: 'Group', id: 'g1', type: 'person', actual: true, member: [{ entity: { reference: 'Patient/p1' } }, { entity: { reference: 'Patient/p2' } }] });

  // A: system/Patient.read (SMART v1); B: every type (v2).
  const clientA = await registerBackendClient(h, { scope: 'system/Patient.read' });
  const tokenA = await tokenOf(h, clientA, 'system/Patient.read');
  const clientB = await registerBackendClient(h, { scope: 'system/*.rs' });
  const tokenB = await tokenOf(h, clientB, 'system/*.rs');

  let jobA = '';
  let fileA = '';
  await t.test('a client gets the types its scopes allow; 403 for a type it names without them', async (t) => {
    const e = await runExport(t, s, '$export', { token: tokenA });
    jobA = e.job;
    t.equal(e.manifest.requiresAccessToken, true, 'requiresAccessToken with authorization on');
    t.same(Object.keys(e.byType), ['Patient'], 'only Patient');
    t.same(refs(e.byType.Patient), ['Patient/p1', 'Patient/p2']);
    fileA = rel(e.manifest.output[0].url);
    for (const query of ['_type=Observation', '_type=Patient,Observation', '_type=AuditEvent']) {
      const res = await s.fhir('GET', `$export?${query}`, undefined, { ...ASYNC, ...auth(tokenA) });
      t.equal(res.status, 403, `${query}: ${show(res)}`);
      t.same(vellumCodes(res.json), ['VLM_AUTH_SCOPE_INSUFFICIENT'], `${query}: scope`);
    }
    const patientLevel = await runExport(t, s, 'Patient/$export', { token: tokenA });
    t.same(Object.keys(patientLevel.byType), ['Patient'], 'Patient level: only Patient too');

    const all = await runExport(t, s, '$export', { token: tokenB });
    t.same(Object.keys(all.byType).sort(), ['Group', 'Observation', 'Organization', 'Patient'], 'B: every type with data');
    t.notOk(all.manifest.extension, 'no encryption extension for a client without an enc key');
    const audit = await s.fhir('GET', '$export?_type=AuditEvent', undefined, { ...ASYNC, ...auth(tokenB) });
    t.equal(audit.status, 403, `a non-admin client naming AuditEvent: ${show(audit)}`);
    t.same(vellumCodes(audit.json), ['VLM_AUDIT_FORBIDDEN']);
    const adminAudit = await runExport(t, s, '$export?_type=AuditEvent', { token: admin });
    t.same(adminAudit.manifest.error, [], 'the administrator may export AuditEvents');
  });

  await t.test('jobs and files are the client’s own; 401 without a token', async (t) => {
    const statusPath = `$export-status/${jobA}`;
    for (const [method, url] of [['GET', statusPath], ['GET', fileA], ['DELETE', statusPath]] as const) {
      const other = await s.fhir(method, url, undefined, auth(tokenB));
      t.equal(other.status, 404, `another client: ${method} ${url}: ${show(other)}`);
      t.same(vellumCodes(other.json), ['VLM_BULK_JOB_NOT_FOUND']);
      const anonymous = await s.fhir(method, url);
      t.equal(anonymous.status, 401, `no token: ${method} ${url}`);
      t.same(vellumCodes(anonymous.json), ['VLM_AUTH_TOKEN_MISSING']);
    }
    const kick = await s.fhir('GET', '$export', undefined, ASYNC);
    t.equal(kick.status, 401, 'kick-off without a token');
    t.equal((await s.fhir('GET', statusPath, undefined, auth(tokenA))).status, 200, 'A’s job is untouched');
    const file = await s.fhir('GET', fileA, undefined, { ...auth(tokenA), accept: 'application/fhir+ndjson' });
    t.equal(file.status, 200, 'A downloads with its token');
    t.same(refs(ndjson(file.text)), ['Patient/p1', 'Patient/p2']);
    // Another token of the same client is the same owner.
    const again = await tokenOf(h, clientA, 'system/Patient.read');
    t.equal((await s.fhir('GET', statusPath, undefined, auth(again))).status, 200, 'a new token of the same client');
  });

  await t.test('a client with an enc key gets JWE files only its private key opens', async (t) => {
    const signing = await backendKey('ES384');
    const { publicKey, privateKey } = await generateKeyPair('ECDH-ES+A256KW', { crv: 'P-256', extractable: true });
    const encJwk = { ...(await exportJWK(publicKey)), kid: 'enc-1', use: 'enc', alg: 'ECDH-ES+A256KW' };
    const reg = await h.register(
      {
        client_name: 'Encrypting back end',
        token_endpoint_auth_method: 'private_key_jwt',
        grant_types: ['client_credentials'],
        jwks: { keys: [signing.publicJwk, encJwk] },
        scope: 'system/*.rs',
      },
      admin,
    );
    t.equal(reg.status, 201, reg.text);
    const clientC = { ...signing, clientId: reg.json.client_id as string };
    const tokenC = await tokenOf(h, clientC, 'system/Patient.rs system/Observation.rs');
    const e = await runExport(t, s, '$export?_type=Patient,Observation', { token: tokenC });
    t.same(e.manifest.extension?.['https://vellum.dev/fhir/bulk/encryption'], { alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: 'enc-1', contentType: 'application/jose' });
    t.equal(e.manifest.output.length, 2);
    const decrypted: any[] = [];
    for (const o of e.manifest.output) {
      const res = await s.fhir('GET', rel(o.url), undefined, { ...auth(tokenC), accept: 'application/jose' });
      t.equal(res.status, 200);
      t.match(String(res.headers['content-type']), /^application\/jose/, `${o.type}: application/jose`);
      const jwe = res.text;
      t.equal(jwe.split('.').length, 5, 'a compact JWE');
      t.match(decodeProtectedHeader(jwe), { alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: 'enc-1', cty: 'application/fhir+ndjson' });
      t.notOk(jwe.includes('Famp1'), 'no plaintext');
      const onDisk = fs.readFileSync(path.join(s.dataDir, 'exports', e.job, new URL(o.url).pathname.split('/').pop()!), 'ascii');
      t.equal(onDisk, jwe, 'the JWE is what rests on disk');
      const { plaintext } = await compactDecrypt(jwe, privateKey);
      const lines = ndjson(new TextDecoder().decode(plaintext));
      t.equal(lines.length, o.count, `${o.type}: count`);
      t.ok(lines.every((r) => r.resourceType === o.type));
      decrypted.push(...lines);
    }
    t.same(refs(decrypted), ['Observation/o1', 'Observation/o2', 'Patient/p1', 'Patient/p2'], 'the decrypted files hold the export');
    // Another key cannot open them.
    const stranger = await generateKeyPair('ECDH-ES+A256KW', { crv: 'P-256' });
    const res = await s.fhir('GET', rel(e.manifest.output[0].url), undefined, auth(tokenC));
    await t.rejects(compactDecrypt(res.text, stranger.privateKey), 'another private key cannot decrypt');
  });

  // One patient app (a public client) for both patient users.
  const patientApp = { h } as ConsentHarness;

  await t.test('a patient user exports its own compartment only', async (t) => {
    const token = await patientToken(patientApp, 'p1');
    const system = await runExport(t, s, '$export', { token });
    t.same(refs(system.byType.Patient), ['Patient/p1'], 'system level: confined to p1');
    t.same(refs(system.byType.Observation), ['Observation/o1']);
    t.notOk(system.byType.Organization, 'no type outside the compartment');
    const patientLevel = await runExport(t, s, 'Patient/$export', { token });
    t.same(Object.values(patientLevel.byType).flat().map((r: any) => `${r.resourceType}/${r.id}`).filter((r) => r !== 'Group/g1').sort(), ['Observation/o1', 'Patient/p1']);
    const other = await runExport(t, s, 'Patient/$export', {
      token,
      method: 'POST',
      body: { resourceType: 'Parameters', parameter: [{ name: 'patient', valueReference: { reference: 'Patient/p2' } }] },
    });
    t.same(other.manifest.output, [], 'patient=Patient/p2: nothing of another patient');
    const group = await runExport(t, s, 'Group/g1/$export', { token });
    t.notOk(JSON.stringify(group.byType.Patient ?? []).includes('"p2"'), 'Group level: not the other member');
    t.same(refs(group.byType.Observation), ['Observation/o1']);
    const org = await s.fhir('GET', 'Patient/$export?_type=Organization', undefined, { ...ASYNC, ...auth(token) });
    t.equal(org.status, 400, 'a type outside the compartment');
    t.same(vellumCodes(org.json), ['VLM_BULK_BAD_TYPE']);
    // Its job is its client's: another client cannot see it.
    const kick = await s.fhir('GET', '$export?_type=Patient', undefined, { ...ASYNC, ...auth(token) });
    await s.services.bulk!.runner.idle();
    t.equal((await s.fhir('GET', `$export-status/${jobOf(kick)}`, undefined, auth(tokenB))).status, 404);
  });

  await t.test('two users of the same app: each one’s jobs are its own', async (t) => {
    const token1 = await patientToken(patientApp, 'p1');
    const token2 = await patientToken(patientApp, 'p2');
    const e1 = await runExport(t, s, '$export', { token: token1 });
    t.same(refs(e1.byType.Patient), ['Patient/p1']);
    const file = rel(e1.manifest.output[0].url);
    for (const [method, url] of [['GET', e1.statusPath], ['GET', file], ['DELETE', e1.statusPath]] as const) {
      const res = await s.fhir(method, url, undefined, auth(token2));
      t.equal(res.status, 404, `p2's user: ${method} ${url}: ${show(res)}`);
      t.same(vellumCodes(res.json), ['VLM_BULK_JOB_NOT_FOUND']);
    }
    t.equal((await s.fhir('GET', e1.statusPath, undefined, auth(token1))).status, 200, 'p1’s user still has its job');
    const e2 = await runExport(t, s, '$export', { token: token2 });
    t.same(refs(e2.byType.Patient), ['Patient/p2'], 'p2’s user exports p2');
  });
});
