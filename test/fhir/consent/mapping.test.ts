/**
 * mapConsent (src/fhir/consent/mapping.ts): a FHIR R4 Consent → the rules the consent registry
 * stores, or a 422 naming the element it cannot hold.
 */
import t, { type Test } from 'tap';
import { FhirError } from '../../../src/fhir/errors.ts';
import { BASE_POLICIES, mapConsent, relatedDataReferences, type ConsentMapping, type MappingContext } from '../../../src/fhir/consent/mapping.ts';
import { ETREAT, HRESCH, TREAT, classBit, consentKeyer, tokenKeyer, type Rule } from '../../../src/fhir/consent/terms.ts';

const keyOf = consentKeyer(new Uint8Array(32).fill(42));
const tokenOf = tokenKeyer(keyOf);
const CONTEXT: MappingContext = { keyOf, tokenOf };
const SCOPE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentscope';
const SCOPE = { coding: [{ system: SCOPE_SYSTEM, code: 'patient-privacy' }] };
const ACTION = 'http://terminology.hl7.org/CodeSystem/consentaction';
const REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const TYPES = 'http://hl7.org/fhir/resource-types';
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const role = (code: string) => ({ coding: [{ system: PARTICIPATION, code }] });

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

const policyRule = (code: string, system = ACT_CODE) => ({ policyRule: { coding: [{ system, code }] } });
const actor = (reference: string, code = 'PRCP') => ({ role: role(code), reference: { reference } });
const action = (code: string) => ({ coding: [{ system: ACTION, code }] });
const purpose = (code: string) => ({ system: REASON, code });
const cls = (code: string) => ({ system: TYPES, code });
const secs = (y: number, mo: number, d: number, h = 0, mi = 0, s = 0) => Date.UTC(y, mo - 1, d, h, mi, s) / 1000;
const bit = (type: string) => 1n << BigInt(classBit(type)!);

/** A full Rule: nothing conditioned unless `fields` says so. */
function rule(permit: boolean, fields: Partial<Omit<Rule, 'permit'>> = {}): Rule {
  return { parent: 0, permit, actors: [], classes: 0n, actions: 0, purposes: 0n, start: 0, end: 0, dataStart: 0, dataEnd: 0, tokens: [], ...fields };
}

/** Map and expect a 422 with this issue code, VLM code and FHIRPath expression. */
function refuses(t: Test, resource: unknown, issue: 'business-rule' | 'not-supported', code: string, expression: string, context: MappingContext = CONTEXT): void {
  let thrown: unknown;
  try {
    mapConsent(resource, context);
  } catch (err) {
    thrown = err;
  }
  if (!(thrown instanceof FhirError)) {
    t.fail(`expected 422 ${code} at ${expression}, got ${thrown === undefined ? 'a mapping' : String(thrown)}`);
    return;
  }
  t.equal(thrown.status, 422, `${code}: status`);
  t.equal(thrown.issues[0]?.code, issue, `${code}: issue code`);
  t.equal(thrown.issues[0]?.vellumCode, code, `${code}: VLM code`);
  t.same(thrown.issues[0]?.expression, [expression], `${code}: expression`);
}

function rulesOf(resource: unknown, context: MappingContext = CONTEXT): Rule[] {
  const m = mapConsent(resource, context);
  if (m.action !== 'put') throw new Error(`expected put, got ${m.action}`);
  return m.rules;
}

t.test('status', async (t) => {
  const m = mapConsent(consent(), CONTEXT);
  t.same(m, {
    action: 'put',
    consentId: keyOf('Consent/c1'),
    patient: keyOf('Patient/p1'),
    patientRef: 'Patient/p1',
    rules: [rule(true)],
  } satisfies ConsentMapping);
  // Past scope and patient, only active and proposed read the provisions: an unsupported one does not matter.
  const unsupported = { type: 'permit', unknownElement: true };
  for (const status of ['inactive', 'rejected', 'entered-in-error']) {
    t.same(mapConsent(consent(unsupported, { status }), CONTEXT), { action: 'revoke', consentId: keyOf('Consent/c1') }, status);
  }
  t.same(mapConsent(consent(unsupported, { status: 'draft' }), CONTEXT), { action: 'none', consentId: keyOf('Consent/c1') }, 'draft');
  t.same(mapConsent(consent(null, { status: 'inactive' }), CONTEXT).action, 'revoke', 'no provision needed to revoke');
  const noStatus = consent();
  delete noStatus['status'];
  refuses(t, noStatus, 'business-rule', 'VLM_CONSENT_STATUS', 'Consent.status');
  refuses(t, consent(undefined, { status: 'cancelled' }), 'business-rule', 'VLM_CONSENT_STATUS', 'Consent.status');
});

t.test('proposed: an access request, mapped in full, naming its recipients', async (t) => {
  const provision = {
    type: 'permit',
    actor: [actor('Practitioner/dr'), actor('Organization/o1', 'CST')],
    class: [cls('Observation')],
    purpose: [purpose('TREAT')],
    period: { start: '2030-01-01', end: '2030-01-31' },
    provision: [{ type: 'deny', actor: [actor('PractitionerRole/r1')] }],
  };
  const m = mapConsent(consent(provision, { status: 'proposed' }), CONTEXT);
  t.equal(m.action, 'request');
  if (m.action !== 'request') return;
  t.same(m.rules, rulesOf(consent(provision)), 'the rules an approval will put');
  t.same(m.recipients, [keyOf('Practitioner/dr'), keyOf('PractitionerRole/r1')], 'recipient actors of every provision; the custodian is no recipient');
  t.equal(m.patientRef, 'Patient/p1');
  t.equal(m.patient, keyOf('Patient/p1'));
  refuses(t, consent({ type: 'permit', unknownElement: 1 }, { status: 'proposed' }), 'not-supported', 'VLM_CONSENT_ELEMENT', 'Consent.provision.unknownElement');
});

