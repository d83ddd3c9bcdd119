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
  permit,
  actors: [],
  classes: 0n,
  actions: 0,
  purposes: 0n,
  start: 0,
  end: 0,
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
