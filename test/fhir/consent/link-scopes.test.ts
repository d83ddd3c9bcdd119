/**
 * ConsentGate.linkScopes: the key scopes a consent-gated request may traverse through chains and
 * `_has` (src/fhir/access.ts `linkScopes`), decided from the mirrored state, and the service's
 * reverse map patient key → key scope that it needs. The chain is a fake fed with events.
 */
import t from 'tap';
import { ConsentService, type ConsentChain } from '../../../src/fhir/consent/service.ts';
import { PURPOSES, R4_RESOURCE_TYPES, type Rule } from '../../../src/fhir/consent/terms.ts';
import type { Principal } from '../../../src/fhir/auth/verify.ts';
import type { ConsentEvent } from '../../../src/chain/consent-registry.ts';

const bit = (type: string) => 1n << BigInt(R4_RESOURCE_TYPES.indexOf(type as (typeof R4_RESOURCE_TYPES)[number]));
const rule = (permit: boolean, fields: Partial<Omit<Rule, 'permit'>> = {}): Rule => ({
  parent: 0,
  permit,
  actors: [],
  classes: 0n,
  actions: 0,
  purposes: 0n,
  start: 0,
  end: 0,
  dataStart: 0,
  dataEnd: 0,
  tokens: [],
  ...fields,
});

function setup() {
  const events: ConsentEvent[] = [];
  const consents = new Map<string, { patient: string; rules: Rule[] }>();
  const chain = {
    head: async () => events.length - 1,
    events: async (from: number, to: number) => events.filter((e) => e.blockNumber >= from && e.blockNumber <= to),
    consentOf: async (id: string) => consents.get(id),
    recordEmergencyAccess: async () => undefined,
  } as unknown as ConsentChain;
  const service = new ConsentService({ chain, key: new Uint8Array(32).fill(7) });
  const at = () => ({ blockNumber: events.length, logIndex: 0, txHash: '0x' });
  return {
    service,
    approve(actor: string, emergency = false) {
      events.push({ type: 'ActorApproved', actor, emergency, ...at() });
    },
    put(id: string, patient: string, rules: Rule[]) {
      consents.set(id, { patient, rules });
      events.push({ type: 'ConsentPut', id, patient, bySignature: false, ...at() });
    },
    model(model: 'opt-in' | 'opt-out') {
      events.push({ type: 'ConsentModelSet', model, forced: false, ...at() });
    },
    gate(actor: string, purpose = 'TREAT') {
      return service.gate([actor], { purposeOfUse: purpose } as unknown as Principal, []);
    },
  };
}

t.test('linkScopes: the permitting patients, shared, and nothing else', async (t) => {
  const f = setup();
  const dr = f.service.keyOf('Practitioner/dr');
  f.approve(dr);
  // Scopes of a, b, c are known (as when their Consents are written through Vellum); d's is not.
  const [a, b, c] = ['scope-a', 'scope-b', 'scope-c'].map((s) => f.service.patientKeyOfScope(s, true));
  const d = f.service.patientKeyOfScope('scope-d');
  f.put('0x01', a!, [rule(true, { actors: [dr] })]);
  f.put('0x02', b!, [rule(true, { actors: [dr], classes: bit('Condition') })]);
  f.put('0x03', c!, [rule(true, { actors: [dr] }), rule(false, { classes: bit('Observation') })]);
  f.put('0x04', d, [rule(true, { actors: [dr] })]);
  await f.service.sync();
  t.ok(f.service.scopesIncomplete, "d's key scope is unknown");
  const gate = f.gate(dr);
  t.same(gate.linkScopes('Observation'), { only: ['shared', 'scope-a'] }, 'Observation: a (b is Conditions only, c excepts Observations, d unknown)');
  t.same(gate.linkScopes('Condition'), { only: ['shared', 'scope-a', 'scope-b', 'scope-c'] }, 'Condition');
  t.same(f.gate(f.service.keyOf('Practitioner/other')).linkScopes('Observation'), { only: ['shared'] }, 'another practitioner: none');

  f.service.rememberScopes(['scope-d']);
  t.notOk(f.service.scopesIncomplete, 'every scope known');
  t.same(f.gate(dr).linkScopes('Observation'), { only: ['shared', 'scope-a', 'scope-d'] }, 'd once its scope is learnt');
  t.equal(f.service.scopeOfPatient(d), 'scope-d');
});

