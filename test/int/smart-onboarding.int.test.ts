/**
 * What the README tells a new user to do, against the real `npm start` process (embedded
 * authorization server, audit trail and chain): take the administrator's credentials from
 * admin-client.json, get a token, enrol a Backend Services client with its public key, get that
 * client a token with a signed assertion, call the API — and find the AuditEvents of those calls,
 * searchable and verified against the chain.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import t from 'tap';
import { startProcessServer } from '../helpers/process-server.ts';

t.test('README onboarding: admin token → enrol a Backend Services client → call → audit', async (t) => {
  // The SMART walk-through of the README, consent off: consent on top of it is test/fhir/consent/*'s.
  const s = await startProcessServer(t, { env: { VELLUM_ANCHOR_INTERVAL_MS: '100', VELLUM_CONSENT: 'off' } });
  const file = path.join(s.dataDir, 'admin-client.json');
  t.equal((fs.statSync(file).mode & 0o777).toString(8), '600');
  const admin = JSON.parse(fs.readFileSync(file, 'utf8'));
  t.ok(!s.stdout().includes(admin.client_secret), 'the secret is never logged');
  t.ok(s.stdout().includes(file), 'the log names the file');

  const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
  const adminRes = await fetch(admin.token_url, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${admin.client_id}:${admin.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: form({ grant_type: 'client_credentials', scope: 'system/*.*' }),
  });
  t.equal(adminRes.status, 200);
  const adminToken = ((await adminRes.json()) as any).access_token as string;

  const { privateKey, publicKey } = await generateKeyPair('ES384', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'hie-key-1', alg: 'ES384' };
  const reg = await s.http(
    'POST',
    '/auth/register',
    {
      client_name: 'HIE',
      token_endpoint_auth_method: 'private_key_jwt',
      grant_types: ['client_credentials'],
      scope: 'system/Patient.cruds system/Observation.cruds',
      jwks: { keys: [jwk] },
      fhir_user: 'Organization/hie-1',
    },
    { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
  );
  t.equal(reg.status, 201, reg.text);
  const clientId = reg.json.client_id as string;

  const assertion = await new SignJWT({ iss: clientId, sub: clientId, aud: admin.token_url, jti: randomUUID() })
    .setProtectedHeader({ alg: 'ES384', kid: 'hie-key-1', typ: 'JWT' })
    .setExpirationTime('4m')
    .sign(privateKey);
  const tokenRes = await fetch(admin.token_url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form({
      grant_type: 'client_credentials',
      scope: 'system/Patient.cruds system/Observation.cruds',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    }),
  });
  t.equal(tokenRes.status, 200);
  const hie = ((await tokenRes.json()) as any).access_token as string;
  const auth = { authorization: `Bearer ${hie}` };

  const patient = await s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Onboarded' }] }, auth);
  t.equal(patient.status, 201);
  t.equal((await s.fhir('GET', `Patient/${patient.json.id}`, undefined, auth)).status, 200);
  t.equal((await s.fhir('GET', 'Patient?family=Onboarded', undefined, auth)).json.total, 1);
  t.equal((await s.fhir('GET', 'Encounter', undefined, auth)).status, 403, 'outside its scopes');

  // The administrator finds the AuditEvents of those calls, by agent and by patient.
  const byAgent = await s.fhir('GET', 'AuditEvent?agent=Organization/hie-1&_count=100', undefined, { authorization: `Bearer ${adminToken}` });
  t.equal(byAgent.status, 200);
  const subtypes = byAgent.json.entry.map((e: any) => e.resource.subtype[0].code).sort();
  t.same(subtypes, ['create', 'read', 'search-type', 'search-type'], 'one per call, denied ones included');
  const denied = byAgent.json.entry.find((e: any) => e.resource.outcome === '4');
  t.ok(denied, 'the 403 is audited as a failure');
  const byPatient = await s.fhir('GET', `AuditEvent?patient=Patient/${patient.json.id}&_count=100`, undefined, { authorization: `Bearer ${adminToken}` });
  t.ok(byPatient.json.total >= 2, 'and by patient');

  const one = byAgent.json.entry[0].resource.id;
  let verified = false;
  for (let i = 0; i < 100 && !verified; i++) {
    const v = await s.fhir('GET', `AuditEvent/${one}/$verify`, undefined, { authorization: `Bearer ${adminToken}` });
    verified = v.json?.parameter?.find((p: any) => p.name === 'verified')?.valueBoolean === true;
    if (!verified) await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(verified, 'the AuditEvent is anchored and verified against the chain');
  t.equal(await s.stop(), 0);
});
