import t, { type Test } from 'tap';
import { FhirError } from '../../../src/fhir/errors.ts';
import { mapConsent, type ConsentMapping } from '../../../src/fhir/consent/mapping.ts';
import { classBit, consentKeyer, type Rule } from '../../../src/fhir/consent/terms.ts';

const keyOf = consentKeyer(new Uint8Array(32).fill(42));
const SCOPE = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] };
const ACTION = 'http://terminology.hl7.org/CodeSystem/consentaction';
const REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const TYPES = 'http://hl7.org/fhir/resource-types';
const ROLE = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'PRCP' }] };

type Json = Record<string, unknown>;

/** A minimal active Consent for Patient/p1 with this root provision (null: none). */
function consent(provision: Json | null = { type: 'permit' }, extra: Json = {}): Json {
  return {
    resourceType: 'Consent',
    id: 'c1',
    status: 'active',
    scope: SCOPE,
    patient: { reference: 'Patient/p1' },
    ...(provision ? { provision } : {}),
    ...extra,
  };
}

const actor = (reference: string) => ({ role: ROLE, reference: { reference } });
const action = (code: string) => ({ coding: [{ system: ACTION, code }] });
const purpose = (code: string) => ({ system: REASON, code });
const cls = (code: string) => ({ system: TYPES, code });
const secs = (y: number, mo: number, d: number, h = 0, mi = 0, s = 0) => Date.UTC(y, mo - 1, d, h, mi, s) / 1000;
const OPEN: Omit<Rule, 'permit'> = { actors: [], classes: 0n, actions: 0, purposes: 0n, start: 0, end: 0 };

/** Map and expect a 422 with this issue code, VLM code and FHIRPath expression. */
function refuses(t: Test, resource: unknown, issue: 'business-rule' | 'not-supported', code: string, expression: string): void {
  let thrown: unknown;
  try {
    mapConsent(resource, keyOf);
  } catch (err) {
    thrown = err;
  }
  if (!(thrown instanceof FhirError)) {
    t.fail(`expected 422 ${code}, got ${thrown === undefined ? 'a mapping' : String(thrown)}`);
    return;
  }
  t.equal(thrown.status, 422, `${code}: status`);
  t.equal(thrown.issues[0]?.code, issue, `${code}: issue code`);
  t.equal(thrown.issues[0]?.vellumCode, code, `${code}: VLM code`);
  t.same(thrown.issues[0]?.expression, [expression], `${code}: expression`);
}

function rulesOf(resource: unknown): Rule[] {
  const m = mapConsent(resource, keyOf);
  if (m.action !== 'put') throw new Error(`expected put, got ${m.action}`);
  return m.rules;
}

t.test('status', async (t) => {
  const m = mapConsent(consent(), keyOf);
  t.same(m, {
    action: 'put',
    consentId: keyOf('Consent/c1'),
    patient: keyOf('Patient/p1'),
    patientRef: 'Patient/p1',
    rules: [{ permit: true, ...OPEN }],
  } satisfies ConsentMapping);
  // Only `active` is read past scope and patient: an unsupported provision does not matter.
  const unsupported = { type: 'permit', securityLabel: [{ system: 'x', code: 'R' }] };
  for (const status of ['inactive', 'rejected', 'entered-in-error']) {
    t.same(mapConsent(consent(unsupported, { status }), keyOf), { action: 'revoke', consentId: keyOf('Consent/c1') }, status);
  }
  for (const status of ['draft', 'proposed']) {
    t.same(mapConsent(consent(unsupported, { status }), keyOf), { action: 'none', consentId: keyOf('Consent/c1') }, status);
  }
  t.same(mapConsent(consent(null, { status: 'inactive' }), keyOf).action, 'revoke', 'no provision needed to revoke');
  const noStatus = consent();
  delete noStatus['status'];
  refuses(t, noStatus, 'business-rule', 'VLM_CONSENT_STATUS', 'Consent.status');
  refuses(t, consent(undefined, { status: 'cancelled' }), 'business-rule', 'VLM_CONSENT_STATUS', 'Consent.status');
});

t.test('consent id: the id parameter, else resource.id', async (t) => {
  const noId = consent();
  delete noId['id'];
  t.equal(mapConsent(noId, keyOf, 'new-1').consentId, keyOf('Consent/new-1'));
  t.equal(mapConsent(consent(), keyOf, 'other').consentId, keyOf('Consent/other'), 'the parameter wins');
  t.throws(() => mapConsent(noId, keyOf), TypeError, 'no id at all is a programming error');
  t.throws(() => mapConsent({ resourceType: 'Patient', id: 'x' }, keyOf), TypeError);
});