t.test('linkScopes under break-glass: every patient but those denying emergencies', async (t) => {
  const f = setup();
  const er = f.service.keyOf('Practitioner/er');
  f.approve(er, true);
  const denying = f.service.patientKeyOfScope('scope-deny', true);
  const generic = f.service.patientKeyOfScope('scope-generic', true);
  f.put('0x11', denying, [rule(false, { purposes: 1n << BigInt(PURPOSES.indexOf('ETREAT')) })]);
  f.put('0x12', generic, [rule(false)]);
  await f.service.sync();
  const log: Parameters<ConsentService['gate']>[2] = [];
  const gate = f.service.gate([er], { purposeOfUse: 'ETREAT' } as unknown as Principal, log);
  t.same(gate.linkScopes('Observation'), { except: ['scope-deny'] }, 'a deny without ETREAT does not stop break-glass');
  t.ok(gate.breakGlass, 'labelled break-glass');
  t.same(log, [{ decision: 'break-glass', resourceType: 'Observation' }], 'logged once');
  t.same(f.gate(er, 'TREAT').linkScopes('Observation'), { only: ['shared'] }, 'without ETREAT: no consent');

  // A denying patient whose key scope is unknown cannot be excluded: undefined (the search is refused).
  const unknown = f.service.patientKeyOfScope('scope-unknown');
  f.put('0x13', unknown, [rule(false)]);
  f.put('0x14', f.service.keyOf('whatever'), [rule(false, { purposes: 1n << BigInt(PURPOSES.indexOf('ETREAT')) })]);
  await f.service.sync();
  t.equal(f.gate(er, 'ETREAT').linkScopes('Observation'), undefined, 'unknown denying patient: refused');
});

t.test('linkScopes: a patient whose decision needs each record’s facts is not opened wholesale', async (t) => {
  const f = setup();
  const dr = f.service.keyOf('Practitioner/dr');
  f.approve(dr);
  const [plain, labelled, nested] = ['scope-plain', 'scope-labelled', 'scope-nested'].map((s) => f.service.patientKeyOfScope(s, true));
  const psy = f.service.tokenOf('label', 'http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY');
  f.put('0x21', plain!, [rule(true, { actors: [dr] })]);
  // A permit of labelled data only: whether a record may be seen depends on its labels.
  f.put('0x22', labelled!, [rule(true, { actors: [dr], tokens: [psy] })]);
  // A permit with a nested deny of labelled data, three deep.
  f.put('0x23', nested!, [rule(true, { actors: [dr] }), rule(true, { parent: 0, classes: bit('Observation') }), rule(false, { parent: 1, tokens: [psy] })]);
  await f.service.sync();
  t.same(f.gate(dr).linkScopes('Observation'), { only: ['shared', 'scope-plain'] }, 'undetermined patients are left out (stricter)');
  t.same(f.gate(dr).linkScopes('Condition'), { only: ['shared', 'scope-plain', 'scope-nested'] }, 'the nested deny does not reach Conditions');
});

t.test('linkScopes in an opt-out jurisdiction: treatment opens every compartment but those withholding', async (t) => {
  const f = setup();
  const dr = f.service.keyOf('Practitioner/dr');
  f.approve(dr);
  f.model('opt-out');
  const [open, closed, other] = ['scope-open', 'scope-closed', 'scope-other'].map((s) => f.service.patientKeyOfScope(s, true));
  f.put('0x31', closed!, [rule(false, { actors: [dr], classes: bit('Observation') })]);
  f.put('0x32', other!, [rule(false, { purposes: 1n << BigInt(PURPOSES.indexOf('HPAYMT')) })]);
  f.put('0x33', open!, [rule(true, { actors: [dr], purposes: 1n << BigInt(PURPOSES.indexOf('HRESCH')) })]);
  await f.service.sync();
  t.equal(f.service.state.model, 'opt-out');
  const log: Parameters<ConsentService['gate']>[2] = [];
  const gate = f.service.gate([dr], { purposeOfUse: 'TREAT' } as unknown as Principal, log);
  t.same(gate.linkScopes('Observation'), { except: ['scope-closed'] }, 'implied for TREAT, except the patient who denies');
  t.notOk(gate.breakGlass, 'implied consent is not break-glass');
  t.same(log, [], 'nothing logged for the filter itself');
  t.same(f.gate(dr).linkScopes('Condition'), { except: [] });
  t.same(f.gate(dr, 'HPAYMT').linkScopes('Observation'), { only: ['shared'] }, 'payment still needs a permit');
  t.same(f.gate(dr, 'HRESCH').linkScopes('Observation'), { only: ['shared', 'scope-open'] }, 'research: only the permitting patient');
  t.same(f.gate(dr, 'TREAT HPAYMT').linkScopes('Condition'), { only: ['shared'] }, 'a purpose beyond treatment is not implied');
  t.same(f.gate(f.service.keyOf('Practitioner/unknown')).linkScopes('Observation'), { only: ['shared'] }, 'an actor not approved: nothing implied');
});

t.test('loadScopesOnce: one load shared by concurrent callers, retried after a failure', async (t) => {
  const f = setup();
  let calls = 0;
  await t.rejects(
    f.service.loadScopesOnce(async () => {
      calls++;
      throw new Error('index down');
    }),
  );
  const load = async () => {
    calls++;
    return ['scope-x'];
  };
  await Promise.all([f.service.loadScopesOnce(load), f.service.loadScopesOnce(load)]);
  await f.service.loadScopesOnce(load);
  t.equal(calls, 2, 'the failed load, then one');
  t.equal(f.service.scopeOfPatient(f.service.patientKeyOfScope('scope-x')), 'scope-x');
});
