/**
 * The twelve official R4 Consent examples (../shared/corpora/r4-examples/Consent): each is accepted
 * by mapConsent as written, and — loaded into a ConsentState with the recipient actors it names
 * approved — decides concrete requests by those actors, on data of its own patient, as the
 * decision table (docs/consent.md) says.
 *
 * Vellum decides what a Consent encodes. Several examples' narratives describe the Canadian
 * opt-out scenarios ("withhold …") while their `policyRule` is OPTIN: their encoded base is a
 * permit, and that is what is decided (noted at each).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { CORPORA } from '../../helpers/corpora.ts';
import { mapConsent, type MappingContext } from '../../../src/fhir/consent/mapping.ts';
import { factsOf, references } from '../../../src/fhir/consent/facts.ts';
import { ConsentState, type ConsentRequest, type Decision } from '../../../src/fhir/consent/policy.ts';
import { ETREAT, actionIndex, classBit, consentKeyer, purposeMask, tokenKeyer, type ConsentAction, type Rule } from '../../../src/fhir/consent/terms.ts';

type Json = Record<string, unknown>;

const keyOf = consentKeyer(new Uint8Array(32).fill(1));
const tokenOf = tokenKeyer(keyOf);
const CONTEXT: MappingContext = { keyOf, tokenOf };
const DIR = path.join(CORPORA, 'r4-examples', 'Consent');
const secs = (y: number, mo: number, d: number, h = 0, mi = 0, s = 0) => Date.UTC(y, mo - 1, d, h, mi, s) / 1000;
/** A request time for examples without a period. */
const NOW = secs(2020, 6, 1);
const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const F001 = 'Organization/f001';
/** A practitioner of the R4 examples, the requester where an example names no recipient. */
const DR = 'Practitioner/f201';

function rule(permit: boolean, fields: Partial<Omit<Rule, 'permit'>> = {}): Rule {
  return { parent: 0, permit, actors: [], classes: 0n, actions: 0, purposes: 0n, start: 0, end: 0, dataStart: 0, dataEnd: 0, tokens: [], ...fields };
}
const custodian = (org: string) => tokenOf('custodian', org);
const label = (system: string, code: string) => tokenOf('label', `${system}|${code}`);

const PERMIT = (id: string): Decision => ({ decision: 'permit', consentId: keyOf(`Consent/${id}`) });
const DENY = (id: string): Decision => ({ decision: 'deny', consentId: keyOf(`Consent/${id}`) });
const NO_CONSENT: Decision = { decision: 'no-consent' };
const NOT_APPROVED: Decision = { decision: 'actor-not-approved' };
const BREAK_GLASS: Decision = { decision: 'break-glass' };
const IMPLIED: Decision = { decision: 'implied' };
const UNDETERMINED: Decision = { decision: 'undetermined' };

function examples(): Map<string, Json> {
  const found = new Map<string, Json>();
  for (const file of readdirSync(DIR)) {
    if (!file.endsWith('.json')) continue;
    const resource = JSON.parse(readFileSync(path.join(DIR, file), 'utf8')) as Json;
    if (resource['resourceType'] === 'Consent') found.set(resource['id'] as string, resource);
  }
  return found;
}
const EXAMPLES = examples();

/** A resource of `patient`: `source` becomes meta.source (how Vellum knows the custodian). */
function data(resourceType: string, id: string, patient: string, fields: Json = {}, source?: string): Json {
  const subject = resourceType === 'Task' ? 'for' : 'subject';
  return { resourceType, id, ...(source ? { meta: { source } } : {}), [subject]: { reference: patient }, ...fields };
}

/** One example, mapped and loaded into a state with `approve` approved (reference → emergency flag). */
class Loaded {
  readonly state = new ConsentState();
  readonly patientRef: string;
  readonly rules: Rule[];

