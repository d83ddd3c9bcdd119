/**
 * The consent walk-through (docs/consent.md) against the real `npm start` process (embedded authorization
 * server, audit trail, chain and consent registry, all defaults): enrol a practitioner, approve it,
 * grant with a FHIR Consent, read, revoke, and the next read is denied; then the same with a
 * patient-signed EIP-712 revocation relayed through Vellum; and the AuditEvents of it all are
 * searchable and verify against the chain. Meanwhile the practitioner subscribes a rest-hook to the
 * patient's critical results (README, Subscriptions): notified while the consent permits, not for
 * the one written while it was revoked.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Wallet } from 'ethers';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import t from 'tap';
import { startProcessServer } from '../helpers/process-server.ts';
import { receiver } from '../fhir/subscriptions/harness.ts';

const PATIENT_PRIVACY = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] };

function consent(id: string, status: string): Record<string, unknown> {
  return {
    resourceType: 'Consent',
    id,
    status,
    scope: PATIENT_PRIVACY,
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: 'Patient/pat-1' },
    provision: {
      type: 'permit',
      actor: [
        {
          role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'PRCP' }] },
          reference: { reference: 'Practitioner/dr-ada' },
        },
      ],
      purpose: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' }],
    },
  };
}

const codeOf = (res: { json: any }) => res.json?.issue?.[0]?.details?.coding?.[0]?.code;
const param = (res: { json: any }, name: string) => res.json?.parameter?.find((p: any) => p.name === name);

t.test('consent walk-through (docs/consent.md)', async (t) => {
  const hook = await receiver(t);
  const s = await startProcessServer(t, { env: { VELLUM_ANCHOR_INTERVAL_MS: '100', VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${hook.port}` } });
  const admin = JSON.parse(fs.readFileSync(path.join(s.dataDir, 'admin-client.json'), 'utf8'));
  const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
  const adminRes = await fetch(admin.token_url, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${admin.client_id}:${admin.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: form({ grant_type: 'client_credentials', scope: 'system/*.*' }),
  });
  const adminToken = ((await adminRes.json()) as any).access_token as string;
  const asAdmin = { authorization: `Bearer ${adminToken}` };

  // The data, the practitioner, and the administrator's on-chain approval.
  for (const resource of [
    { resourceType: 'Patient', id: 'pat-1', name: [{ family: 'Walker' }] },
    { resourceType: 'Practitioner', id: 'dr-ada', name: [{ family: 'Lovelace' }] },
    { resourceType: 'Observation', id: 'obs-1', status: 'final', code: { text: 'heart rate' }, subject: { reference: 'Patient/pat-1' } },
  ]) {
    const put = await s.fhir('PUT', `${resource.resourceType}/${resource.id}`, resource, asAdmin);
    t.equal(put.status, 201, `${resource.resourceType}/${resource.id}`);
  }
  const approved = await s.fhir('POST', 'Practitioner/dr-ada/$approve', undefined, asAdmin);
  t.equal(approved.status, 200, approved.text);
  t.match(param(approved, 'transaction')?.valueString, /^0x[0-9a-f]{64}$/);

  // The practitioner's app: a Backend Services client bound to Practitioner/dr-ada.
  const { privateKey, publicKey } = await generateKeyPair('ES384', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'ada-1', alg: 'ES384' };
  const reg = await s.http(
    'POST',
    '/auth/register',
    {
      client_name: 'Dr Ada',
      token_endpoint_auth_method: 'private_key_jwt',
      grant_types: ['client_credentials'],
      scope: 'system/*.rs system/Subscription.cru',
      jwks: { keys: [jwk] },
      fhir_user: 'Practitioner/dr-ada',
    },
    { ...asAdmin, 'content-type': 'application/json' },
  );
  t.equal(reg.status, 201, reg.text);
  const clientId = reg.json.client_id as string;
  const assertion = await new SignJWT({ iss: clientId, sub: clientId, aud: admin.token_url, jti: randomUUID() })
    .setProtectedHeader({ alg: 'ES384', kid: 'ada-1', typ: 'JWT' })
    .setExpirationTime('4m')
    .sign(privateKey);
  const tokenRes = await fetch(admin.token_url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form({
      grant_type: 'client_credentials',
      scope: 'system/*.rs system/Subscription.cru',
      purpose_of_use: 'TREAT',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    }),
  });
  t.equal(tokenRes.status, 200);
  const asDr = { authorization: `Bearer ${((await tokenRes.json()) as any).access_token}` };

  // No consent yet: denied.
  let read = await s.fhir('GET', 'Observation/obs-1', undefined, asDr);
  t.equal(read.status, 403);
  t.equal(codeOf(read), 'VLM_CONSENT_NONE');

  // Grant with a FHIR Consent: the next read is permitted.
  t.equal((await s.fhir('PUT', 'Consent/c-1', consent('c-1', 'active'), asAdmin)).status, 201);
  read = await s.fhir('GET', 'Observation/obs-1', undefined, asDr);
  t.equal(read.status, 200);

  // Dr Ada subscribes a rest-hook to pat-1's critical results; one is written and notified.
  const critical = (id: string) => ({
    resourceType: 'Observation',
    id,
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject: { reference: 'Patient/pat-1' },
    valueQuantity: { value: 190, unit: '/min' },
    interpretation: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: 'HH' }] }],
  });
  const backport = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';
  const subscribed = await s.fhir(
    'PUT',
    'Subscription/ada-critical',
    {
      resourceType: 'Subscription',
      id: 'ada-critical',
      status: 'requested',
      reason: 'critical results of my patient',
      criteria: 'https://vellum.dev/fhir/SubscriptionTopic/critical-result',
      _criteria: { extension: [{ url: `${backport}/backport-filter-criteria`, valueString: 'Observation?patient=Patient/pat-1' }] },
      channel: {
        type: 'rest-hook',
        endpoint: hook.url('ada'),
        payload: 'application/fhir+json',
        _payload: { extension: [{ url: `${backport}/backport-payload-content`, valueCode: 'full-resource' }] },
      },
    },
    asDr,
  );
  t.equal(subscribed.status, 201, subscribed.text);
  await hook.until('ada', 1);
  t.equal((await s.fhir('PUT', 'Observation/crit-1', critical('crit-1'), asAdmin)).status, 201);
  await hook.until('ada', 2);
  const focusOf = (n: number) => {
    const bundle = JSON.parse(hook.at('ada')[n]!.body);
    const event = bundle.entry[0].resource.parameter.find((p: any) => p.name === 'notification-event');
    return [event.part.find((p: any) => p.name === 'event-number').valueString, bundle.entry[1]?.resource?.id];
  };
  t.same(focusOf(1), ['1', 'crit-1'], 'the critical result is notified, with the Observation');

  // Revoke: the very next read is denied.
  t.equal((await s.fhir('PUT', 'Consent/c-1', consent('c-1', 'inactive'), asAdmin)).status, 200);
  t.equal((await s.fhir('PUT', 'Observation/crit-2', critical('crit-2'), asAdmin)).status, 201, 'a critical result while revoked');
  read = await s.fhir('GET', 'Observation/obs-1', undefined, asDr);
  t.equal(read.status, 403);
  t.equal(codeOf(read), 'VLM_CONSENT_NONE');

  // A patient-signed revocation: the patient's wallet, a new grant, the typed data, the signature.
  const wallet = Wallet.createRandom();
  const registered = await s.fhir(
    'POST',
    'Patient/pat-1/$register-wallet',
    { resourceType: 'Parameters', parameter: [{ name: 'address', valueString: wallet.address }] },
    asAdmin,
  );
  t.equal(registered.status, 200, registered.text);
  t.equal((await s.fhir('PUT', 'Consent/c-2', consent('c-2', 'active'), asAdmin)).status, 201);
  t.equal((await s.fhir('GET', 'Observation/obs-1', undefined, asDr)).status, 200);
  // Granted again: the next critical result is notified as event 2 — the one written while revoked was passed over.
  t.equal((await s.fhir('PUT', 'Observation/crit-3', critical('crit-3'), asAdmin)).status, 201);
  await hook.until('ada', 3);
  t.same(focusOf(2), ['2', 'crit-3'], 'nothing was sent for the critical result written while the consent was revoked');
  const request = await s.fhir('GET', 'Consent/c-2/$revocation-request', undefined, asAdmin);
  t.equal(request.status, 200, request.text);
  const td = JSON.parse(param(request, 'typedData').valueString);
  t.ok(td.types.EIP712Domain, 'wallet-ready (eth_signTypedData_v4) typed data');
  const { EIP712Domain: _domain, ...types } = td.types;
  const signature = await wallet.signTypedData(td.domain, types, td.message);
  const relayed = await s.fhir(
    'POST',
    'Consent/c-2/$revoke-signed',
    {
      resourceType: 'Parameters',
      parameter: [
        { name: 'signature', valueString: signature },
        { name: 'nonce', valueString: param(request, 'nonce').valueString },
        { name: 'deadline', valueInteger: param(request, 'deadline').valueInteger },
      ],
    },
    asAdmin,
  );
  t.equal(relayed.status, 200, relayed.text);
  read = await s.fhir('GET', 'Observation/obs-1', undefined, asDr);
  t.equal(read.status, 403, 'the next read after the mined signed revocation is denied');
  const c2 = await s.fhir('GET', 'Consent/c-2', undefined, asAdmin);
  t.equal(c2.json.status, 'inactive', 'the FHIR Consent reflects the signed revocation');
  t.equal(c2.json.meta.versionId, '2');
  const reactivate = await s.fhir('PUT', 'Consent/c-2', consent('c-2', 'active'), asAdmin);
  t.equal(reactivate.status, 409, 'only the patient can lift its own signed revocation');
  t.equal(codeOf(reactivate), 'VLM_CONSENT_LOCKED');

  // The AuditEvents of it all: the practitioner's accesses, permitted and denied, with their decisions.
  const audit = await s.fhir('GET', 'AuditEvent?agent=Practitioner/dr-ada&_count=100', undefined, asAdmin);
  t.equal(audit.status, 200);
  const decisions = audit.json.entry
    .flatMap((e: any) => (e.resource.entity ?? []).filter((en: any) => en.description === 'consent decision'))
    .map((en: any) => en.detail.find((d: any) => d.type === 'decision').valueString)
    .sort();
  t.same([...new Set(decisions)], ['no-consent', 'permit'], 'each access records its consent decision');
  t.equal(audit.json.entry.filter((e: any) => e.resource.outcome === '4').length, 3, 'the three denials are audited as failures');
  const one = audit.json.entry[0].resource.id;
  let verified = false;
  for (let i = 0; i < 100 && !verified; i++) {
    const v = await s.fhir('GET', `AuditEvent/${one}/$verify`, undefined, asAdmin);
    verified = param(v, 'verified')?.valueBoolean === true;
    if (!verified) await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(verified, 'an AuditEvent of the walk-through is anchored and verified');
  t.equal(await s.stop(), 0);
});
