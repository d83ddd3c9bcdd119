/**
 * The access-request and opt-out walk-throughs of docs/consent.md against the real `npm start` process:
 * a practitioner asks (a proposed Consent), the patient approves with a wallet-signed grant relayed
 * through Vellum, the practitioner reads, the patient revokes, the next read is denied; and an
 * opt-out deployment where treatment is implied, research needs a permit and an OPTOUT Consent bites.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Wallet } from 'ethers';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import t, { type Test } from 'tap';
import { freePort, runUntilExit, startProcessServer } from '../helpers/process-server.ts';

type Server = Awaited<ReturnType<typeof startProcessServer>>;

const SCOPE = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] };
const OPTIN = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] };
const OPTOUT = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] };
const prcp = (reference: string) => ({
  role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'PRCP' }] },
  reference: { reference },
});
const codeOf = (res: { json: any }) => res.json?.issue?.[0]?.details?.coding?.[0]?.code;
const param = (res: { json: any }, name: string) => res.json?.parameter?.find((p: any) => p.name === name);
const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();

async function adminOf(s: Server) {
  const admin = JSON.parse(fs.readFileSync(path.join(s.dataDir, 'admin-client.json'), 'utf8'));
  const res = await fetch(admin.token_url, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${admin.client_id}:${admin.client_secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: form({ grant_type: 'client_credentials', scope: 'system/*.*' }),
  });
  return { tokenUrl: admin.token_url as string, headers: { authorization: `Bearer ${((await res.json()) as any).access_token}` } };
}

/** A Backend Services client bound to `fhirUser`, and its token for `purpose`. */
async function practitioner(s: Server, admin: Awaited<ReturnType<typeof adminOf>>, fhirUser: string, purposes: string[]) {
  const { privateKey, publicKey } = await generateKeyPair('ES384', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES384' };
  const scope = 'system/*.rs system/Consent.cu';
  const reg = await s.http(
    'POST',
    '/auth/register',
    { client_name: fhirUser, token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], scope, jwks: { keys: [jwk] }, fhir_user: fhirUser },
    { ...admin.headers, 'content-type': 'application/json' },
  );
  if (reg.status !== 201) throw new Error(`register ${fhirUser}: ${reg.status} ${reg.text}`);
  const clientId = reg.json.client_id as string;
  const tokens: Record<string, { authorization: string }> = {};
  for (const purpose of purposes) {
    const assertion = await new SignJWT({ iss: clientId, sub: clientId, aud: admin.tokenUrl, jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES384', kid: 'k1', typ: 'JWT' })
      .setExpirationTime('4m')
      .sign(privateKey);
    const res = await fetch(admin.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form({
        grant_type: 'client_credentials',
        scope,
        purpose_of_use: purpose,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      }),
    });
    if (res.status !== 200) throw new Error(`token ${fhirUser} ${purpose}: ${res.status}`);
    tokens[purpose] = { authorization: `Bearer ${((await res.json()) as any).access_token}` };
  }
  return tokens;
}

async function seed(t: Test, s: Server, asAdmin: Record<string, string>) {
  for (const resource of [
    { resourceType: 'Patient', id: 'pat-1', name: [{ family: 'Walker' }] },
    { resourceType: 'Practitioner', id: 'dr-ada', name: [{ family: 'Lovelace' }] },
    { resourceType: 'Observation', id: 'obs-1', status: 'final', code: { text: 'heart rate' }, subject: { reference: 'Patient/pat-1' } },
    { resourceType: 'Condition', id: 'cond-1', code: { text: 'asthma' }, subject: { reference: 'Patient/pat-1' } },
  ]) {
    const put = await s.fhir('PUT', `${resource.resourceType}/${resource.id}`, resource, asAdmin);
    t.equal(put.status, 201, `${resource.resourceType}/${resource.id}`);
  }
  t.equal((await s.fhir('POST', 'Practitioner/dr-ada/$approve', undefined, asAdmin)).status, 200);
}

t.test('README: request → the patient approves (signed) → read → revoke', async (t) => {
  const s = await startProcessServer(t, { env: { VELLUM_ANCHOR_INTERVAL_MS: '100' } });
  const admin = await adminOf(s);
  await seed(t, s, admin.headers);
  const dr = (await practitioner(s, admin, 'Practitioner/dr-ada', ['TREAT']))['TREAT']!;

  // 1. Dr Ada asks for the patient's Observations, for treatment: a proposed Consent naming herself.
  const request = {
    resourceType: 'Consent',
    id: 'req-1',
    status: 'proposed',
    scope: SCOPE,
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: 'Patient/pat-1' },
    policyRule: OPTIN,
    provision: {
      actor: [prcp('Practitioner/dr-ada')],
      class: [{ system: 'http://hl7.org/fhir/resource-types', code: 'Observation' }],
      purpose: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }],
    },
  };
  const asked = await s.fhir('PUT', 'Consent/req-1', request, dr);
  t.equal(asked.status, 201, asked.text);
  t.equal((await s.fhir('GET', 'Observation/obs-1', undefined, dr)).status, 403, 'a request grants nothing');
  const self = await s.fhir('PUT', 'Consent/req-1', { ...request, status: 'active' }, dr);
  t.equal(self.status, 403, 'the practitioner cannot approve its own request');
  t.equal(codeOf(self), 'VLM_CONSENT_REQUEST_ONLY');

  // 2. The patient's pending requests; the patient approves with its wallet (EIP-712), relayed.
  const pending = await s.fhir('GET', 'Consent?patient=Patient/pat-1&status=proposed', undefined, admin.headers);
  t.same(pending.json.entry?.map((e: any) => e.resource.id), ['req-1']);
  const wallet = Wallet.createRandom();
  t.equal(
    (await s.fhir('POST', 'Patient/pat-1/$register-wallet', { resourceType: 'Parameters', parameter: [{ name: 'address', valueString: wallet.address }] }, admin.headers)).status,
    200,
  );
  const grant = await s.fhir('GET', 'Consent/req-1/$grant-request', undefined, admin.headers);
  t.equal(grant.status, 200, grant.text);
  const td = JSON.parse(param(grant, 'typedData').valueString);
  const { EIP712Domain: _domain, ...types } = td.types;
  const signature = await wallet.signTypedData(td.domain, types, td.message);
  const signed = await s.fhir(
    'POST',
    'Consent/req-1/$grant-signed',
    {
      resourceType: 'Parameters',
      parameter: [
        { name: 'signature', valueString: signature },
        { name: 'nonce', valueString: param(grant, 'nonce').valueString },
        { name: 'deadline', valueInteger: param(grant, 'deadline').valueInteger },
      ],
    },
    admin.headers,
  );
  t.equal(signed.status, 200, signed.text);
  const answered = await s.fhir('GET', 'Consent/req-1', undefined, admin.headers);
  t.equal(answered.json.status, 'active', 'the FHIR Consent shows the approval');

  // 3. Dr Ada reads what she asked for, and nothing else.
  t.equal((await s.fhir('GET', 'Observation/obs-1', undefined, dr)).status, 200);
  t.equal((await s.fhir('GET', 'Condition/cond-1', undefined, dr)).status, 403);

  // 4. The patient revokes (signed): the very next read is denied.
  const revocation = await s.fhir('GET', 'Consent/req-1/$revocation-request', undefined, admin.headers);
  const rtd = JSON.parse(param(revocation, 'typedData').valueString);
  const { EIP712Domain: _d2, ...rtypes } = rtd.types;
  const revoked = await s.fhir(
    'POST',
    'Consent/req-1/$revoke-signed',
    {
      resourceType: 'Parameters',
      parameter: [
        { name: 'signature', valueString: await wallet.signTypedData(rtd.domain, rtypes, rtd.message) },
        { name: 'nonce', valueString: param(revocation, 'nonce').valueString },
        { name: 'deadline', valueInteger: param(revocation, 'deadline').valueInteger },
      ],
    },
    admin.headers,
  );
  t.equal(revoked.status, 200, revoked.text);
  const denied = await s.fhir('GET', 'Observation/obs-1', undefined, dr);
  t.equal(denied.status, 403);

  // Every step is an AuditEvent.
  const audit = await s.fhir('GET', 'AuditEvent?entity=Consent/req-1&_count=50', undefined, admin.headers);
  t.equal(audit.status, 200);
  t.ok((audit.json.entry?.length ?? 0) >= 3, 'the request, its approval and its revocation are audited');
  t.equal(await s.stop(), 0);
});