  constructor(
    readonly t: Test,
    readonly id: string,
    approve: Record<string, boolean>,
    context: MappingContext = CONTEXT,
  ) {
    const resource = EXAMPLES.get(id)!;
    const before = structuredClone(resource);
    const mapping = mapConsent(resource, context);
    t.same(resource, before, 'mapping leaves the Consent as written');
    if (mapping.action !== 'put') throw new Error(`${id}: expected put, got ${mapping.action}`);
    t.equal(mapping.consentId, keyOf(`Consent/${id}`));
    t.equal(mapping.patientRef, (resource['patient'] as { reference: string }).reference);
    t.equal(mapping.patient, keyOf(mapping.patientRef));
    this.patientRef = mapping.patientRef;
    this.rules = mapping.rules;
    for (const [reference, emergency] of Object.entries(approve)) this.state.approve(keyOf(reference), emergency);
    this.state.put(mapping.consentId, mapping.patient, mapping.rules);
    t.same(this.state.consent(mapping.consentId)?.rules, mapping.rules, 'stored as mapped');
  }

  /**
   * The decision for `actors` doing `action` (default access) for `purposes` (default TREAT) at
   * `time` on `resource` (its facts given), or on a resource of `type` without its facts.
   */
  ask(q: { actors: string[]; time?: number; action?: ConsentAction; purposes?: string[]; resource?: Json; type?: string }): Decision {
    const type = (q.resource?.['resourceType'] as string | undefined) ?? q.type ?? 'Observation';
    const request: ConsentRequest = {
      patient: keyOf(this.patientRef),
      actors: q.actors.map(keyOf),
      resourceClass: classBit(type)!,
      action: actionIndex(q.action ?? 'access')!,
      purposes: purposeMask(q.purposes ?? ['TREAT']),
      time: q.time ?? NOW,
    };
    if (q.resource) {
      const facts = factsOf(q.resource, Date.UTC(2020, 0, 1), tokenOf);
      request.facts = facts.tokens;
      request.dataTime = facts.dataTime;
    }
    return this.state.decide(request);
  }
}

t.test('the twelve official examples are all here', async (t) => {
  t.same(
    [...EXAMPLES.keys()].sort(),
    [
      'consent-example-Emergency',
      'consent-example-Out',
      'consent-example-basic',
      'consent-example-grantor',
      'consent-example-notAuthor',
      'consent-example-notOrg',
      'consent-example-notThem',
      'consent-example-notThis',
      'consent-example-notTime',
      'consent-example-pkb',
      'consent-example-signature',
      'consent-example-smartonfhir',
    ],
    `in ${DIR}`,
  );
});

t.test('every example is accepted whatever its status; only active and proposed are read', async (t) => {
  for (const [id, resource] of EXAMPLES) {
    t.equal(mapConsent(resource, CONTEXT).action, 'put', `${id}: active → put`);
    const proposed = mapConsent({ ...resource, status: 'proposed' }, CONTEXT);
    t.equal(proposed.action, 'request', `${id}: proposed → an access request`);
    const active = mapConsent(resource, CONTEXT);
    if (proposed.action === 'request' && active.action === 'put') {
      t.same(proposed.rules, active.rules, `${id}: the request carries the rules an approval puts`);
      t.same(proposed.recipients, [...new Set(active.rules.flatMap((r) => r.actors))], `${id}: its recipients`);
    }
    t.same(mapConsent({ ...resource, status: 'inactive' }, CONTEXT), { action: 'revoke', consentId: keyOf(`Consent/${id}`) }, `${id}: inactive → revoke`);
    t.same(mapConsent({ ...resource, status: 'draft' }, CONTEXT), { action: 'none', consentId: keyOf(`Consent/${id}`) }, `${id}: draft → nothing`);
  }
});

