/**
 * Issue 12 on the real server and embedded chain: access requests the patient answers (a
 * practitioner's proposed Consent, approved or rejected by the patient, expiring), and an opt-out
 * deployment (treatment implied, other purposes need a permit, a patient's deny still bites).
 */
import t from 'tap';
import { actor, classes, consent, patientToken, purposes, startConsentServer, type ConsentHarness } from './harness.ts';

const codes = (body: any): string[] => (body?.issue ?? []).map((i: any) => i.details?.coding?.[0]?.code);

async function seed(c: ConsentHarness) {
  await c.put({ resourceType: 'Patient', id: 'p1', name: [{ family: 'One' }] });
  await c.put({ resourceType: 'Practitioner', id: 'dr1', name: [{ family: 'Doc' }] });
  await c.put({ resourceType: 'Practitioner', id: 'dr2', name: [{ family: 'Other' }] });
  await c.put({ resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'hr' }, subject: { reference: 'Patient/p1' } });
  await c.put({ resourceType: 'Condition', id: 'c1', code: { text: 'x' }, subject: { reference: 'Patient/p1' } });
}

t.test('request → the patient approves → read → revoke', async (t) => {
  const c = await startConsentServer(t);
  await seed(c);
  await c.approve('Practitioner/dr1');
  const dr = await c.tokenFor('Practitioner/dr1');
  const other = await c.tokenFor('Practitioner/dr2');
  t.equal((await c.as(dr, 'GET', '/Observation/o1')).status, 403, 'no access before the request is answered');

  // The practitioner asks: a proposed Consent naming itself.
  const ask = consent('req1', 'p1', { actor: [actor('Practitioner/dr1')], class: classes('Observation'), purpose: purposes('TREAT') }, 'proposed');
  ask['policyRule'] = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] };
  const asked = await c.as(dr, 'PUT', '/Consent/req1', ask);
  t.equal(asked.status, 201, JSON.stringify(asked.body));
  t.equal((await c.as(dr, 'GET', '/Observation/o1')).status, 403, 'a request grants nothing');

  // Practitioners cannot make their request active, nor ask in another's name.
  const self = await c.as(dr, 'PUT', '/Consent/req1', { ...ask, status: 'active' });
  t.equal(self.status, 403);
  t.same(codes(self.body), ['VLM_CONSENT_REQUEST_ONLY']);
  const forOther = await c.as(other, 'PUT', '/Consent/req2', consent('req2', 'p1', { type: 'permit', actor: [actor('Practitioner/dr1')] }, 'proposed'));
  t.equal(forOther.status, 403);
  t.same(codes(forOther.body), ['VLM_CONSENT_REQUEST_ONLY']);

  // The patient sees its pending requests and approves.
  const patient = await patientToken(c, 'p1', 'openid fhirUser launch/patient patient/*.cruds');
  const pending = await c.as(patient, 'GET', '/Consent?patient=Patient/p1&status=proposed');
  t.equal(pending.status, 200);
  t.same(pending.body.entry?.map((e: any) => e.resource.id), ['req1']);
  const approved = await c.as(patient, 'PUT', '/Consent/req1', { ...ask, status: 'active' });
  t.equal(approved.status, 200, JSON.stringify(approved.body));

  // The very next read is permitted, for what was asked only.
  t.equal((await c.as(dr, 'GET', '/Observation/o1')).status, 200);
  t.equal((await c.as(dr, 'GET', '/Condition/c1')).status, 403, 'only the classes asked for');
  const mine = await c.as(dr, 'GET', '/Consent?status=active&patient=Patient/p1');
  t.equal(mine.status, 200, 'the practitioner sees the answer');

  // Revoked: the very next read is denied.
  const revoked = await c.as(patient, 'PUT', '/Consent/req1', { ...ask, status: 'inactive' });
  t.equal(revoked.status, 200);
  t.equal((await c.as(dr, 'GET', '/Observation/o1')).status, 403);
});