t.test('README: an opt-out deployment', async (t) => {
  const s = await startProcessServer(t, { env: { VELLUM_ANCHOR_INTERVAL_MS: '100', VELLUM_CONSENT_MODEL: 'opt-out' } });
  const admin = await adminOf(s);
  await seed(t, s, admin.headers);
  const dr = await practitioner(s, admin, 'Practitioner/dr-ada', ['TREAT', 'HRESCH']);
  t.equal((await s.fhir('GET', 'Observation/obs-1', undefined, dr['TREAT'])).status, 200, 'treatment is implied');
  const research = await s.fhir('GET', 'Observation/obs-1', undefined, dr['HRESCH']);
  t.equal(research.status, 403, 'research needs a permit');
  t.equal(codeOf(research), 'VLM_CONSENT_NONE');

  // The patient opts out of sharing with Dr Ada.
  const optOut = {
    resourceType: 'Consent',
    id: 'out-1',
    status: 'active',
    scope: SCOPE,
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: 'Patient/pat-1' },
    policyRule: OPTOUT,
    provision: { actor: [prcp('Practitioner/dr-ada')] },
  };
  t.equal((await s.fhir('PUT', 'Consent/out-1', optOut, admin.headers)).status, 201);
  const denied = await s.fhir('GET', 'Observation/obs-1', undefined, dr['TREAT']);
  t.equal(denied.status, 403);
  t.equal(codeOf(denied), 'VLM_CONSENT_DENIED');
  t.equal(await s.stop(), 0);

  // Restarting the same deployment as opt-in is refused unless forced (the model is on chain).
  const refused = await runUntilExit(t, { VELLUM_DATA_DIR: s.dataDir, PORT: String(await freePort()), VELLUM_CONSENT_MODEL: 'opt-in' });
  t.equal(refused.code, 2);
  t.match(refused.stderr, /VELLUM_CONSENT_MODEL/);
  const forced = await startProcessServer(t, { dataDir: s.dataDir, env: { VELLUM_CONSENT_MODEL: 'opt-in', VELLUM_CONSENT_MODEL_FORCE: '1' } });
  t.ok(forced.lines().some((line) => line.includes('consent model changed by force')), 'the forced change is logged (and audited)');
  const afterForce = await adminOf(forced);
  const audited = await forced.fhir('GET', 'AuditEvent?_count=200', undefined, afterForce.headers);
  t.ok(
    audited.json.entry?.some((e: any) => JSON.stringify(e.resource).includes('$consent-model')),
    'an AuditEvent records the forced model change',
  );
  t.equal(await forced.stop(), 0);
});