t.test('consent-example-basic: OPTIN, a period → permit within it', async (t) => {
  const c = new Loaded(t, 'consent-example-basic', { [DR]: false });
  // 1964-01-01 (before 1970: open) to the last second of 2016-01-01.
  t.same(c.rules, [rule(true, { end: secs(2016, 1, 1, 23, 59, 59) })]);
  const obs = data('Observation', 'f001', 'Patient/f001', { code: { coding: [{ system: 'http://loinc.org', code: '15074-8' }] } });
  t.same(c.ask({ actors: [DR], time: secs(2015, 6, 1), resource: obs }), PERMIT('consent-example-basic'), 'inside the period');
  t.same(c.ask({ actors: [DR], time: secs(2015, 6, 1) }), PERMIT('consent-example-basic'), 'no data condition: no facts needed');
  t.same(c.ask({ actors: [DR], time: secs(2016, 1, 1, 23, 59, 59) }), PERMIT('consent-example-basic'), 'its last second');
  t.same(c.ask({ actors: [DR], time: secs(2016, 1, 2) }), NO_CONSENT, 'outside the period');
  t.same(c.ask({ actors: ['Practitioner/f202'], time: secs(2015, 6, 1) }), NOT_APPROVED, 'an actor not approved');
});

t.test('consent-example-notTime: OPTIN, a period → permit within it', async (t) => {
  // The narrative withholds data "from a timeframe"; the encoded policyRule is OPTIN: a permit in that period.
  const c = new Loaded(t, 'consent-example-notTime', { [DR]: false });
  t.same(c.rules, [rule(true, { start: secs(2015, 1, 1), end: secs(2015, 2, 1, 23, 59, 59) })]);
  t.same(c.ask({ actors: [DR], time: secs(2015, 1, 15) }), PERMIT('consent-example-notTime'), 'inside');
  t.same(c.ask({ actors: [DR], time: secs(2015, 1, 1) }), PERMIT('consent-example-notTime'), 'its first second');
  t.same(c.ask({ actors: [DR], time: secs(2014, 12, 31, 23, 59, 59) }), NO_CONSENT, 'before');
  t.same(c.ask({ actors: [DR], time: secs(2015, 2, 2) }), NO_CONSENT, 'after');
});

t.test('consent-example-notOrg: a root type deny (honoured) of access and correct to Organization/f001', async (t) => {
  const c = new Loaded(t, 'consent-example-notOrg', { [F001]: false, 'Organization/f002': false });
  t.same(c.rules, [rule(false, { actors: [keyOf(F001)], actions: 0b10001 })]);
  t.same(c.ask({ actors: [F001] }), DENY('consent-example-notOrg'), 'access');
  t.same(c.ask({ actors: [F001], action: 'correct', type: 'Condition' }), DENY('consent-example-notOrg'), 'correct');
  t.same(c.ask({ actors: [F001], action: 'collect' }), NO_CONSENT, 'another action: not withheld (opt-in: no permit either)');
  t.same(c.ask({ actors: ['Organization/f002'] }), NO_CONSENT, 'another organization');
  t.same(c.ask({ actors: ['Organization/f002', F001] }), DENY('consent-example-notOrg'), 'any identity of the requester');
  c.state.revokeApproval(keyOf(F001));
  t.same(c.ask({ actors: [F001] }), DENY('consent-example-notOrg'), 'a deny needs no approval');
});

t.test('consent-example-notThem: OPTIN → permit for Practitioner/f204', async (t) => {
  // The narrative says withhold from the nurse Practitioner/f204, but the encoded policyRule is
  // OPTIN and the root has no type: the root is a permit (R4: the base policy, qualified by the
  // root's conditions). Vellum decides what the Consent encodes.
  const c = new Loaded(t, 'consent-example-notThem', { 'Practitioner/f204': false, [DR]: false });
  t.same(c.rules, [rule(true, { actors: [keyOf('Practitioner/f204')], actions: 0b10001 })]);
  t.same(c.ask({ actors: ['Practitioner/f204'] }), PERMIT('consent-example-notThem'), 'access');
  t.same(c.ask({ actors: ['Practitioner/f204'], action: 'correct' }), PERMIT('consent-example-notThem'), 'correct');
  t.same(c.ask({ actors: ['Practitioner/f204'], action: 'disclose' }), NO_CONSENT, 'another action');
  t.same(c.ask({ actors: [DR] }), NO_CONSENT, 'another practitioner');
  c.state.revokeApproval(keyOf('Practitioner/f204'));
  t.same(c.ask({ actors: ['Practitioner/f204'] }), NOT_APPROVED, 'a permit applies to approved actors only');
});