t.test('consent id: the id parameter, else resource.id', async (t) => {
  const noId = consent();
  delete noId['id'];
  t.equal(mapConsent(noId, CONTEXT, 'new-1').consentId, keyOf('Consent/new-1'));
  t.equal(mapConsent(consent(), CONTEXT, 'other').consentId, keyOf('Consent/other'), 'the parameter wins');
  t.throws(() => mapConsent(noId, CONTEXT), TypeError, 'no id at all is a programming error');
  t.throws(() => mapConsent({ resourceType: 'Patient', id: 'x' }, CONTEXT), TypeError);
});

t.test('scope: patient-privacy enforced, research for HRESCH, treatment and adr stored only', async (t) => {
  const scope = (code: string, system = SCOPE_SYSTEM) => ({ scope: { coding: [{ system, code }] } });
  t.equal(mapConsent(consent(undefined, scope('patient-privacy')), CONTEXT).action, 'put');

  // research: the root governs purpose HRESCH (stated or not); another purpose is refused.
  const research = rulesOf(consent({ type: 'permit', actor: [actor('Organization/lab')], provision: [{ type: 'deny', class: [cls('Observation')] }] }, scope('research')));
  t.same(research, [rule(true, { actors: [keyOf('Organization/lab')], purposes: 1n << BigInt(HRESCH) }), rule(false, { classes: bit('Observation') })]);
  t.equal(rulesOf(consent({ type: 'deny', purpose: [purpose('HRESCH'), purpose('CLINTRCH')] }, scope('research')))[0]!.purposes, 1n << BigInt(HRESCH), 'HRESCH stated: HRESCH alone');
  refuses(t, consent({ type: 'permit', purpose: [purpose('TREAT')] }, scope('research')), 'business-rule', 'VLM_CONSENT_PURPOSE', 'Consent.provision.purpose');
  t.equal(mapConsent(consent(undefined, { ...scope('research'), status: 'inactive' }), CONTEXT).action, 'revoke', 'a research consent is revoked like any enforced one');

  // treatment and adr: validated and stored, never enforced.
  for (const code of ['treatment', 'adr']) {
    t.same(mapConsent(consent(undefined, scope(code)), CONTEXT), { action: 'none', consentId: keyOf('Consent/c1') }, `${code}: nothing on chain`);
    t.equal(mapConsent(consent(undefined, { ...scope(code), status: 'inactive' }), CONTEXT).action, 'none', `${code}: nothing to revoke`);
    t.equal(mapConsent(consent(undefined, { ...scope(code), patient: undefined }), CONTEXT).action, 'none', `${code}: the patient is optional`);
    refuses(t, consent(undefined, { ...scope(code), patient: { reference: 'Group/g1' } }), 'not-supported', 'VLM_CONSENT_PATIENT_REFERENCE', 'Consent.patient');
    refuses(t, consent(undefined, { ...scope(code), status: 'cancelled' }), 'business-rule', 'VLM_CONSENT_STATUS', 'Consent.status');
  }

  refuses(t, consent(undefined, scope('patient-privacy', 'http://example.org/scope')), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  refuses(t, consent(undefined, scope('privacy')), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  refuses(t, consent(undefined, { scope: { text: 'privacy' } }), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  refuses(t, consent(undefined, { scope: undefined }), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  refuses(t, consent(undefined, { status: 'draft', scope: { coding: [{ system: SCOPE_SYSTEM, code: 'other' }] } }), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  const ambiguous = { coding: [...SCOPE.coding, { system: SCOPE_SYSTEM, code: 'research' }] };
  refuses(t, consent(undefined, { scope: ambiguous }), 'not-supported', 'VLM_CONSENT_SCOPE', 'Consent.scope');
  const translated = { coding: [{ system: 'http://example.org/local', code: 'priv' }, ...SCOPE.coding] };
  t.equal(mapConsent(consent(undefined, { scope: translated }), CONTEXT).action, 'put', 'a translation beside it is fine');
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
  t.equal(mapConsent(consent(undefined, { patient: { reference: 'Patient/p1', type: 'Patient', display: 'x' } }), CONTEXT).action, 'put');
});

t.test('base policy: the root type, else policyRule (BASE_POLICIES), else a policy URI the operator maps', async (t) => {
  const expected: Record<string, 'permit' | 'deny' | 'emergency-only' | undefined> = {
    OPTIN: 'permit',
    OPTINR: 'permit',
    IMPLIED: 'permit',
    IMPLIEDD: 'permit',
    NOPP: 'permit',
    OPTOUT: 'deny',
    OPTOUTE: 'deny',
    NOCONSENT: 'deny',
    EMRGONLY: 'emergency-only',
    GRANTORCHOICE: undefined,
  };
  t.same({ ...BASE_POLICIES }, expected, 'the v3 ActCode consent directives');
  t.ok(Object.isFrozen(BASE_POLICIES));
  for (const [code, effect] of Object.entries(expected)) {
    if (effect === 'permit' || effect === 'deny') {
      t.same(rulesOf(consent({}, policyRule(code))), [rule(effect === 'permit')], `${code}: a root without type is a ${effect}`);
      t.same(rulesOf(consent(null, policyRule(code))), [rule(effect === 'permit')], `${code}: no provision at all: the base over everything`);
    }
  }
  // EMRGONLY: everything withheld but emergency treatment (a permit nested in the root, last).
  t.same(rulesOf(consent({}, policyRule('EMRGONLY'))), [rule(false), rule(true, { purposes: 1n << BigInt(ETREAT) })]);
  t.same(rulesOf(consent(null, policyRule('EMRGONLY'))), [rule(false), rule(true, { purposes: 1n << BigInt(ETREAT) })], 'without provision');
  t.same(
    rulesOf(consent({ actor: [actor('Organization/o1')], provision: [{ type: 'permit', class: [cls('Patient')] }] }, policyRule('EMRGONLY'))),
    [rule(false, { actors: [keyOf('Organization/o1')] }), rule(true, { classes: bit('Patient') }), rule(true, { purposes: 1n << BigInt(ETREAT) })],
    'after the stated nested provisions',
  );
  t.same(rulesOf(consent({ type: 'permit' }, policyRule('EMRGONLY'))), [rule(true)], 'a root type is honoured: no emergency rule added');
  const full = Array.from({ length: 31 }, () => ({ type: 'deny' }));
  refuses(t, consent({ provision: full }, policyRule('EMRGONLY')), 'business-rule', 'VLM_CONSENT_TOO_MANY_PROVISIONS', 'Consent.provision');

  // GRANTORCHOICE leaves it to the grantor: the root must say.
  refuses(t, consent({}, policyRule('GRANTORCHOICE')), 'business-rule', 'VLM_CONSENT_BASE_POLICY', 'Consent.policyRule');
  refuses(t, consent(null, policyRule('GRANTORCHOICE')), 'business-rule', 'VLM_CONSENT_BASE_POLICY', 'Consent.policyRule');
  t.same(rulesOf(consent({ type: 'deny' }, policyRule('GRANTORCHOICE'))), [rule(false)], 'with a root type');

  // The root type wins over the base policy (consent-example-notOrg: OPTIN, root deny).
  t.same(rulesOf(consent({ type: 'deny' }, policyRule('OPTIN'))), [rule(false)]);
  t.same(rulesOf(consent({ type: 'permit' }, policyRule('OPTOUT'))), [rule(true)]);

  // No base at all: refused, naming policyRule.
  refuses(t, consent({}), 'business-rule', 'VLM_CONSENT_BASE_POLICY', 'Consent.policyRule');
  refuses(t, consent(null), 'business-rule', 'VLM_CONSENT_BASE_POLICY', 'Consent.policyRule');
  refuses(t, consent({}, policyRule('OPTIN', 'http://example.org/codes')), 'business-rule', 'VLM_CONSENT_BASE_POLICY', 'Consent.policyRule');
  refuses(t, consent({}, policyRule('optin')), 'business-rule', 'VLM_CONSENT_BASE_POLICY', 'Consent.policyRule');
  refuses(t, consent({}, { policyRule: { text: 'opt in' } }), 'business-rule', 'VLM_CONSENT_BASE_POLICY', 'Consent.policyRule');
  // A translation beside the ActCode is fine; the first known code decides.
  const translated = { policyRule: { coding: [{ system: 'http://example.org/local', code: 'out' }, { system: ACT_CODE, code: 'OPTOUT' }] } };
  t.same(rulesOf(consent({}, translated)), [rule(false)]);
  const prototype = { policyRule: { coding: [{ system: ACT_CODE, code: 'toString' }] } };
  refuses(t, consent({}, prototype), 'business-rule', 'VLM_CONSENT_BASE_POLICY', 'Consent.policyRule');
});

t.test('operator policy URI table (VELLUM_CONSENT_POLICIES)', async (t) => {
  const policies = { 'https://health.example.ca/policy/implied-consent': 'deny', 'urn:oid:2.16.840.1.113883.3.1': 'permit' } as const;
  const context: MappingContext = { ...CONTEXT, policies };
  const policy = (...uris: string[]) => ({ policy: uris.map((uri) => ({ uri, authority: 'https://health.example.ca' })) });
  t.same(rulesOf(consent({}, policy('https://health.example.ca/policy/implied-consent')), context), [rule(false)], 'a jurisdiction’s opt-out policy');
  t.same(rulesOf(consent({}, policy('urn:oid:2.16.840.1.113883.3.1')), context), [rule(true)]);
  t.same(rulesOf(consent({}, policy('https://unknown.example/p', 'urn:oid:2.16.840.1.113883.3.1')), context), [rule(true)], 'the first URI the table knows');
  t.same(rulesOf(consent(null, policy('urn:oid:2.16.840.1.113883.3.1')), context), [rule(true)], 'no provision');
  refuses(t, consent({}, policy('https://unknown.example/p')), 'business-rule', 'VLM_CONSENT_BASE_POLICY', 'Consent.policyRule', context);
  refuses(t, consent({}, policy('urn:oid:2.16.840.1.113883.3.1')), 'business-rule', 'VLM_CONSENT_BASE_POLICY', 'Consent.policyRule', CONTEXT);
  t.same(rulesOf(consent({}, { ...policy('urn:oid:2.16.840.1.113883.3.1'), ...policyRule('OPTOUT') }), context), [rule(false)], 'policyRule before the table');
  // GRANTORCHOICE says the grantor decides: it is not overridden by a policy URI (the root must state a type).
  refuses(t, consent({}, { ...policy('urn:oid:2.16.840.1.113883.3.1'), ...policyRule('GRANTORCHOICE') }), 'business-rule', 'VLM_CONSENT_BASE_POLICY', 'Consent.policyRule', context);
  t.same(rulesOf(consent({}, { ...policy('urn:oid:2.16.840.1.113883.3.1'), ...policyRule('OPTINX') }), context), [rule(true)], 'a policyRule code not in the table falls to the URIs');
  t.same(rulesOf(consent({ type: 'deny' }, policy('urn:oid:2.16.840.1.113883.3.1')), context), [rule(false)], 'the root type wins');
  t.same(rulesOf(consent({}, { policy: [{ authority: 'x' }, { uri: 'urn:oid:2.16.840.1.113883.3.1' }] }), context), [rule(true)], 'a policy without uri is skipped');
});

t.test('nested provisions to any depth: pre-order, parent indexes, inherited type', async (t) => {
  const rules = rulesOf(
    consent(
      {
        provision: [
          { type: 'permit', purpose: [purpose('ETREAT')], provision: [{ class: [cls('Observation')], provision: [{ type: 'deny', actor: [actor('Practitioner/x')] }] }] },
          { type: 'deny', class: [cls('Condition')], provision: [{ type: 'permit', action: [action('access')] }] },
        ],
      },
      policyRule('OPTOUT'),
    ),
  );
  t.same(rules, [
    rule(false),
    rule(true, { parent: 0, purposes: 1n << BigInt(ETREAT) }),
    rule(true, { parent: 1, classes: bit('Observation') }),
    rule(false, { parent: 2, actors: [keyOf('Practitioner/x')] }),
    rule(false, { parent: 0, classes: bit('Condition') }),
    rule(true, { parent: 4, actions: 1 }),
  ], 'depth 3; a nested provision without type takes its parent’s (rule 2: permit)');

  t.same(rulesOf(consent({ provision: [{ provision: [{}] }] }, policyRule('OPTIN'))), [rule(true), rule(true), rule(true, { parent: 1 })], 'inherits the base through the root');
  t.same(rulesOf(consent({ type: 'deny', provision: [{}] }, policyRule('OPTIN'))), [rule(false), rule(false)], 'inherits the root’s stated type, not the base');
  t.same(rulesOf(consent({ type: 'permit', provision: { type: 'deny' } })), [rule(true), rule(false)], 'a single object is a list of one');

  // At most 32 provisions in all, wherever they are.
  const chain = (depth: number): Json => (depth === 0 ? { type: 'deny' } : { type: 'deny', provision: [chain(depth - 1)] });
  t.equal(rulesOf(consent({ type: 'permit', provision: [chain(30)] })).length, 32, 'a chain 31 deep');
  t.same(rulesOf(consent({ type: 'permit', provision: [chain(30)] }))[31], rule(false, { parent: 30 }));
  refuses(t, consent({ type: 'permit', provision: [chain(31)] }), 'business-rule', 'VLM_CONSENT_TOO_MANY_PROVISIONS', `Consent.provision${'.provision[0]'.repeat(32)}`);
  const wide = Array.from({ length: 31 }, () => ({ type: 'deny' }));
  t.equal(rulesOf(consent({ type: 'permit', provision: wide })).length, 32);
  refuses(t, consent({ type: 'permit', provision: [...wide, { type: 'deny' }] }), 'business-rule', 'VLM_CONSENT_TOO_MANY_PROVISIONS', 'Consent.provision.provision[31]');

  refuses(t, consent({ type: 'allow' }), 'not-supported', 'VLM_CONSENT_TYPE', 'Consent.provision.type');
  refuses(t, consent({ type: 'permit', provision: [{ type: 'deny', provision: [{ type: 'Deny' }] }] }), 'not-supported', 'VLM_CONSENT_TYPE', 'Consent.provision.provision[0].provision[0].type');
  refuses(t, consent({ type: 'permit', provision: ['deny'] }), 'not-supported', 'VLM_CONSENT_ELEMENT', 'Consent.provision.provision[0]');
  refuses(t, consent('permit' as unknown as Json), 'not-supported', 'VLM_CONSENT_ELEMENT', 'Consent.provision');
  t.same(rulesOf(consent({ type: 'permit', _type: { extension: [] } })), [rule(true)], 'a primitive’s extension element is no condition');
});

t.test('actor: recipients by key; CST (custodian) and AUT (author) as data conditions', async (t) => {
  const refs = ['Practitioner/pr1', 'PractitionerRole/r1', 'Organization/o1', 'RelatedPerson/rp1', 'Device/d-1.2', 'Patient/p2', 'CareTeam/t1'];
  const [recipients] = rulesOf(consent({ type: 'permit', actor: refs.map((r) => actor(r)) }));
  t.same(recipients!.actors, refs.map(keyOf), 'any relative reference may be a recipient');
  t.same(recipients!.tokens, []);

  const [data] = rulesOf(consent({ type: 'deny', actor: [actor('Organization/f001', 'CST'), actor('Practitioner/a1', 'AUT'), actor('Practitioner/pr1', 'IRCP')] }));
  t.same(data!.actors, [keyOf('Practitioner/pr1')], 'IRCP (and any other role) names a recipient');
  t.same(data!.tokens, [tokenOf('custodian', 'Organization/f001'), tokenOf('author', 'Practitioner/a1')]);

  // The role decides, by its ParticipationType code: the same reference can be both.
  const [both] = rulesOf(consent({ type: 'deny', actor: [actor('Organization/o1'), actor('Organization/o1', 'CST')] }));
  t.same(both!.actors, [keyOf('Organization/o1')]);
  t.same(both!.tokens, [tokenOf('custodian', 'Organization/o1')]);
  const [other] = rulesOf(consent({ type: 'deny', actor: [{ role: { coding: [{ system: 'http://example.org/roles', code: 'CST' }] }, reference: { reference: 'Organization/o1' } }] }));
  t.same(other!.actors, [keyOf('Organization/o1')], 'CST of another system is no custodian');
  const [noRole] = rulesOf(consent({ type: 'deny', actor: [{ reference: { reference: 'Practitioner/pr1' } }] }));
  t.same(noRole!.actors, [keyOf('Practitioner/pr1')], 'no role: a recipient');
  const twice = [actor('Practitioner/pr1'), { role: { text: 'author' }, reference: { reference: 'Practitioner/pr1', type: 'Practitioner' } }];
  t.same(rulesOf(consent({ type: 'deny', actor: twice }))[0]!.actors, [keyOf('Practitioner/pr1')], 'one reference, one actor');

  for (const reference of [
    { identifier: { system: 'urn:npi', value: '123' } },
    { reference: 'https://example.org/fhir/Practitioner/pr1' },
    { reference: '#pr1' },
    { reference: 'Practitioner/pr1/_history/1' },
    { display: 'Dr X' },
  ]) {
    refuses(t, consent({ type: 'permit', actor: [{ role: role('PRCP'), reference }] }), 'not-supported', 'VLM_CONSENT_ACTOR_REFERENCE', 'Consent.provision.actor[0].reference');
  }
  refuses(t, consent({ type: 'permit', actor: [{ role: role('CST') }] }), 'not-supported', 'VLM_CONSENT_ACTOR_REFERENCE', 'Consent.provision.actor[0].reference');
  refuses(
    t,
    consent({ type: 'permit', actor: [actor('Practitioner/pr1'), { role: role('PRCP'), reference: { reference: 'Practitioner/pr1', type: 'Organization' } }] }),
    'not-supported',
    'VLM_CONSENT_ACTOR_REFERENCE',
    'Consent.provision.actor[1].reference.type',
  );
  refuses(t, consent({ type: 'permit', actor: [{ ...actor('Device/d'), period: {} }] }), 'not-supported', 'VLM_CONSENT_ELEMENT', 'Consent.provision.actor[0].period');

  const nine = Array.from({ length: 9 }, (_, i) => actor(`Practitioner/p${i}`));
  refuses(t, consent({ type: 'deny', actor: nine }), 'business-rule', 'VLM_CONSENT_TOO_MANY_ACTORS', 'Consent.provision.actor');
  refuses(t, consent({ type: 'deny', provision: [{ type: 'deny', actor: nine }] }), 'business-rule', 'VLM_CONSENT_TOO_MANY_ACTORS', 'Consent.provision.provision[0].actor');
  const eightDistinct = [...nine.slice(0, 8), actor('Practitioner/p0')];
  t.equal(rulesOf(consent({ type: 'deny', actor: eightDistinct }))[0]!.actors.length, 8, 'the limit counts distinct actors');
  const custodians = Array.from({ length: 9 }, (_, i) => actor(`Organization/o${i}`, 'CST'));
  t.equal(rulesOf(consent({ type: 'deny', actor: custodians }))[0]!.tokens.length, 9, 'custodians are conditions, not recipients: not limited to 8');
});

t.test('action and purpose', async (t) => {
  const [r] = rulesOf(
    consent({
      type: 'permit',
      action: [action('access'), action('correct'), { coding: [{ system: 'http://example.org/local', code: 'read' }, { system: ACTION, code: 'use' }] }],
      purpose: [purpose('TREAT'), purpose('ETREAT'), purpose('HOUTCOMS')],
    }),
  );
  t.equal(r!.actions, 0b10101, 'access, use (beside a local translation), correct');
  t.equal(r!.purposes, 0b11n | (1n << 19n), 'several purposes: any of them');

  refuses(t, consent({ type: 'permit', action: [action('access'), action('read')] }), 'not-supported', 'VLM_CONSENT_ACTION', 'Consent.provision.action[1]');
  refuses(t, consent({ type: 'permit', action: [{ coding: [{ system: 'http://example.org/local', code: 'access' }] }] }), 'not-supported', 'VLM_CONSENT_ACTION', 'Consent.provision.action[0]');
  refuses(t, consent({ type: 'permit', action: [{ text: 'look at' }] }), 'not-supported', 'VLM_CONSENT_ACTION', 'Consent.provision.action[0]');
  refuses(t, consent({ type: 'permit', action: [{ coding: [{ system: ACTION, code: 'access' }, { system: ACTION, code: 'correct' }] }] }), 'not-supported', 'VLM_CONSENT_ACTION', 'Consent.provision.action[0]');

  refuses(t, consent({ type: 'permit', purpose: [purpose('TREAT'), purpose('HPRGRP')] }), 'not-supported', 'VLM_CONSENT_PURPOSE', 'Consent.provision.purpose[1]');
  refuses(t, consent({ type: 'permit', purpose: [{ system: ACT_CODE, code: 'TREAT' }] }), 'not-supported', 'VLM_CONSENT_PURPOSE', 'Consent.provision.purpose[0]');
  refuses(t, consent({ type: 'permit', purpose: [purpose('treat')] }), 'not-supported', 'VLM_CONSENT_PURPOSE', 'Consent.provision.purpose[0]');
  refuses(t, consent({ type: 'permit', provision: [{ type: 'deny', purpose: [{ code: 'TREAT' }] }] }), 'not-supported', 'VLM_CONSENT_PURPOSE', 'Consent.provision.provision[0].purpose[0]');
  t.equal(rulesOf(consent({ type: 'permit', purpose: [purpose('TREAT')] }))[0]!.purposes, 1n << BigInt(TREAT));
});

t.test('class: resource types as bits, profiles and content types as class tokens', async (t) => {
  const [r] = rulesOf(
    consent({
      type: 'permit',
      class: [
        cls('Observation'),
        cls('Condition'),
        cls('Observation'),
        { system: 'urn:ietf:bcp:13', code: 'Application/HL7-CDA+xml' },
        { code: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab|3.1.1' },
        { system: 'http://hl7.org/fhir/StructureDefinition', code: 'urn:oid:1.2.3' },
      ],
    }),
  );
  t.equal(r!.classes, bit('Observation') | bit('Condition'));
  t.same(r!.tokens, [
    tokenOf('class', 'mime|application/hl7-cda+xml'),
    tokenOf('class', 'profile|http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab'),
    tokenOf('class', 'profile|urn:oid:1.2.3'),
  ], 'content types lower-cased; a profile without its version');
  t.equal(rulesOf(consent({ type: 'permit', class: [cls('VisionPrescription')] }))[0]!.classes, 1n << 145n, 'the top bit');

  refuses(t, consent({ type: 'permit', class: [cls('Observations')] }), 'not-supported', 'VLM_CONSENT_CLASS', 'Consent.provision.class[0]');
  refuses(t, consent({ type: 'permit', class: [cls('Observation'), cls('SubscriptionStatus')] }), 'not-supported', 'VLM_CONSENT_CLASS', 'Consent.provision.class[1]');
  refuses(t, consent({ type: 'permit', class: [{ code: 'Observation' }] }), 'not-supported', 'VLM_CONSENT_CLASS', 'Consent.provision.class[0]');
  refuses(t, consent({ type: 'permit', class: [{ system: 'http://loinc.org', code: '11488-4' }] }), 'not-supported', 'VLM_CONSENT_CLASS', 'Consent.provision.class[0]');
  refuses(t, consent({ type: 'permit', class: [{ system: 'urn:ietf:bcp:13' }] }), 'not-supported', 'VLM_CONSENT_CLASS', 'Consent.provision.class[0]');
  refuses(t, consent({ type: 'permit', class: [{ system: 'urn:ietf:bcp:13', code: '' }] }), 'not-supported', 'VLM_CONSENT_CLASS', 'Consent.provision.class[0]');
});

t.test('code and securityLabel: keyed tokens of system|code', async (t) => {
  const [r] = rulesOf(
    consent({
      type: 'deny',
      code: [{ coding: [{ system: 'http://loinc.org', code: '34133-9' }, { system: 'http://snomed.info/sct', code: '371530004' }] }, { coding: [{ system: 'http://loinc.org', code: '18842-5' }] }],
      securityLabel: [{ system: CONFIDENTIALITY, code: 'R' }, { system: ACT_CODE, code: 'PSY' }],
    }),
  );
  t.same(r!.tokens, [
    tokenOf('code', 'http://loinc.org|34133-9'),
    tokenOf('code', 'http://snomed.info/sct|371530004'),
    tokenOf('code', 'http://loinc.org|18842-5'),
    tokenOf('label', `${CONFIDENTIALITY}|R`),
    tokenOf('label', `${ACT_CODE}|PSY`),
  ]);
  refuses(t, consent({ type: 'deny', code: [{ text: 'lab results' }] }), 'not-supported', 'VLM_CONSENT_CODE', 'Consent.provision.code[0]');
  refuses(t, consent({ type: 'deny', code: [{ coding: [{ system: 'http://loinc.org', code: '1-8' }] }, { coding: [{ system: 'http://loinc.org', code: '2-6' }, { code: '3-4' }] }] }), 'not-supported', 'VLM_CONSENT_CODE', 'Consent.provision.code[1].coding[1]');
  refuses(t, consent({ type: 'deny', code: [{ coding: [{ system: 'http://loinc.org' }] }] }), 'not-supported', 'VLM_CONSENT_CODE', 'Consent.provision.code[0].coding[0]');
  refuses(t, consent({ type: 'deny', securityLabel: [{ code: 'R' }] }), 'not-supported', 'VLM_CONSENT_LABEL', 'Consent.provision.securityLabel[0]');
  refuses(t, consent({ type: 'deny', provision: [{ type: 'permit', securityLabel: [{ system: ACT_CODE, code: 'PSY' }, { system: '', code: 'HIV' }] }] }), 'not-supported', 'VLM_CONSENT_LABEL', 'Consent.provision.provision[0].securityLabel[1]');
});

t.test('data: instance, related, dependents, authoredby', async (t) => {
  const data = (meaning: string, reference: string) => ({ meaning, reference: { reference } });
  const [r] = rulesOf(
    consent({
      type: 'deny',
      data: [data('instance', 'Observation/o1'), data('dependents', 'ServiceRequest/lab1'), data('authoredby', 'Practitioner/a1'), data('related', 'Task/t1')],
    }),
  );
  t.same(r!.tokens, [
    tokenOf('data', 'instance|Observation/o1'),
    tokenOf('data', 'dependents|ServiceRequest/lab1'),
    tokenOf('data', 'authoredby|Practitioner/a1'),
    tokenOf('data', 'related|Task/t1'),
  ], 'a resource the store does not hold relates to nothing but itself');

  // related: the resource and those it refers to, as the caller read them from the store.
  const related = new Map([['Task/t1', ['MedicationRequest/m1', 'Patient/p1']]]);
  const [withRelated] = rulesOf(consent({ type: 'deny', data: [data('related', 'Task/t1')] }), { ...CONTEXT, related });
  t.same(withRelated!.tokens, [tokenOf('data', 'related|Task/t1'), tokenOf('data', 'related|MedicationRequest/m1'), tokenOf('data', 'related|Patient/p1')]);
  const [instanceOnly] = rulesOf(consent({ type: 'deny', data: [data('instance', 'Task/t1')] }), { ...CONTEXT, related });
  t.same(instanceOnly!.tokens, [tokenOf('data', 'instance|Task/t1')], 'only `related` reads the references held');

  refuses(t, consent({ type: 'deny', data: [data('everything', 'Task/t1')] }), 'not-supported', 'VLM_CONSENT_DATA', 'Consent.provision.data[0].meaning');
  refuses(t, consent({ type: 'deny', data: [{ reference: { reference: 'Task/t1' } }] }), 'not-supported', 'VLM_CONSENT_DATA', 'Consent.provision.data[0].meaning');
  refuses(t, consent({ type: 'deny', data: [data('instance', 'Task/t1'), data('instance', 'http://x.org/fhir/Task/t1')] }), 'not-supported', 'VLM_CONSENT_DATA', 'Consent.provision.data[1].reference');
  refuses(t, consent({ type: 'deny', data: [{ meaning: 'instance', reference: { reference: 'Task/t1', type: 'Observation' } }] }), 'not-supported', 'VLM_CONSENT_DATA', 'Consent.provision.data[0].reference.type');
  refuses(t, consent({ type: 'deny', data: [{ ...data('instance', 'Task/t1'), period: {} }] }), 'not-supported', 'VLM_CONSENT_ELEMENT', 'Consent.provision.data[0].period');
  refuses(t, consent({ type: 'deny', data: ['Task/t1'] }), 'not-supported', 'VLM_CONSENT_ELEMENT', 'Consent.provision.data[0]');

  t.same(
    relatedDataReferences(consent({ type: 'deny', data: [data('related', 'Task/t1'), data('instance', 'Task/t2')], provision: [{ type: 'permit', provision: [{ type: 'deny', data: [data('related', 'Task/t3'), data('related', 'Task/t1')] }] }] })),
    ['Task/t1', 'Task/t3'],
    'relatedDataReferences: every related reference, at any depth, once',
  );
  t.same(relatedDataReferences(consent(null)), []);
  t.same(relatedDataReferences('nothing'), []);
});

t.test('at most 32 data conditions per provision', async (t) => {
  const labels = (n: number) => Array.from({ length: n }, (_, i) => ({ system: ACT_CODE, code: `L${i}` }));
  t.equal(rulesOf(consent({ type: 'deny', securityLabel: labels(32) }))[0]!.tokens.length, 32);
  t.equal(rulesOf(consent({ type: 'deny', securityLabel: [...labels(32), ...labels(1)] }))[0]!.tokens.length, 32, 'a repeated condition counts once');
  refuses(t, consent({ type: 'deny', securityLabel: labels(33) }), 'business-rule', 'VLM_CONSENT_TOO_MANY_CONDITIONS', 'Consent.provision');
  refuses(
    t,
    consent({ type: 'deny', provision: [{ type: 'permit', securityLabel: labels(20), code: labels(13).map((c) => ({ coding: [c] })) }] }),
    'business-rule',
    'VLM_CONSENT_TOO_MANY_CONDITIONS',
    'Consent.provision.provision[0]',
  );
});

t.test('period and dataPeriod: first and last second of each precision', async (t) => {
  for (const element of ['period', 'dataPeriod'] as const) {
    const bounds = (start?: string, end?: string) => {
      const [r] = rulesOf(consent({ type: 'permit', [element]: { ...(start ? { start } : {}), ...(end ? { end } : {}) } }));
      return element === 'period' ? [r!.start, r!.end] : [r!.dataStart, r!.dataEnd];
    };
    t.same(bounds('2020', '2020'), [secs(2020, 1, 1), secs(2020, 12, 31, 23, 59, 59)], `${element}: year`);
    t.same(bounds('2020-02', '2020-02'), [secs(2020, 2, 1), secs(2020, 2, 29, 23, 59, 59)], `${element}: month (leap year)`);
    t.same(bounds('2020-03-01', '2020-03-01'), [secs(2020, 3, 1), secs(2020, 3, 1, 23, 59, 59)], `${element}: date: a UTC day`);
    t.same(bounds('2016-06-23T17:02:33+10:00', '2016-06-23T17:32:33+10:00'), [secs(2016, 6, 23, 7, 2, 33), secs(2016, 6, 23, 7, 32, 33)], `${element}: dateTime with a zone`);
    t.same(bounds('2016-06-23T17:02:33-04:30', undefined), [secs(2016, 6, 23, 21, 32, 33), 0], `${element}: negative offset; no end`);
    t.same(bounds(undefined, '2020-01-01T00:00:00.999Z'), [0, secs(2020, 1, 1)], `${element}: a fraction stays in its second`);
    t.same(bounds('1964-01-01', '2016-01-01'), [0, secs(2016, 1, 1, 23, 59, 59)], `${element}: a start before 1970 is unbounded`);
    t.same(bounds('1970-01-01T00:00:00Z', '1970-01-01T00:00:01Z'), [0, 1]);

    const refusesPeriod = (p: Json, expression: string) => refuses(t, consent({ type: 'permit', [element]: p }), 'business-rule', 'VLM_CONSENT_PERIOD', expression);
    refusesPeriod({ end: '1969-12-31' }, `Consent.provision.${element}.end`);
    refusesPeriod({ end: '1970-01-01T00:00:00Z' }, `Consent.provision.${element}.end`);
    refusesPeriod({ start: '2020-13-01' }, `Consent.provision.${element}.start`);
    refusesPeriod({ start: '2020-01-01T10:00:00' }, `Consent.provision.${element}.start`);
    refusesPeriod({ end: 'soon' }, `Consent.provision.${element}.end`);
    refusesPeriod({ start: 20200101 }, `Consent.provision.${element}.start`);
    refusesPeriod({ start: '2020-01-02', end: '2020-01-01' }, `Consent.provision.${element}`);
    refusesPeriod({ start: '2020-01-01T12:00:00Z', end: '2020-01-01T11:59:59Z' }, `Consent.provision.${element}`);
    refuses(t, consent({ type: 'permit', provision: [{ type: 'deny', [element]: '2020' }] }), 'not-supported', 'VLM_CONSENT_ELEMENT', `Consent.provision.provision[0].${element}`);
  }
  const [r] = rulesOf(consent({ type: 'deny', period: { start: '2020' }, dataPeriod: { end: '2019' } }));
  t.same([r!.start, r!.end, r!.dataStart, r!.dataEnd], [secs(2020, 1, 1), 0, 0, secs(2019, 12, 31, 23, 59, 59)], 'independent of each other');
});

t.test('every provision condition at once, in a nested provision', async (t) => {
  const rules = rulesOf(
    consent(
      {
        provision: [
          {
            type: 'deny',
            actor: [actor('Practitioner/p1'), actor('Organization/o1', 'CST'), actor('Practitioner/a1', 'AUT')],
            action: [action('access')],
            purpose: [purpose('TREAT'), purpose('HPAYMT')],
            class: [cls('Observation'), { system: 'urn:ietf:bcp:13', code: 'application/pdf' }],
            code: [{ coding: [{ system: 'http://loinc.org', code: '8867-4' }] }],
            securityLabel: [{ system: ACT_CODE, code: 'HIV' }],
            period: { start: '2020-01-01', end: '2020-12-31' },
            dataPeriod: { start: '2019-01-01', end: '2019-12-31' },
            data: [{ meaning: 'dependents', reference: { reference: 'ServiceRequest/lab1' } }],
          },
        ],
      },
      policyRule('OPTIN'),
    ),
  );
  t.same(rules, [
    rule(true),
    rule(false, {
      actors: [keyOf('Practitioner/p1')],
      classes: bit('Observation'),
      actions: 1,
      purposes: 0b101n,
      start: secs(2020, 1, 1),
      end: secs(2020, 12, 31, 23, 59, 59),
      dataStart: secs(2019, 1, 1),
      dataEnd: secs(2019, 12, 31, 23, 59, 59),
      tokens: [
        tokenOf('custodian', 'Organization/o1'),
        tokenOf('author', 'Practitioner/a1'),
        tokenOf('class', 'mime|application/pdf'),
        tokenOf('code', 'http://loinc.org|8867-4'),
        tokenOf('label', `${ACT_CODE}|HIV`),
        tokenOf('data', 'dependents|ServiceRequest/lab1'),
      ],
    }),
  ]);
});

t.test('modifiers and unknown elements are refused, not dropped', async (t) => {
  refuses(t, consent({ type: 'permit', unknownElement: true }), 'not-supported', 'VLM_CONSENT_ELEMENT', 'Consent.provision.unknownElement');
  refuses(t, consent({ type: 'permit', provision: [{ type: 'deny' }, { type: 'deny', unknownElement: true }] }), 'not-supported', 'VLM_CONSENT_ELEMENT', 'Consent.provision.provision[1].unknownElement');
  const modifier = [{ url: 'http://example.org/not', valueBoolean: true }];
  refuses(t, consent(undefined, { modifierExtension: modifier }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.modifierExtension');
  refuses(t, consent(undefined, { modifierExtension: modifier, status: 'inactive' }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.modifierExtension');
  refuses(t, consent(undefined, { implicitRules: 'http://example.org/rules' }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.implicitRules');
  refuses(t, consent({ type: 'permit', modifierExtension: modifier }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.provision.modifierExtension');
  refuses(t, consent({ type: 'permit', provision: [{ type: 'deny', provision: [{ type: 'deny', modifierExtension: modifier }] }] }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.provision.provision[0].provision[0].modifierExtension');
  refuses(t, consent({ type: 'permit', actor: [{ ...actor('Device/d'), modifierExtension: modifier }] }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.provision.actor[0].modifierExtension');
  refuses(t, consent({ type: 'permit', data: [{ meaning: 'instance', reference: { reference: 'Task/t' }, modifierExtension: modifier }] }), 'not-supported', 'VLM_CONSENT_MODIFIER', 'Consent.provision.data[0].modifierExtension');
});

t.test('record-keeping elements do not change the terms', async (t) => {
  const provision = { type: 'permit', actor: [actor('Practitioner/p1')], id: 'root', extension: [{ url: 'http://example.org/note', valueString: 'x' }] };
  const plain = rulesOf(consent(provision));
  const decorated = rulesOf(
    consent(provision, {
      identifier: [{ system: 'urn:x', value: '1' }],
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }, { coding: [{ system: ACT_CODE, code: 'EMRGONLY' }] }],
      dateTime: '2020-01-01',
      performer: [{ reference: 'Patient/p1' }],
      organization: [{ reference: 'Organization/o1' }],
      sourceAttachment: { title: 'signed form' },
      // With a root type, the base policy does not change the root (nor what nests in it).
      policyRule: { coding: [{ system: ACT_CODE, code: 'OPTOUT' }] },
      policy: [{ uri: 'http://example.org/policy' }],
      verification: [{ verified: true, verifiedWith: { reference: 'Patient/p1' } }],
      extension: [{ url: 'http://example.org/e', valueString: 'x' }],
      text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">x</div>' },
      contained: [{ resourceType: 'Organization', id: 'o' }],
    }),
  );
  t.same(decorated, plain);
});

t.test('the input is not changed', async (t) => {
  const resource = consent({ provision: [{ data: [{ meaning: 'related', reference: { reference: 'Task/t1' } }] }] }, policyRule('EMRGONLY'));
  const before = structuredClone(resource);
  mapConsent(resource, { ...CONTEXT, related: new Map([['Task/t1', ['Patient/p1']]]) });
  t.same(resource, before);
});