t.test('scope must be consentscope|patient-privacy (for every status)', async (t) => {
  for (const code of ['treatment', 'research', 'adr']) {
    refuses(t, consent(undefined, { scope: { coding: [{ system: SCOPE.coding[0]!.system, code }] } }), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  }
  refuses(t, consent(undefined, { scope: { coding: [{ system: 'http://example.org/scope', code: 'patient-privacy' }] } }), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  refuses(t, consent(undefined, { scope: { text: 'privacy' } }), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  refuses(t, consent(undefined, { scope: undefined }), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  refuses(t, consent(undefined, { status: 'draft', scope: { coding: [{ system: SCOPE.coding[0]!.system, code: 'research' }] } }), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  const ambiguous = { coding: [...SCOPE.coding, { system: SCOPE.coding[0]!.system, code: 'research' }] };
  refuses(t, consent(undefined, { scope: ambiguous }), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  const translated = { coding: [{ system: 'http://example.org/local', code: 'priv' }, ...SCOPE.coding] };
  t.equal(mapConsent(consent(undefined, { scope: translated }), keyOf).action, 'put', 'a translation beside it is fine');
});

t.test('patient must be a relative Patient/{id} reference', async (t) => {
  refuses(t, consent(undefined, { patient: undefined }), 'business-rule', 'VLM_CONSENT_PATIENT_REQUIRED', 'Consent.patient');
  for (const patient of [
    { identifier: { system: 'urn:x', value: '1' } },
    { reference: 'http://other.org/fhir/Patient/p1' },
    { reference: 'Group/g1' },
    { reference: '#p1' },
    { reference: 'Patient/p1/_history/2' },
    { reference: 'Patient/' },
    { reference: 'Patient/p1', type: 'Group' },
  ]) {
    refuses(t, consent(undefined, { patient }), 'not-supported', 'VLM_CONSENT_PATIENT_REFERENCE', 'Consent.patient');
  }
  t.equal(mapConsent(consent(undefined, { patient: { reference: 'Patient/p1', type: 'Patient', display: 'x' } }), keyOf).action, 'put');
});

t.test('provision and its type', async (t) => {
  // Decision: an active Consent without provision has nothing the registry can enforce.
  refuses(t, consent(null), 'business-rule', 'VLM_CONSENT_PROVISION_REQUIRED', 'Consent.provision');
  refuses(t, consent({}), 'business-rule', 'VLM_CONSENT_TYPE_REQUIRED', 'Consent.provision.type');
  refuses(t, consent({ type: 'permit', provision: [{ type: 'deny' }, {}] }), 'business-rule', 'VLM_CONSENT_TYPE_REQUIRED', 'Consent.provision.provision[1].type');
  refuses(t, consent({ type: 'allow' }), 'not-supported', 'VLM_CONSENT_TYPE', 'Consent.provision.type');
  refuses(t, consent({ type: 'permit', provision: [{ type: 'Deny' }] }), 'not-supported', 'VLM_CONSENT_TYPE', 'Consent.provision.provision[0].type');
  t.same(rulesOf(consent({ type: 'deny' })), [{ permit: false, ...OPEN }]);
  t.same(rulesOf(consent({ type: 'permit' }, { _status: { extension: [] } })), [{ permit: true, ...OPEN }]);
});

t.test('actors', async (t) => {
  const refs = ['Practitioner/pr1', 'PractitionerRole/r1', 'Organization/o1', 'RelatedPerson/rp1', 'Device/d-1.2'];
  const [rule] = rulesOf(consent({ type: 'permit', actor: refs.map(actor) }));
  t.same(rule!.actors, refs.map(keyOf));
  // The role is informational: the same reference under two roles is one actor.
  const twice = [actor('Practitioner/pr1'), { role: { text: 'author' }, reference: { reference: 'Practitioner/pr1', type: 'Practitioner' } }];
  t.same(rulesOf(consent({ type: 'deny', actor: twice }))[0]!.actors, [keyOf('Practitioner/pr1')]);

  for (const ref of ['Patient/p2', 'Group/g1', 'CareTeam/t1']) {
    refuses(t, consent({ type: 'permit', actor: [actor('Practitioner/pr1'), actor(ref)] }), 'not-supported', 'VLM_CONSENT_ACTOR_TYPE', 'Consent.provision.actor[1].reference');
  }
  for (const reference of [
    { identifier: { system: 'urn:npi', value: '123' } },
    { reference: 'https://example.org/fhir/Practitioner/pr1' },
    { reference: '#pr1' },
    { reference: 'Practitioner/pr1/_history/1' },
    { display: 'Dr X' },
  ]) {
    refuses(t, consent({ type: 'permit', actor: [{ role: ROLE, reference }] }), 'not-supported', 'VLM_CONSENT_ACTOR_REFERENCE', 'Consent.provision.actor[0].reference');
  }
  refuses(t, consent({ type: 'permit', actor: [{ role: ROLE }] }), 'not-supported', 'VLM_CONSENT_ACTOR_REFERENCE', 'Consent.provision.actor[0].reference');
  refuses(
    t,
    consent({ type: 'permit', actor: [{ role: ROLE, reference: { reference: 'Practitioner/pr1', type: 'Organization' } }] }),
    'not-supported',
    'VLM_CONSENT_ACTOR_REFERENCE',
    'Consent.provision.actor[0].reference.type',
  );

  const nine = Array.from({ length: 9 }, (_, i) => actor(`Practitioner/p${i}`));
  refuses(t, consent({ type: 'deny', actor: nine }), 'business-rule', 'VLM_CONSENT_TOO_MANY_ACTORS', 'Consent.provision.actor');
  refuses(t, consent({ type: 'deny', provision: [{ type: 'deny', actor: nine }] }), 'business-rule', 'VLM_CONSENT_TOO_MANY_ACTORS', 'Consent.provision.provision[0].actor');
  const eightDistinct = [...nine.slice(0, 8), actor('Practitioner/p0')];
  t.equal(rulesOf(consent({ type: 'deny', actor: eightDistinct }))[0]!.actors.length, 8, 'the limit counts distinct actors');
});

t.test('class, action, purpose bitmasks', async (t) => {
  const [rule] = rulesOf(
    consent({
      type: 'permit',
      class: [cls('Observation'), cls('Condition'), cls('Observation')],
      action: [action('access'), action('correct'), { coding: [{ system: 'http://example.org/local', code: 'read' }, { system: ACTION, code: 'use' }] }],
      purpose: [purpose('TREAT'), purpose('ETREAT'), purpose('HOUTCOMS')],
    }),
  );
  t.equal(rule!.classes, (1n << BigInt(classBit('Observation')!)) | (1n << BigInt(classBit('Condition')!)));
  t.equal(rule!.actions, 0b10101, 'access, use (beside a local translation), correct');
  t.equal(rule!.purposes, 0b11n | (1n << 19n));
  t.equal(rulesOf(consent({ type: 'permit', class: [cls('VisionPrescription')] }))[0]!.classes, 1n << 145n, 'the top bit');

  refuses(t, consent({ type: 'permit', class: [cls('Observation'), { system: 'urn:ietf:bcp:13', code: 'application/hl7-cda+xml' }] }), 'not-supported', 'VLM_CONSENT_CLASS', 'Consent.provision.class[1]');
  refuses(t, consent({ type: 'permit', class: [cls('Observations')] }), 'not-supported', 'VLM_CONSENT_CLASS', 'Consent.provision.class[0]');
  refuses(t, consent({ type: 'permit', class: [cls('SubscriptionStatus')] }), 'not-supported', 'VLM_CONSENT_CLASS', 'Consent.provision.class[0]');
  refuses(t, consent({ type: 'permit', class: [{ code: 'Observation' }] }), 'not-supported', 'VLM_CONSENT_CLASS', 'Consent.provision.class[0]');

  refuses(t, consent({ type: 'permit', action: [action('access'), action('read')] }), 'not-supported', 'VLM_CONSENT_ACTION', 'Consent.provision.action[1]');
  refuses(t, consent({ type: 'permit', action: [{ coding: [{ system: 'http://example.org/local', code: 'access' }] }] }), 'not-supported', 'VLM_CONSENT_ACTION', 'Consent.provision.action[0]');
  refuses(t, consent({ type: 'permit', action: [{ text: 'look at' }] }), 'not-supported', 'VLM_CONSENT_ACTION', 'Consent.provision.action[0]');
  refuses(t, consent({ type: 'permit', action: [{ coding: [{ system: ACTION, code: 'access' }, { system: ACTION, code: 'correct' }] }] }), 'not-supported', 'VLM_CONSENT_ACTION', 'Consent.provision.action[0]');

  refuses(t, consent({ type: 'permit', purpose: [purpose('TREAT'), purpose('HPRGRP')] }), 'not-supported', 'VLM_CONSENT_PURPOSE', 'Consent.provision.purpose[1]');
  refuses(t, consent({ type: 'permit', purpose: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'TREAT' }] }), 'not-supported', 'VLM_CONSENT_PURPOSE', 'Consent.provision.purpose[0]');
  refuses(t, consent({ type: 'permit', purpose: [purpose('treat')] }), 'not-supported', 'VLM_CONSENT_PURPOSE', 'Consent.provision.purpose[0]');
});

t.test('period: first and last second of each precision', async (t) => {
  const period = (start?: string, end?: string) => {
    const [r] = rulesOf(consent({ type: 'permit', period: { ...(start ? { start } : {}), ...(end ? { end } : {}) } }));
    return [r!.start, r!.end];
  };
  t.same(period('2020', '2020'), [secs(2020, 1, 1), secs(2020, 12, 31, 23, 59, 59)], 'year');
  t.same(period('2020-02', '2020-02'), [secs(2020, 2, 1), secs(2020, 2, 29, 23, 59, 59)], 'month (leap year)');
  t.same(period('2020-03-01', '2020-03-01'), [secs(2020, 3, 1), secs(2020, 3, 1, 23, 59, 59)], 'date: a UTC day');
  t.same(period('2016-06-23T17:02:33+10:00', '2016-06-23T17:32:33+10:00'), [secs(2016, 6, 23, 7, 2, 33), secs(2016, 6, 23, 7, 32, 33)], 'dateTime with a zone');
  t.same(period('2016-06-23T17:02:33-04:30', undefined), [secs(2016, 6, 23, 21, 32, 33), 0], 'negative offset; no end');
  t.same(period(undefined, '2020-01-01T00:00:00.999Z'), [0, secs(2020, 1, 1)], 'a fraction stays in its second');
  t.same(period('2020-01-01T00:00:00.5Z', '2020-01-01T00:00:00.5Z'), [secs(2020, 1, 1), secs(2020, 1, 1)]);
  t.same(period('1964-01-01', '2016-01-01'), [0, secs(2016, 1, 1, 23, 59, 59)], 'a start before 1970 is unbounded');
  t.same(period('1970-01-01T00:00:00Z', '1970-01-01T00:00:01Z'), [0, 1]);
  t.same(period('2020-01-01', '2020-01-01'), [secs(2020, 1, 1), secs(2020, 1, 1, 23, 59, 59)], 'one day is a valid period');

  const refusesPeriod = (p: Json, expression: string) =>
    refuses(t, consent({ type: 'permit', period: p }), 'business-rule', 'VLM_CONSENT_PERIOD', expression);
  refusesPeriod({ end: '1969-12-31' }, 'Consent.provision.period.end');
  refusesPeriod({ end: '1970-01-01T00:00:00Z' }, 'Consent.provision.period.end');
  refusesPeriod({ start: '2020-13-01' }, 'Consent.provision.period.start');
  refusesPeriod({ start: '2020-01-01T10:00:00' }, 'Consent.provision.period.start');
  refusesPeriod({ end: 'soon' }, 'Consent.provision.period.end');
  refusesPeriod({ start: 20200101 }, 'Consent.provision.period.start');
  refusesPeriod({ start: '2020-01-02', end: '2020-01-01' }, 'Consent.provision.period');
  refusesPeriod({ start: '2020-01-01T12:00:00Z', end: '2020-01-01T11:59:59Z' }, 'Consent.provision.period');
});

t.test('nested provisions: exceptions, one level, at most 8, never wider than the base', async (t) => {
  const rules = rulesOf(
    consent({
      type: 'deny',
      provision: [
        { type: 'permit', purpose: [purpose('ETREAT')] },
        { type: 'deny', actor: [actor('Practitioner/x')], class: [cls('Observation')] },
      ],
    }),
  );
  t.same(rules, [
    { permit: false, ...OPEN },
    { permit: true, ...OPEN, purposes: 0b10n },
    { permit: false, ...OPEN, actors: [keyOf('Practitioner/x')], classes: 1n << BigInt(classBit('Observation')!) },
  ], 'fields as written: unstated ones are left to inheritance');

  const eight = Array.from({ length: 8 }, () => ({ type: 'deny' }));
  t.equal(rulesOf(consent({ type: 'permit', provision: eight })).length, 9);
  refuses(t, consent({ type: 'permit', provision: [...eight, { type: 'deny' }] }), 'business-rule', 'VLM_CONSENT_TOO_MANY_EXCEPTIONS', 'Consent.provision.provision');
  refuses(t, consent({ type: 'permit', provision: [{ type: 'deny' }, { type: 'deny', provision: [{ type: 'permit' }] }] }), 'not-supported', 'VLM_CONSENT_NESTING', 'Consent.provision.provision[1].provision');

  // Narrowing is the R4 reading of nesting; the registry replaces a stated field, so a wider one is refused.
  const base = {
    type: 'permit',
    actor: [actor('Organization/o1'), actor('Practitioner/p1')],
    class: [cls('Observation'), cls('Condition')],
    action: [action('access'), action('correct')],
    purpose: [purpose('TREAT'), purpose('ETREAT')],
    period: { start: '2020-01-01', end: '2020-12-31' },
  };
  const narrow = { type: 'deny', actor: [actor('Practitioner/p1')], class: [cls('Condition')], action: [action('correct')], purpose: [purpose('TREAT')], period: { start: '2020-06-01', end: '2020-06-30' } };
  t.equal(rulesOf(consent({ ...base, provision: [narrow] })).length, 2, 'a narrower exception maps');
  const wider: [Json, string][] = [
    [{ actor: [actor('Practitioner/p2')] }, 'actor'],
    [{ class: [cls('Condition'), cls('Patient')] }, 'class'],
    [{ action: [action('collect')] }, 'action'],
    [{ purpose: [purpose('HPAYMT')] }, 'purpose'],
    [{ period: { start: '2019-12-31' } }, 'period.start'],
    [{ period: { end: '2021-01-01' } }, 'period.end'],
  ];
  for (const [field, element] of wider) {
    refuses(t, consent({ ...base, provision: [{ type: 'deny' }, { type: 'deny', ...field }] }), 'business-rule', 'VLM_CONSENT_EXCEPTION_WIDENS', `Consent.provision.provision[1].${element}`);
  }
  const open = rulesOf(consent({ type: 'deny', provision: [{ type: 'permit', actor: [actor('Practitioner/p2')], class: [cls('Patient')], period: { start: '1999' } }] }));
  t.equal(open.length, 2, 'an unrestricted base admits any exception');
});

t.test('elements with no on-chain representation are refused, not dropped', async (t) => {
  const unsupported: Json = {
    data: [{ meaning: 'instance', reference: { reference: 'Observation/o1' } }],
    securityLabel: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }],
    code: [{ coding: [{ system: 'http://loinc.org', code: '34133-9' }] }],
    dataPeriod: { start: '2020-01-01' },
    unknownElement: true,
  };
  for (const [key, value] of Object.entries(unsupported)) {
    refuses(t, consent({ type: 'permit', [key]: value }), 'not-supported', 'VLM_CONSENT_ELEMENT', `Consent.provision.${key}`);
    refuses(t, consent({ type: 'permit', provision: [{ type: 'deny' }, { type: 'deny', [key]: value }] }), 'not-supported', 'VLM_CONSENT_ELEMENT', `Consent.provision.provision[1].${key}`);
  }
  refuses(t, consent({ type: 'permit', actor: [{ ...actor('Device/d'), period: {} }] }), 'not-supported', 'VLM_CONSENT_ELEMENT', 'Consent.provision.actor[0].period');
  const modifier = [{ url: 'http://example.org/not', valueBoolean: true }];
  refuses(t, consent(undefined, { modifierExtension: modifier }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.modifierExtension');
  refuses(t, consent(undefined, { implicitRules: 'http://example.org/rules' }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.implicitRules');
  refuses(t, consent({ type: 'permit', modifierExtension: modifier }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.provision.modifierExtension');
  refuses(t, consent({ type: 'permit', provision: [{ type: 'deny', modifierExtension: modifier }] }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.provision.provision[0].modifierExtension');
  refuses(t, consent({ type: 'permit', actor: [{ ...actor('Device/d'), modifierExtension: modifier }] }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.provision.actor[0].modifierExtension');
});

t.test('record-keeping elements do not change the terms', async (t) => {
  const provision = { type: 'permit', actor: [actor('Practitioner/p1')], id: 'root', extension: [{ url: 'http://example.org/note', valueString: 'x' }] };
  const plain = rulesOf(consent(provision));
  const decorated = rulesOf(
    consent(provision, {
      identifier: [{ system: 'urn:x', value: '1' }],
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
      dateTime: '2020-01-01',
      performer: [{ reference: 'Patient/p1' }],
      organization: [{ reference: 'Organization/o1' }],
      sourceAttachment: { title: 'signed form' },
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] },
      policy: [{ uri: 'http://example.org/policy' }],
      verification: [{ verified: true, verifiedWith: { reference: 'Patient/p1' } }],
      extension: [{ url: 'http://example.org/e', valueString: 'x' }],
      text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">x</div>' },
    }),
  );
  t.same(decorated, plain);
});