t.test('consent-example-notAuthor: OPTIN for the data Organization/f001 holds (CST)', async (t) => {
  // Narrative: withhold records authored by Organization/f001. Encoded: OPTIN, actor with role CST
  // (custodian) — a data condition, not a recipient: a permit of f001's data to any approved actor.
  const c = new Loaded(t, 'consent-example-notAuthor', { [DR]: false });
  t.same(c.rules, [rule(true, { tokens: [custodian(F001)] })]);
  const held = data('Observation', 'o1', 'Patient/f001', {}, F001);
  const heldByUrl = data('Observation', 'o2', 'Patient/f001', {}, 'http://ghh.example.org/fhir/Organization/f001');
  const doc = data('DocumentReference', 'd1', 'Patient/f001', { custodian: { reference: F001 } });
  const elsewhere = data('Observation', 'o3', 'Patient/f001', {}, 'Organization/f002');
  t.same(c.ask({ actors: [DR], resource: held }), PERMIT('consent-example-notAuthor'), 'meta.source Organization/f001');
  t.same(c.ask({ actors: [DR], resource: heldByUrl }), PERMIT('consent-example-notAuthor'), 'meta.source ending in Organization/f001');
  t.same(c.ask({ actors: [DR], resource: doc }), PERMIT('consent-example-notAuthor'), 'a custodian element');
  t.same(c.ask({ actors: [DR], resource: elsewhere }), NO_CONSENT, 'data held elsewhere');
  t.same(c.ask({ actors: [DR], resource: data('Observation', 'o4', 'Patient/f001') }), NO_CONSENT, 'no custodian known');
  t.same(c.ask({ actors: [DR] }), UNDETERMINED, 'without the facts the custodian is unknown');
  t.same(c.ask({ actors: [F001], resource: held }), NOT_APPROVED, 'the custodian is no recipient');
});

t.test('consent-example-Out: OPTOUT for the data Organization/f001 holds (CST)', async (t) => {
  const c = new Loaded(t, 'consent-example-Out', { [DR]: false, 'Practitioner/f202': true });
  t.same(c.rules, [rule(false, { tokens: [custodian(F001)] })]);
  const held = data('Observation', 'o1', 'Patient/f001', {}, F001);
  const elsewhere = data('Observation', 'o2', 'Patient/f001', {}, 'Organization/f002');
  t.same(c.ask({ actors: [DR], resource: held }), DENY('consent-example-Out'), 'f001’s data');
  t.same(c.ask({ actors: [DR], resource: held, purposes: ['HPAYMT'] }), DENY('consent-example-Out'), 'for any purpose');
  t.same(c.ask({ actors: ['Practitioner/anyone'], resource: held }), DENY('consent-example-Out'), 'for anyone');
  t.same(c.ask({ actors: [DR], resource: elsewhere }), NO_CONSENT, 'other data: no verdict');
  t.same(c.ask({ actors: ['Practitioner/f202'], purposes: ['ETREAT'], resource: held }), BREAK_GLASS, 'break-glass lifts it (no purpose named)');
  t.same(c.ask({ actors: [DR] }), UNDETERMINED, 'without the facts');
  // In an opt-out jurisdiction (the Canadian scenario the example is written for): treatment is
  // implied for everything but what the patient withheld.
  c.state.setModel('opt-out');
  t.same(c.ask({ actors: [DR], resource: elsewhere }), IMPLIED, 'opt-out model: other data implied for TREAT');
  t.same(c.ask({ actors: [DR], resource: held }), DENY('consent-example-Out'), 'opt-out model: f001’s data still withheld');
  t.same(c.ask({ actors: [DR], resource: elsewhere, purposes: ['HRESCH'] }), NO_CONSENT, 'opt-out model: research is not implied');
});