t.test('a rejected request grants nothing; an expired one cannot be approved', async (t) => {
  const c = await startConsentServer(t, { VELLUM_CONSENT_REQUEST_TTL: '60' });
  await seed(c);
  await c.approve('Practitioner/dr1');
  const dr = await c.tokenFor('Practitioner/dr1');
  const ask = consent('req3', 'p1', { type: 'permit', actor: [actor('Practitioner/dr1')] }, 'proposed');
  t.equal((await c.as(dr, 'PUT', '/Consent/req3', ask)).status, 201);
  const patient = await patientToken(c, 'p1', 'openid fhirUser launch/patient patient/*.cruds');
  t.equal((await c.as(patient, 'PUT', '/Consent/req3', { ...ask, status: 'rejected' })).status, 200);
  t.equal((await c.as(dr, 'GET', '/Observation/o1')).status, 403);

  // A request answered after its TTL: written with a lastUpdated in the past is not possible over
  // REST, so the TTL is checked against the stored version — age it by the clock instead.
  t.equal((await c.as(dr, 'PUT', '/Consent/req4', { ...ask, id: 'req4' })).status, 201);
  const realNow = Date.now;
  Date.now = () => realNow() + 61_000;
  t.teardown(() => {
    Date.now = realNow;
  });
  const late = await c.as(patient, 'PUT', '/Consent/req4', { ...ask, id: 'req4', status: 'active' });
  Date.now = realNow;
  t.equal(late.status, 422);
  t.same(codes(late.body), ['VLM_CONSENT_REQUEST_EXPIRED']);
});

t.test('opt-out: treatment implied, other purposes need a permit, a deny bites', async (t) => {
  const c = await startConsentServer(t, { VELLUM_CONSENT_MODEL: 'opt-out' });
  await seed(c);
  await c.approve('Practitioner/dr1');
  const treat = await c.tokenFor('Practitioner/dr1');
  const research = await c.tokenFor('Practitioner/dr1', { purpose: 'HRESCH' });
  const both = await c.tokenFor('Practitioner/dr1', { purpose: 'TREAT HPAYMT' });
  t.equal((await c.as(treat, 'GET', '/Observation/o1')).status, 200, 'TREAT without any Consent');
  t.equal((await c.as(research, 'GET', '/Observation/o1')).status, 403, 'HRESCH needs a permit');
  t.equal((await c.as(both, 'GET', '/Observation/o1')).status, 403, 'a purpose besides treatment needs a permit');
  const unapproved = await c.tokenFor('Practitioner/dr2');
  t.equal((await c.as(unapproved, 'GET', '/Observation/o1')).status, 403, 'only approved actors');

  // The patient opts out of sharing Observations with dr1 (OPTOUT base, no root type).
  const optOut = consent('out1', 'p1', { actor: [actor('Practitioner/dr1')], class: classes('Observation') });
  optOut['policyRule'] = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] };
  t.equal((await c.as(c.admin, 'PUT', '/Consent/out1', optOut)).status, 201);
  const denied = await c.as(treat, 'GET', '/Observation/o1');
  t.equal(denied.status, 403);
  t.same(codes(denied.body), ['VLM_CONSENT_DENIED']);
  t.equal((await c.as(treat, 'GET', '/Condition/c1')).status, 200, 'other classes still implied');

  const metadata = await c.as(c.admin, 'GET', '/metadata');
  const consentEntry = metadata.body.rest[0].resource.find((r: any) => r.type === 'Consent');
  t.match(consentEntry.documentation, /opt-out/);
});

t.test('the model is recorded on chain: a change needs force', async (t) => {
  const c = await startConsentServer(t, { VELLUM_CONSENT_MODEL: 'opt-out' });
  const model = await c.s.services.consent!.service.chain.model();
  t.same(model, { model: 'opt-out', set: true });
});

t.test('the custodian approving a request acts for the patient: the AuditEvent says so', async (t) => {
  const c = await startConsentServer(t);
  await seed(c);
  await c.approve('Practitioner/dr1');
  const dr = await c.tokenFor('Practitioner/dr1');
  const ask = consent('req5', 'p1', { type: 'permit', actor: [actor('Practitioner/dr1')] }, 'proposed');
  t.equal((await c.as(dr, 'PUT', '/Consent/req5', ask)).status, 201);
  t.equal((await c.as(c.admin, 'PUT', '/Consent/req5', { ...ask, status: 'active' })).status, 200);
  t.equal((await c.as(dr, 'GET', '/Observation/o1')).status, 200);
  const audit = await c.as(c.admin, 'GET', '/AuditEvent?entity=Consent/req5&_count=50');
  t.equal(audit.status, 200);
  const onBehalf = (audit.body.entry ?? []).filter((e: any) =>
    (e.resource.entity ?? []).some((en: any) => (en.detail ?? []).some((d: any) => d.type === 'on-behalf-of' && d.valueString === 'patient')),
  );
  t.equal(onBehalf.length, 1, 'one AuditEvent: the approval, on the patient’s behalf');
  t.equal(onBehalf[0]?.resource.action, 'U');
});