t.test('consent-example-Emergency: OPTOUT of ETREAT for f001’s data, break-glass included', async (t) => {
  // Root: the OPTOUT base (deny), for ETREAT, of the data Organization/f001 holds; nested: a deny of
  // the same data. The rule path names ETREAT, so break-glass does not override the deny.
  const c = new Loaded(t, 'consent-example-Emergency', { [DR]: true });
  t.same(c.rules, [rule(false, { purposes: 1n << BigInt(ETREAT), tokens: [custodian(F001)] }), rule(false, { parent: 0, tokens: [custodian(F001)] })]);
  const held = data('Observation', 'o1', 'Patient/f001', {}, F001);
  const elsewhere = data('Observation', 'o2', 'Patient/f001', {}, 'Organization/f002');
  t.same(c.ask({ actors: [DR], purposes: ['ETREAT'], resource: held }), DENY('consent-example-Emergency'), 'ETREAT, emergency-approved actor: still denied');
  t.same(c.ask({ actors: [DR], purposes: ['TREAT', 'ETREAT'], resource: held }), DENY('consent-example-Emergency'), 'ETREAT among several purposes');
  t.same(c.ask({ actors: [DR], purposes: ['ETREAT'], resource: elsewhere }), BREAK_GLASS, 'other data: break-glass');
  t.same(c.ask({ actors: [DR], purposes: ['TREAT'], resource: held }), NO_CONSENT, 'TREAT: the root names ETREAT only');
  t.same(c.ask({ actors: [DR], purposes: ['ETREAT'] }), UNDETERMINED, 'without the facts');
});

t.test('consent-example-grantor: OPTOUT of access by Patient/example to f001’s data', async (t) => {
  // The narrative grants Patient/example read-only access, but the encoded policyRule is OPTOUT and
  // the root has no type: the root is a deny of access (for the data f001 holds) to Patient/example.
  const c = new Loaded(t, 'consent-example-grantor', { 'Patient/example': false, [DR]: false });
  t.same(c.rules, [rule(false, { actors: [keyOf('Patient/example')], actions: 1, tokens: [custodian(F001)] })]);
  const held = data('Observation', 'o1', 'Patient/f001', {}, F001);
  const elsewhere = data('Observation', 'o2', 'Patient/f001', {}, 'Organization/f002');
  const asked = (action: ConsentAction, resource: Json, actor = 'Patient/example') => c.ask({ actors: [actor], action, purposes: ['PATRQT'], resource });
  t.same(asked('access', held), DENY('consent-example-grantor'), 'access: the OPTOUT root');
  t.same(asked('correct', held), NO_CONSENT, 'correct: no verdict, and no permit');
  t.same(asked('access', elsewhere), NO_CONSENT, 'data held elsewhere');
  t.same(asked('access', held, DR), NO_CONSENT, 'another actor');
});

t.test('consent-example-pkb: OPTOUT of f001’s access by confidentiality and sensitivity labels', async (t) => {
  // A root (OPTOUT: deny) of access by Organization/f001 to normal data, and 11 nested provisions
  // without type (R4 requires one): each takes its parent's effect, deny.
  const c = new Loaded(t, 'consent-example-pkb', { [F001]: false, 'Organization/f002': false });
  const nested = ['PSY', 'SPI', 'N', 'PSY', 'SPI', 'SEX', 'N', 'PSY', 'SPI', 'SEX', 'N'];
  t.equal(c.rules.length, 12, 'the root and 11 nested provisions');
  const who = { actors: [keyOf(F001)], actions: 1 };
  t.same(c.rules, [
    rule(false, { ...who, tokens: [label(CONFIDENTIALITY, 'N')] }),
    ...nested.map((code) => rule(false, { ...who, parent: 0, tokens: [label(code === 'N' ? CONFIDENTIALITY : ACT_CODE, code)] })),
  ]);
  t.ok(c.rules.slice(1).every((r) => !r.permit && r.parent === 0), 'nested without type → the parent’s deny');
  const plain = data('Observation', 'o1', 'Patient/example');
  const psy = data('Observation', 'o2', 'Patient/example', { meta: { security: [{ system: ACT_CODE, code: 'PSY' }] } });
  const hiv = data('Observation', 'o3', 'Patient/example', { meta: { security: [{ system: CONFIDENTIALITY, code: 'N' }, { system: ACT_CODE, code: 'HIV' }] } });
  const restricted = data('Observation', 'o4', 'Patient/example', { meta: { security: [{ system: CONFIDENTIALITY, code: 'R' }, { system: ACT_CODE, code: 'PSY' }] } });
  t.same(c.ask({ actors: [F001], resource: plain }), DENY('consent-example-pkb'), 'unlabelled data is normal (N)');
  t.same(c.ask({ actors: [F001], resource: psy }), DENY('consent-example-pkb'), 'PSY (and N): the nested deny');
  t.same(c.ask({ actors: [F001], resource: hiv }), DENY('consent-example-pkb'), 'HIV: no nested provision, the root decides');
  t.same(c.ask({ actors: [F001], resource: restricted }), NO_CONSENT, 'restricted (R): outside the root');
  t.same(c.ask({ actors: ['Organization/f002'], resource: plain }), NO_CONSENT, 'another organization');
  t.same(c.ask({ actors: [F001], action: 'correct', resource: plain }), NO_CONSENT, 'another action');
  t.same(c.ask({ actors: [F001] }), UNDETERMINED, 'without the facts the labels are unknown');
});

t.test('consent-example-notThis: OPTIN for Task/example3 and what it refers to (related)', async (t) => {
  // The narrative withholds a lab order and its results; the encoded policyRule is OPTIN: a permit
  // of the related data. `related` is the Task and the resources it refers to, which the caller
  // reads from the store (MappingContext.related); without them, the Task alone.
  const task = JSON.parse(readFileSync(path.join(CORPORA, 'r4-examples', 'Task', 'Task-example3.json'), 'utf8')) as Json;
  const id = 'consent-example-notThis';
  const order = data('MedicationRequest', 'medrx002', 'Patient/f001', { status: 'active', intent: 'order' });
  const unrelated = data('Observation', 'f001', 'Patient/f001');
  const referring = data('Observation', 'o9', 'Patient/f001', { focus: [{ reference: 'Task/example3' }] });

  const alone = new Loaded(t, id, { [DR]: false });
  t.same(alone.rules, [rule(true, { tokens: [tokenOf('data', 'related|Task/example3')] })]);
  t.same(alone.ask({ actors: [DR], resource: task }), PERMIT(id), 'the Task itself');
  t.same(alone.ask({ actors: [DR], resource: order }), NO_CONSENT, 'its order: unknown without the store');
  t.same(alone.ask({ actors: [DR], resource: unrelated }), NO_CONSENT);
  t.same(alone.ask({ actors: [DR], type: 'Task' }), UNDETERMINED, 'without the facts');

  const held = [...references(task)].sort();
  t.same(held, ['MedicationRequest/medrx002', 'Patient/example', 'Patient/f001', 'Practitioner/example']);
  const withStore = new Loaded(t, id, { [DR]: false }, { ...CONTEXT, related: new Map([['Task/example3', held]]) });
  t.same(withStore.rules, [rule(true, { tokens: ['Task/example3', ...held].map((r) => tokenOf('data', `related|${r}`)) })]);
  t.same(withStore.ask({ actors: [DR], resource: task }), PERMIT(id), 'the Task');
  t.same(withStore.ask({ actors: [DR], resource: order }), PERMIT(id), 'the MedicationRequest it focuses on');
  t.same(withStore.ask({ actors: [DR], resource: data('Patient', 'f001', 'Patient/f001') }), PERMIT(id), 'the patient it is for (R4: instances it refers to)');
  t.same(withStore.ask({ actors: [DR], resource: unrelated }), NO_CONSENT, 'unrelated data');
  t.same(withStore.ask({ actors: [DR], resource: referring }), NO_CONSENT, 'what refers to the Task is `dependents`, not `related`');
});

t.test('consent-example-signature: OPTIN for Practitioner/13 in a period, a nested permit by author, content type and LOINC code', async (t) => {
  const id = 'consent-example-signature';
  const c = new Loaded(t, id, { 'Practitioner/13': false, 'Practitioner/xcda-author': false });
  t.same(c.rules, [
    rule(true, { actors: [keyOf('Practitioner/13')], start: secs(2015, 10, 10), end: secs(2016, 10, 10, 23, 59, 59) }),
    rule(true, {
      parent: 0,
      tokens: [
        tokenOf('author', 'Practitioner/xcda-author'),
        tokenOf('class', 'mime|application/hl7-cda+xml'),
        tokenOf('code', 'http://loinc.org|34133-9'),
        tokenOf('code', 'http://loinc.org|18842-5'),
      ],
    }),
  ], 'AUT is a data condition (author), not a recipient');
  const cda = data('DocumentReference', 'cda1', 'Patient/72', {
    type: { coding: [{ system: 'http://loinc.org', code: '34133-9' }] },
    author: [{ reference: 'Practitioner/xcda-author' }],
    content: [{ attachment: { contentType: 'application/hl7-cda+xml' } }],
    date: '2016-01-05T10:00:00Z',
  });
  const obs = data('Observation', 'o1', 'Patient/72', { code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] } });
  const inside = secs(2016, 1, 1);
  t.same(c.ask({ actors: ['Practitioner/13'], time: inside, resource: cda }), PERMIT(id), 'the summary document: the nested permit');
  t.same(c.ask({ actors: ['Practitioner/13'], time: inside, resource: obs }), PERMIT(id), 'other data: the root permit');
  t.same(c.ask({ actors: ['Practitioner/13'], time: secs(2016, 10, 11), resource: cda }), NO_CONSENT, 'after the period');
  t.same(c.ask({ actors: ['Practitioner/13'], time: secs(2015, 10, 9, 23, 59, 59), resource: cda }), NO_CONSENT, 'before the period');
  t.same(c.ask({ actors: ['Practitioner/xcda-author'], time: inside, resource: cda }), NO_CONSENT, 'the author is no recipient');
  // The nested rule needs the facts; without them the mirror waits for them, even though both
  // possible answers are permits here.
  t.same(c.ask({ actors: ['Practitioner/13'], time: inside }), UNDETERMINED);
});

t.test('consent-example-smartonfhir: OPTIN for 30 minutes, a nested permit of MedicationRequest access', async (t) => {
  // The root (OPTIN, no conditions but the period) permits everything in the window; the nested
  // permit of MedicationRequest access adds nothing to it.
  const id = 'consent-example-smartonfhir';
  const c = new Loaded(t, id, { 'RelatedPerson/peter': false });
  const start = secs(2016, 6, 23, 7, 2, 33);
  const end = secs(2016, 6, 23, 7, 32, 33);
  t.same(c.rules, [rule(true, { start, end }), rule(true, { parent: 0, actions: 1, classes: 1n << BigInt(classBit('MedicationRequest')!) })]);
  const peter = ['RelatedPerson/peter'];
  const rx = data('MedicationRequest', 'rx1', 'Patient/xcda', { status: 'active', intent: 'order' });
  t.same(c.ask({ actors: peter, time: start + 60, resource: rx }), PERMIT(id), 'MedicationRequest access in the window');
  t.same(c.ask({ actors: peter, time: end, type: 'MedicationRequest' }), PERMIT(id), 'its last second (17:32:33+10:00)');
  t.same(c.ask({ actors: peter, time: start + 60, type: 'Observation' }), PERMIT(id), 'the root permits other data too');
  t.same(c.ask({ actors: peter, time: start - 1, type: 'MedicationRequest' }), NO_CONSENT, 'before the window');
  t.same(c.ask({ actors: peter, time: end + 1, type: 'MedicationRequest' }), NO_CONSENT, 'after the window');
});
