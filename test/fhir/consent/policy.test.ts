/**
 * The local decision (src/fhir/consent/policy.ts), which mirrors the consent registry's `decide`
 * (contracts/IConsentRegistry.sol): rules nested to any depth, the most deeply nested matching rule
 * deciding with deny winning among equals, deny winning across consents, data conditions against
 * the facts of a resource, the opt-out model's implied treatment, and break-glass (which sets aside
 * a deny unless the denying rule's path names ETREAT, and then answers break-glass whatever
 * permits).
 */
import t, { type Test } from 'tap';
import { ConsentState, ConsentStateError, decide, isPermitted, type ConsentRequest, type Decision } from '../../../src/fhir/consent/policy.ts';
import { ETREAT, HRESCH, TOKEN_KIND, TREAT, type Rule, type TokenKind } from '../../../src/fhir/consent/terms.ts';

const key = (n: number) => `0x${n.toString(16).padStart(64, '0')}`;
/** A data token of `kind` (first byte) numbered n. */
const token = (kind: TokenKind, n: number) => `0x0${TOKEN_KIND[kind]}${n.toString(16).padStart(62, '0')}`;
const P = key(0x9001); // patient
const Q = key(0x9002); // another patient
const A = key(0xa); // approved
const B = key(0xb); // approved, emergency
const C = key(0xc); // not approved
const D = key(0xd); // approved
const C1 = key(0xc001);
const C2 = key(0xc002);
const C3 = key(0xc003);
const HPAYMT = 2;
const OBS = 95;
const COND = 27;
const ACCESS = 0;
const CORRECT = 4;
const bit = (i: number) => 1n << BigInt(i);

const CUST = token('custodian', 1);
const CUST2 = token('custodian', 2);
const AUTH = token('author', 1);
const PROFILE = token('class', 1);
const LOINC = token('code', 1);
const LOINC2 = token('code', 2);
const PSY = token('label', 1);
const NORMAL = token('label', 2);
const TASK = token('data', 1);

function rule(permit: boolean, fields: Partial<Omit<Rule, 'permit'>> = {}): Rule {
  return { parent: 0, permit, actors: [], classes: 0n, actions: 0, purposes: 0n, start: 0, end: 0, dataStart: 0, dataEnd: 0, tokens: [], ...fields };
}

function state(): ConsentState {
  const s = new ConsentState();
  s.approve(A, false);
  s.approve(B, true);
  s.approve(D, false);
  return s;
}

function req(fields: Partial<ConsentRequest> = {}): ConsentRequest {
  return { patient: P, actors: [A], resourceClass: OBS, action: ACCESS, purposes: 1 << TREAT, time: 1000, ...fields };
}

/** A request with these facts. */
function withFacts(facts: string[], fields: Partial<ConsentRequest> = {}): ConsentRequest {
  return req({ facts: new Set(facts), dataTime: 500, ...fields });
}

function throwsCode(t: Test, fn: () => unknown, code: string): void {
  try {
    fn();
    t.fail(`expected ${code}`);
  } catch (err) {
    t.ok(err instanceof ConsentStateError, `${code}: a ConsentStateError`);
    t.equal((err as ConsentStateError).code, code);
  }
}

const PERMIT = (id: string): Decision => ({ decision: 'permit', consentId: id });
const DENY = (id: string): Decision => ({ decision: 'deny', consentId: id });
const NO_CONSENT: Decision = { decision: 'no-consent' };
const NOT_APPROVED: Decision = { decision: 'actor-not-approved' };
const BREAK_GLASS: Decision = { decision: 'break-glass' };
const IMPLIED: Decision = { decision: 'implied' };
const UNDETERMINED: Decision = { decision: 'undetermined' };

t.test('without consents: no-consent, or actor-not-approved', async (t) => {
  const s = state();
  t.same(decide(s, req()), NO_CONSENT, 'approved actor, no consent');
  t.same(decide(s, req({ actors: [C] })), NOT_APPROVED);
  t.same(decide(s, req({ actors: [] })), NOT_APPROVED, 'no identity at all');
  t.same(decide(s, req({ actors: [C, D] })), NO_CONSENT, 'one approved identity is enough');
  s.revokeApproval(D);
  t.same(decide(s, req({ actors: [C, D] })), NOT_APPROVED, 'approval withdrawn');
  t.equal(s.model, 'opt-in', 'the default model');
  t.notOk(s.modelSet);
});

t.test('a rule matches on time, class, action and purposes; zero means all', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true, { start: 100, end: 200, classes: bit(OBS), actions: 1 << ACCESS, purposes: bit(TREAT) })]);
  t.same(decide(s, req({ time: 100 })), PERMIT(C1), 'start is inclusive');
  t.same(decide(s, req({ time: 200 })), PERMIT(C1), 'end is inclusive');
  t.same(decide(s, req({ time: 99 })), NO_CONSENT);
  t.same(decide(s, req({ time: 201 })), NO_CONSENT);
  t.same(decide(s, req({ time: 150, resourceClass: COND })), NO_CONSENT, 'class bit');
  t.same(decide(s, req({ time: 150, action: CORRECT })), NO_CONSENT, 'action bit');
  t.same(decide(s, req({ time: 150, purposes: 1 << HPAYMT })), NO_CONSENT, 'purpose bit');
  t.same(decide(s, req({ time: 150, purposes: 0 })), NO_CONSENT, 'a request naming no purpose matches no rule that names some');
  t.same(decide(s, req({ time: 150 })), PERMIT(C1));

  const open = state();
  open.put(C1, P, [rule(true)]);
  for (const r of [req({ time: 0 }), req({ time: 2 ** 40 }), req({ resourceClass: 255 }), req({ action: 200 }), req({ purposes: 0 }), req({ purposes: 0xffffffff })]) {
    t.same(decide(open, r), PERMIT(C1), 'unbounded and unrestricted');
  }

  const high = state();
  high.put(C1, P, [rule(true, { classes: 1n << 255n, actions: 1 << 15, purposes: bit(19) })]);
  t.same(decide(high, req({ resourceClass: 255, action: 15, purposes: 1 << 19 })), PERMIT(C1), 'top bits of each mask');
  t.same(decide(high, req({ resourceClass: 255, action: 47, purposes: 1 << 19 })), NO_CONSENT, 'action beyond uint16 (no shift wrap-around)');
  t.same(decide(high, req({ resourceClass: 223, action: 15, purposes: 1 << 19 })), NO_CONSENT, 'class 223 ≠ 255 (same low 5 bits)');
});

t.test('several purposes in one request: a rule naming any of them matches', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true, { purposes: bit(HPAYMT) })]);
  t.same(decide(s, req({ purposes: (1 << TREAT) | (1 << HPAYMT) })), PERMIT(C1), 'TREAT and HPAYMT: the HPAYMT permit applies');
  t.same(decide(s, req({ purposes: 1 << TREAT })), NO_CONSENT);
  s.put(C2, P, [rule(false, { purposes: bit(TREAT) | bit(HRESCH) })]);
  t.same(decide(s, req({ purposes: (1 << TREAT) | (1 << HPAYMT) })), DENY(C2), 'a deny of one of them denies the request');
  t.same(decide(s, req({ purposes: 1 << HPAYMT })), PERMIT(C1));
});

t.test('actors: a deny names any request actor; a permit needs an approved, named one', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true, { actors: [A] })]);
  t.same(decide(s, req({ actors: [A] })), PERMIT(C1));
  t.same(decide(s, req({ actors: [D] })), NO_CONSENT, 'approved but not named');
  t.same(decide(s, req({ actors: [C, D, B, A] })), PERMIT(C1), 'the fourth identity');

  // A permit may name an actor not approved (yet): put accepts it, decide does not permit it.
  s.put(C2, Q, [rule(true, { actors: [C] })]);
  t.same(decide(s, req({ patient: Q, actors: [C, D] })), NO_CONSENT, 'another approved identity does not stand in for it');
  t.same(decide(s, req({ patient: Q, actors: [C] })), NOT_APPROVED);
  s.approve(C, false);
  t.same(decide(s, req({ patient: Q, actors: [C] })), PERMIT(C2), 'once approved');
  s.revokeApproval(C);

  const deny = state();
  deny.put(C1, P, [rule(false, { actors: [C] })]);
  t.same(decide(deny, req({ actors: [C] })), DENY(C1), 'a deny needs no approval');
  t.same(decide(deny, req({ actors: [A, C] })), DENY(C1));
  t.same(decide(deny, req({ actors: [A] })), NO_CONSENT);
  const denyAll = state();
  denyAll.put(C1, P, [rule(false)]);
  t.same(decide(denyAll, req({ actors: [] })), DENY(C1), 'a deny without actors applies to anyone');
  const permitAll = state();
  permitAll.put(C1, P, [rule(true)]);
  t.same(decide(permitAll, req({ actors: [C] })), NOT_APPROVED, 'a permit without actors still needs an approved one');
});

t.test('nesting: a rule applies only where its parent applies; the most deeply nested decides', async (t) => {
  const s = state();
  // permit A Observations from 100 to 200 › deny correct from 150 (› permit correct by A at 170 exactly).
  s.put(C1, P, [
    rule(true, { classes: bit(OBS), actors: [A], start: 100, end: 200 }),
    rule(false, { parent: 0, actions: 1 << CORRECT, start: 150 }),
    rule(true, { parent: 1, start: 170, end: 170 }),
  ]);
  t.same(decide(s, req({ action: CORRECT, time: 160 })), DENY(C1), 'the nested deny, inside the root');
  t.same(decide(s, req({ action: CORRECT, time: 120 })), PERMIT(C1), 'before the nested start: the root');
  t.same(decide(s, req({ action: CORRECT, time: 170 })), PERMIT(C1), 'depth 2 overrides depth 1');
  t.same(decide(s, req({ action: CORRECT, time: 201 })), NO_CONSENT, 'outside the root: nothing nested applies either');
  t.same(decide(s, req({ action: CORRECT, time: 160, resourceClass: COND })), NO_CONSENT, 'the root’s class bounds its exceptions');
  t.same(decide(s, req({ action: CORRECT, time: 160, actors: [D] })), NO_CONSENT, 'the root’s actors bound its exceptions');
  t.same(decide(s, req({ action: ACCESS, time: 160 })), PERMIT(C1), 'the exception’s own action mask');

  const flip = state();
  flip.put(C1, P, [rule(false), rule(true, { purposes: bit(TREAT) })]);
  t.same(decide(flip, req()), PERMIT(C1), 'a nested permit within a deny');
  t.same(decide(flip, req({ purposes: 1 << HPAYMT })), DENY(C1));
  t.same(decide(flip, req({ actors: [C] })), DENY(C1), 'unapproved: the nested permit does not match, the root deny does');

  const none = state();
  none.put(C1, P, [rule(true, { classes: bit(COND) }), rule(false, { purposes: bit(5) })]);
  t.same(decide(none, req()), NO_CONSENT, 'the root does not match: no verdict, whatever is nested');
});

t.test('nesting to depth 3, in pre-order, with siblings under different parents', async (t) => {
  const s = state();
  // 0 permit all › 1 deny Observation › 2 permit TREAT › 3 deny correct ; 0 › 4 deny Condition
  s.put(C1, P, [
    rule(true),
    rule(false, { parent: 0, classes: bit(OBS) }),
    rule(true, { parent: 1, purposes: bit(TREAT) }),
    rule(false, { parent: 2, actions: 1 << CORRECT }),
    rule(false, { parent: 0, classes: bit(COND) }),
  ]);
  t.same(decide(s, req({ resourceClass: OBS, purposes: 1 << HPAYMT })), DENY(C1), 'depth 1');
  t.same(decide(s, req({ resourceClass: OBS })), PERMIT(C1), 'depth 2');
  t.same(decide(s, req({ resourceClass: OBS, action: CORRECT })), DENY(C1), 'depth 3');
  t.same(decide(s, req({ resourceClass: OBS, action: CORRECT, purposes: 1 << HPAYMT })), DENY(C1), 'depth 3 needs depth 2: depth 1 decides');
  t.same(decide(s, req({ resourceClass: COND, action: CORRECT })), DENY(C1), 'the other branch');
  t.same(decide(s, req({ resourceClass: 102 })), PERMIT(C1), 'the root');

  // A deeper rule under a parent that did not match never applies.
  const orphan = state();
  orphan.put(C1, P, [rule(true), rule(false, { classes: bit(COND) }), rule(false, { parent: 1 })]);
  t.same(decide(orphan, req()), PERMIT(C1), 'rule 2 is nested in rule 1, which does not match an Observation');
});

t.test('deny wins among equals (same depth), in any order', async (t) => {
  for (const order of [
    [rule(false, { classes: bit(OBS) }), rule(true, { actors: [A] })],
    [rule(true, { actors: [A] }), rule(false, { classes: bit(OBS) })],
  ]) {
    const s = state();
    s.put(C1, P, [rule(true), ...order]);
    t.same(decide(s, req({ actors: [A] })), DENY(C1), 'both siblings match: deny');
    t.same(decide(s, req({ actors: [A], resourceClass: COND })), PERMIT(C1), 'only the permit matches');
    t.same(decide(s, req({ actors: [D] })), DENY(C1), 'only the deny matches');
    t.same(decide(s, req({ actors: [D], resourceClass: COND })), PERMIT(C1), 'neither: the root');
  }
  // A deeper permit beats a shallower deny on another branch.
  const s = state();
  s.put(C1, P, [rule(true), rule(false, { classes: bit(OBS) }), rule(true, { classes: bit(OBS) }), rule(true, { parent: 2, actors: [A] })]);
  t.same(decide(s, req({ actors: [A] })), PERMIT(C1), 'depth 2 permit over the depth 1 deny');
  t.same(decide(s, req({ actors: [D] })), DENY(C1), 'at depth 1 the deny wins over its permit sibling');
});

t.test('across consents: deny wins; the first permit and the first deny in write order name the consent', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true)]);
  s.put(C2, P, [rule(true)]);
  t.same(decide(s, req()), PERMIT(C1), 'first written permit');
  s.put(C3, P, [rule(false, { classes: bit(OBS) })]);
  t.same(decide(s, req()), DENY(C3), 'a later deny overrides an earlier permit');
  t.same(decide(s, req({ resourceClass: COND })), PERMIT(C1));
  // A consent's nested permit does not lift another consent's deny: they are decided apart.
  s.put(C2, P, [rule(false), rule(true, { classes: bit(OBS) })]);
  t.same(decide(s, req()), DENY(C3), 'C2 permits Observations itself; C3 still denies them');
  s.put(C2, P, [rule(false)]);
  t.same(decide(s, req()), DENY(C2), 'the first denying consent in write order');
  s.revoke(C2);
  s.revoke(C3);
  s.revoke(C1);
  s.put(C2, P, [rule(true)]);
  s.put(C1, P, [rule(true)]);
  t.same(decide(s, req()), PERMIT(C1), 'order is first write, not latest activation');
  t.same(s.consentsOf(P), [C1, C2]);
  t.same(decide(s, req({ patient: Q })), NO_CONSENT, 'another patient');
});

t.test('data conditions: one token of each kind among the facts; class tokens or the class bit', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true, { tokens: [CUST, CUST2, LOINC, LOINC2] })]);
  t.same(decide(s, withFacts([CUST, LOINC])), PERMIT(C1));
  t.same(decide(s, withFacts([CUST2, LOINC2, PSY])), PERMIT(C1), 'any token of a kind; other facts do not matter');
  t.same(decide(s, withFacts([CUST, CUST2])), NO_CONSENT, 'no code among the facts');
  t.same(decide(s, withFacts([LOINC])), NO_CONSENT, 'no custodian among the facts');
  t.same(decide(s, withFacts([])), NO_CONSENT);

  const cls = state();
  cls.put(C1, P, [rule(true, { classes: bit(COND), tokens: [PROFILE] })]);
  t.same(decide(cls, withFacts([], { resourceClass: COND })), PERMIT(C1), 'the class bit');
  t.same(decide(cls, withFacts([PROFILE], { resourceClass: OBS })), PERMIT(C1), 'or a class token (a profile, a content type)');
  t.same(decide(cls, withFacts([], { resourceClass: OBS })), NO_CONSENT, 'neither');
  t.same(decide(cls, req({ resourceClass: COND })), UNDETERMINED, 'without facts even the class bit waits: the rule needs them');

  for (const [tokenOf, label] of [
    [AUTH, 'author'],
    [PSY, 'security label'],
    [TASK, 'data reference'],
  ] as const) {
    const k = state();
    k.put(C1, P, [rule(false, { tokens: [tokenOf] })]);
    t.same(decide(k, withFacts([tokenOf])), DENY(C1), label);
    t.same(decide(k, withFacts([CUST])), NO_CONSENT, `${label}: absent`);
  }
});

t.test('dataPeriod: the data’s time within [dataStart, dataEnd], inclusive', async (t) => {
  const s = state();
  s.put(C1, P, [rule(false, { dataStart: 100, dataEnd: 200 })]);
  t.same(decide(s, withFacts([], { dataTime: 100 })), DENY(C1));
  t.same(decide(s, withFacts([], { dataTime: 200 })), DENY(C1));
  t.same(decide(s, withFacts([], { dataTime: 99 })), NO_CONSENT);
  t.same(decide(s, withFacts([], { dataTime: 201 })), NO_CONSENT);
  t.same(decide(s, withFacts([], { dataTime: 0 })), NO_CONSENT, 'unknown data time: before any start');
  t.same(decide(s, req()), UNDETERMINED, 'a data period needs the facts');
  t.ok(s.needsFacts(P));
  t.notOk(s.needsFacts(Q));
});

t.test('undetermined: facts needed but not given', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true, { actors: [A] })]);
  t.notOk(s.needsFacts(P));
  s.put(C2, P, [rule(false, { tokens: [PSY] })]);
  t.ok(s.needsFacts(P));
  t.same(decide(s, req()), UNDETERMINED, 'C2 might deny: nothing is final');
  t.same(decide(s, withFacts([NORMAL])), PERMIT(C1), 'with the facts: C2 does not apply');
  t.same(decide(s, withFacts([PSY])), DENY(C2));
  t.notOk(isPermitted(UNDETERMINED), 'undetermined never lets a record through');

  // What needs no facts still rules a rule out, and a deny needing none is final.
  const cut = state();
  cut.put(C1, P, [rule(false, { classes: bit(COND), tokens: [PSY] })]);
  t.same(decide(cut, req()), NO_CONSENT, 'the class bit alone excludes the rule (no class token to check)');
  t.same(decide(cut, req({ resourceClass: COND })), UNDETERMINED);
  cut.put(C2, P, [rule(false, { actors: [A] })]);
  t.same(decide(cut, req({ resourceClass: COND })), DENY(C2), 'a deny decided without facts is a deny whatever they are');
  const actorOut = state();
  actorOut.put(C1, P, [rule(true, { actors: [D], tokens: [PSY] })]);
  t.same(decide(actorOut, req()), NO_CONSENT, 'the actor excludes it first');
  const nested = state();
  nested.put(C1, P, [rule(true), rule(false, { tokens: [PSY] })]);
  t.same(decide(nested, req()), UNDETERMINED, 'a nested data condition');
  t.same(decide(nested, req({ actors: [C] })), NOT_APPROVED, 'nothing applies to an actor not approved');
});

t.test('the opt-out model: approved actors are implied for TREAT and ETREAT only', async (t) => {
  const s = state();
  s.setModel('opt-out');
  t.equal(s.model, 'opt-out');
  t.ok(s.modelSet);
  t.same(decide(s, req()), IMPLIED, 'no consent: treatment is implied');
  t.same(decide(s, req({ purposes: 1 << ETREAT })), IMPLIED, 'emergency treatment too');
  t.same(decide(s, req({ purposes: (1 << TREAT) | (1 << ETREAT) })), IMPLIED);
  t.same(decide(s, req({ purposes: (1 << TREAT) | (1 << HPAYMT) })), NO_CONSENT, 'payment needs a permit, even named beside TREAT');
  t.same(decide(s, req({ purposes: 1 << HRESCH })), NO_CONSENT, 'research needs a permit');
  t.same(decide(s, req({ purposes: 0 })), NO_CONSENT, 'no purpose named: nothing implied');
  t.same(decide(s, req({ actors: [C] })), NOT_APPROVED, 'only approved actors');
  t.ok(isPermitted(IMPLIED));

  s.put(C1, P, [rule(false, { actors: [A], classes: bit(OBS) })]);
  t.same(decide(s, req()), DENY(C1), 'the patient’s deny withholds it');
  t.same(decide(s, req({ resourceClass: COND })), IMPLIED, 'outside the deny: implied');
  t.same(decide(s, req({ actors: [D] })), IMPLIED, 'another actor');
  s.put(C2, P, [rule(true, { purposes: bit(HPAYMT) })]);
  t.same(decide(s, req({ resourceClass: COND, purposes: 1 << HPAYMT })), PERMIT(C2), 'other purposes by permit, as in opt-in');
  t.same(decide(s, req({ resourceClass: COND })), IMPLIED);
  s.put(C3, P, [rule(true, { tokens: [PSY] })]);
  t.same(decide(s, req({ resourceClass: COND })), UNDETERMINED, 'a consent that needs facts decides before the model');

  // Break-glass comes after implied consent: an emergency actor reading for ETREAT is implied,
  // unless it sets a deny aside.
  const e = state();
  e.setModel('opt-out');
  t.same(decide(e, req({ actors: [B], purposes: 1 << ETREAT })), IMPLIED);
  e.put(C1, P, [rule(false, { actors: [B] })]);
  t.same(decide(e, req({ actors: [B], purposes: 1 << ETREAT })), BREAK_GLASS, 'a deny set aside: break-glass');
  t.same(decide(e, req({ actors: [B] })), DENY(C1));

  // The model is set once; another one needs force.
  const m = state();
  m.setModel('opt-in');
  m.setModel('opt-in');
  throwsCode(t, () => m.setModel('opt-out'), 'ConsentModelChange');
  t.equal(m.model, 'opt-in', 'unchanged by the refusal');
  m.setModel('opt-out', true);
  t.equal(m.model, 'opt-out');
  t.same(decide(m, req()), IMPLIED);
});

t.test('break-glass', async (t) => {
  const s = state();
  const etreat = (actors: string[], fields: Partial<ConsentRequest> = {}) => req({ actors, purposes: 1 << ETREAT, ...fields });
  t.same(decide(s, etreat([B])), BREAK_GLASS, 'no consent');
  t.same(decide(s, etreat([A])), NO_CONSENT, 'approved without the emergency flag');
  t.same(decide(s, req({ actors: [B] })), NO_CONSENT, 'emergency actor, not ETREAT');
  t.same(decide(s, etreat([C, B])), BREAK_GLASS, 'any identity of the request may carry the flag');
  t.same(decide(s, etreat([B], { purposes: (1 << TREAT) | (1 << ETREAT) })), BREAK_GLASS, 'ETREAT among several purposes');

  const permitted = state();
  permitted.put(C2, P, [rule(true, { actors: [B] })]);
  t.same(decide(permitted, etreat([B])), PERMIT(C2), 'no deny: a permit comes before break-glass');

  s.put(C1, P, [rule(false)]);
  t.same(decide(s, etreat([B])), BREAK_GLASS, 'sets aside a deny that names no purpose');
  t.same(decide(s, etreat([A])), DENY(C1));
  s.put(C2, P, [rule(true, { actors: [B] })]);
  t.same(decide(s, etreat([B])), BREAK_GLASS, 'a deny set aside makes it break-glass, whatever permits');
  t.same(decide(s, req({ actors: [B] })), DENY(C1), 'without ETREAT the deny holds');

  const treatOnly = state();
  treatOnly.put(C1, P, [rule(false, { purposes: bit(TREAT) })]);
  t.same(decide(treatOnly, etreat([B], { purposes: (1 << TREAT) | (1 << ETREAT) })), BREAK_GLASS, 'a deny naming TREAT but not ETREAT is set aside');
  t.same(decide(treatOnly, etreat([A], { purposes: (1 << TREAT) | (1 << ETREAT) })), DENY(C1), 'without the emergency flag it denies');

  const explicit = state();
  explicit.put(C1, P, [rule(false, { purposes: bit(TREAT) | bit(ETREAT) })]);
  t.same(decide(explicit, etreat([B])), DENY(C1), 'a deny naming ETREAT holds');

  const inherited = state();
  inherited.put(C1, P, [rule(false, { purposes: bit(ETREAT), actors: [A, B] }), rule(false, { actors: [B] })]);
  t.same(decide(inherited, etreat([B])), DENY(C1), 'a nested deny under a root naming ETREAT: the path names it');
  const deep = state();
  deep.put(C1, P, [rule(true, { purposes: bit(ETREAT) }), rule(true, { classes: bit(OBS) }), rule(false, { parent: 1, actors: [B] })]);
  t.same(decide(deep, etreat([B])), DENY(C1), 'named two levels up');

  const other = state();
  other.put(C1, P, [rule(false), rule(false, { purposes: bit(TREAT) })]);
  t.same(decide(other, etreat([B])), BREAK_GLASS, 'the root deny (all purposes) decided, not the TREAT exception');
  t.ok(isPermitted(decide(other, etreat([B]))));

  const equals = state();
  equals.put(C1, P, [rule(true), rule(false), rule(false, { purposes: bit(ETREAT) })]);
  t.same(decide(equals, etreat([B])), DENY(C1), 'among equal denies, one naming ETREAT is enough');
  const namedOther = state();
  namedOther.put(C1, P, [rule(true, { purposes: bit(TREAT) | bit(HPAYMT) }), rule(false, { actors: [B] })]);
  t.same(decide(namedOther, etreat([B], { purposes: (1 << TREAT) | (1 << ETREAT) })), BREAK_GLASS, 'a path naming purposes without ETREAT does not hold');

  t.notOk(isPermitted(DENY(C1)));
  t.notOk(isPermitted(NO_CONSENT));
  t.notOk(isPermitted(NOT_APPROVED));
  t.ok(isPermitted(PERMIT(C1)));
  t.ok(isPermitted(BREAK_GLASS));
});

t.test('revoked consents do not decide', async (t) => {
  const s = state();
  s.put(C1, P, [rule(false)]);
  s.put(C2, P, [rule(true)]);
  s.revoke(C1);
  t.same(decide(s, req()), PERMIT(C2));
  s.revoke(C2);
  t.same(decide(s, req()), NO_CONSENT);
  t.same(s.consentsOf(P), []);
  t.equal(s.consent(C1)?.status, 'revoked');
  t.equal(s.consent(C1)?.active, false);
});

t.test('ConsentState mirrors the contract’s reverts and changes nothing when it reverts', async (t) => {
  const s = state();
  throwsCode(t, () => s.put(C1, P, []), 'ConsentNoRules');
  throwsCode(t, () => s.put(C1, P, Array.from({ length: 33 }, () => rule(false))), 'ConsentTooManyRules');
  throwsCode(t, () => s.put(C1, P, [rule(false, { actors: Array.from({ length: 9 }, (_, i) => key(100 + i)) })]), 'ConsentTooManyActors');
  throwsCode(t, () => s.put(C1, P, [rule(false, { tokens: Array.from({ length: 33 }, (_, i) => token('code', i)) })]), 'ConsentTooManyTokens');
  throwsCode(t, () => s.put(C1, P, [rule(false), rule(false, { parent: 1 })]), 'ConsentBadRule');
  throwsCode(t, () => s.put(C1, P, [rule(false), rule(false, { parent: 2 }), rule(false)]), 'ConsentBadRule');
  throwsCode(t, () => s.put(C1, P, [rule(false, { tokens: [`0x07${'0'.repeat(62)}`] })]), 'ConsentBadRule');
  throwsCode(t, () => s.put(C1, P, [rule(false, { tokens: [`0x00${'1'.repeat(62)}`] })]), 'ConsentBadRule');
  throwsCode(t, () => s.put(C1, P, [rule(false, { tokens: ['0x0501'] })]), 'ConsentBadRule');
  throwsCode(t, () => s.put(key(0), P, [rule(false)]), 'ConsentZeroKey');
  throwsCode(t, () => s.put(C1, key(0), [rule(false)]), 'ConsentZeroKey');
  throwsCode(t, () => s.approve(key(0), false), 'ConsentZeroKey');
  t.throws(() => s.put(C1, P, [rule(false, { parent: 256 })]), TypeError, 'out of ABI bounds');
  t.throws(() => s.put(C1, P, [rule(false, { purposes: 1n << 64n })]), TypeError);
  t.throws(() => s.put(C1, P, [rule(false, { actions: 1 << 16 })]), TypeError);
  t.throws(() => s.put(C1, P, [rule(false, { dataEnd: -1 })]), TypeError);
  t.equal(s.consent(C1), undefined, 'nothing was written');
  t.same(s.consentsOf(P), []);

  s.put(C1, P, Array.from({ length: 32 }, (_, i) => rule(false, { parent: i === 0 ? 0 : i - 1 })), false);
  t.equal(s.consent(C1)?.rules.length, 32, '32 rules, a chain 31 deep');
  t.same(decide(s, req({ actors: [C] })), DENY(C1));
  s.put(C1, P, [rule(false, { actors: Array.from({ length: 8 }, (_, i) => key(100 + i)), tokens: Array.from({ length: 32 }, (_, i) => token('code', i)) })]);
  throwsCode(t, () => s.put(C1, Q, [rule(false)]), 'ConsentPatientMismatch');
  throwsCode(t, () => s.revoke(C2), 'ConsentUnknown');
  throwsCode(t, () => s.decide(req({ actors: [A, B, C, D, key(5)] })), 'ConsentTooManyRequestActors');
  t.throws(() => s.decide(req({ resourceClass: 256 })), TypeError);
  t.throws(() => s.decide(req({ action: -1 })), TypeError);
  t.throws(() => s.decide(req({ time: -1 })), TypeError);
  t.throws(() => s.decide(req({ purposes: 2 ** 32 })), TypeError);

  s.revoke(C1);
  s.revoke(C1);
  t.equal(s.consent(C1)?.status, 'revoked', 'revoke is idempotent');
  s.revoke(C1, true);
  t.equal(s.consent(C1)?.lockedByPatient, true, 'a signed revocation locks even a revoked consent');
  throwsCode(t, () => s.put(C1, P, [rule(false)]), 'ConsentLockedByPatient');
  s.put(C1, P, [rule(true)], true);
  t.same(s.consent(C1), { patient: P, status: 'active', active: true, lockedByPatient: false, rules: [rule(true)] }, 'the patient’s grant lifts the lock');
  // The root's parent is stored as 0 whatever was given.
  s.put(C2, P, [rule(true, { parent: 7 })]);
  t.equal(s.consent(C2)?.rules[0]?.parent, 0);
});

t.test('at most 64 consents in force per patient', async (t) => {
  const s = state();
  for (let i = 0; i < 64; i++) s.put(key(0x1000 + i), P, [rule(false)]);
  throwsCode(t, () => s.put(key(0x2000), P, [rule(false)]), 'ConsentTooManyConsents');
  s.put(key(0x1000), P, [rule(true)]);
  t.pass('replacing one in force is not a new one');
  s.put(key(0x2000), Q, [rule(false)]);
  s.revoke(key(0x1005));
  s.put(key(0x2001), P, [rule(false)]);
  throwsCode(t, () => s.put(key(0x1005), P, [rule(false)]), 'ConsentTooManyConsents');
  t.equal(s.consentsOf(P).length, 64);
});

t.test('state is not shared with callers', async (t) => {
  const s = state();
  const rules = [rule(true, { actors: [A], tokens: [PSY] })];
  s.put(C1, P, rules);
  rules[0]!.actors.push(D);
  rules[0]!.tokens.pop();
  rules[0]!.permit = false;
  t.same(decide(s, withFacts([], { actors: [D] })), NO_CONSENT, 'the input was copied');
  t.same(decide(s, withFacts([PSY])), PERMIT(C1));
  s.consent(C1)!.rules[0]!.actors.push(D);
  s.consent(C1)!.rules[0]!.tokens.pop();
  t.same(decide(s, withFacts([PSY], { actors: [D] })), NO_CONSENT, 'the output is a copy');
  t.same(decide(s, withFacts([], { actors: [A] })), NO_CONSENT);
  t.same(s.approvalOf(C), { approved: false, emergency: false });
  t.same(s.approvalOf(B), { approved: true, emergency: true });
});

interface ModelConsent {
  patient: string;
  active: boolean;
  rules: Rule[];
}

/**
 * IConsentRegistry.decide, written as plainly as possible from its documentation, for a
 * randomized comparison (facts always given).
 */
function reference(
  s: { consents: Map<string, ModelConsent>; order: string[]; approvals: Map<string, boolean>; model: 'opt-in' | 'opt-out' },
  r: ConsentRequest,
): Decision {
  const approved = (a: string) => s.approvals.has(a);
  const emergency = r.actors.some((a) => s.approvals.get(a) === true);
  const purposes = BigInt(r.purposes);
  const breakGlass = emergency && (purposes & bit(ETREAT)) !== 0n;
  const facts = r.facts ?? new Set<string>();
  const has = (mask: bigint, i: number) => mask === 0n || ((mask >> BigInt(i)) & 1n) === 1n;
  const kindOf = (tk: string) => Number.parseInt(tk.slice(2, 4), 16);
  const own = (x: Rule): boolean => {
    if (x.start !== 0 && r.time < x.start) return false;
    if (x.end !== 0 && r.time > x.end) return false;
    const dt = r.dataTime ?? 0;
    if (x.dataStart !== 0 && dt < x.dataStart) return false;
    if (x.dataEnd !== 0 && dt > x.dataEnd) return false;
    if (!has(BigInt(x.actions), r.action)) return false;
    if (x.purposes !== 0n && (x.purposes & purposes) === 0n) return false;
    const classTokens = x.tokens.filter((tk) => kindOf(tk) === TOKEN_KIND.class);
    if (x.classes !== 0n || classTokens.length > 0) {
      const bitSet = ((x.classes >> BigInt(r.resourceClass)) & 1n) === 1n;
      if (!bitSet && !classTokens.some((tk) => facts.has(tk))) return false;
    }
    for (const kind of new Set(x.tokens.map(kindOf))) {
      if (kind === TOKEN_KIND.class) continue;
      if (!x.tokens.filter((tk) => kindOf(tk) === kind).some((tk) => facts.has(tk))) return false;
    }
    return x.permit
      ? r.actors.some((a) => approved(a) && (x.actors.length === 0 || x.actors.includes(a)))
      : x.actors.length === 0 || r.actors.some((a) => x.actors.includes(a));
  };
  let permit: string | undefined;
  let setAside = false;
  for (const id of s.order) {
    const c = s.consents.get(id)!;
    if (!c.active || c.patient !== r.patient) continue;
    const parentOf = (i: number) => c.rules[i]!.parent;
    const matchesAt = (i: number): boolean => own(c.rules[i]!) && (i === 0 || matchesAt(parentOf(i)));
    const depthOf = (i: number): number => (i === 0 ? 0 : depthOf(parentOf(i)) + 1);
    const pathNames = (i: number): boolean => (c.rules[i]!.purposes & bit(ETREAT)) !== 0n || (i !== 0 && pathNames(parentOf(i)));
    const matched = c.rules.map((_, i) => i).filter(matchesAt);
    if (matched.length === 0) continue;
    const deepest = Math.max(...matched.map(depthOf));
    const deciding = matched.filter((i) => depthOf(i) === deepest);
    const denying = deciding.filter((i) => !c.rules[i]!.permit);
    if (denying.length > 0) {
      if (!breakGlass || denying.some(pathNames)) return { decision: 'deny', consentId: id };
      setAside = true;
    } else permit ??= id;
  }
  if (setAside) return { decision: 'break-glass' };
  if (permit) return { decision: 'permit', consentId: permit };
  const treatment = bit(TREAT) | bit(ETREAT);
  if (s.model === 'opt-out' && r.actors.some(approved) && purposes !== 0n && (purposes & ~treatment) === 0n) return { decision: 'implied' };
  if (breakGlass) return { decision: 'break-glass' };
  if (!r.actors.some(approved)) return { decision: 'actor-not-approved' };
  return { decision: 'no-consent' };
}

t.test('randomized: the same decisions as a plain reading of the contract’s documentation', async (t) => {
  // mulberry32: every bit of it is usable (an LCG's low bits cycle, which correlates choices).
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) % n;
  };
  const actors = [A, B, C, D, key(0xe)];
  const pool = [CUST, CUST2, AUTH, PROFILE, LOINC, LOINC2, PSY, NORMAL, TASK];
  const mask = (bits: number, width: number) => {
    let m = 0n;
    for (let i = 0; i < bits; i++) m |= 1n << BigInt(rand(width));
    return m;
  };
  const randomRule = (i: number): Rule => ({
    parent: i === 0 ? 0 : rand(i),
    permit: rand(2) === 0,
    actors: rand(2) ? [] : [actors[rand(5)]!, actors[rand(5)]!].filter((a, j, all) => all.indexOf(a) === j),
    classes: rand(2) ? 0n : mask(2, 4),
    actions: rand(2) ? 0 : Number(mask(2, 5)),
    purposes: rand(2) ? 0n : mask(2, 3),
    start: rand(3) ? 0 : rand(20),
    end: rand(3) ? 0 : 10 + rand(20),
    dataStart: rand(4) ? 0 : rand(20),
    dataEnd: rand(4) ? 0 : 10 + rand(20),
    tokens: rand(2) ? [] : [pool[rand(pool.length)]!, pool[rand(pool.length)]!].filter((tk, j, all) => all.indexOf(tk) === j),
  });
  let compared = 0;
  const kinds = new Set<string>();
  for (let round = 0; round < 400; round++) {
    const s = new ConsentState();
    const model = { consents: new Map<string, ModelConsent>(), order: [] as string[], approvals: new Map<string, boolean>(), model: 'opt-in' as 'opt-in' | 'opt-out' };
    if (rand(3) === 0) {
      s.setModel('opt-out');
      model.model = 'opt-out';
    }
    for (const a of actors) {
      if (rand(3) === 0) continue;
      const emergency = rand(3) === 0;
      s.approve(a, emergency);
      model.approvals.set(a, emergency);
    }
    for (let k = 0; k < 1 + rand(4); k++) {
      const id = key(0x5000 + rand(5));
      const count = 1 + rand(5);
      const rules = Array.from({ length: count }, (_, i) => randomRule(i));
      s.put(id, P, rules);
      if (!model.consents.has(id)) model.order.push(id);
      model.consents.set(id, { patient: P, active: true, rules });
      if (rand(5) === 0) {
        s.revoke(id);
        model.consents.get(id)!.active = false;
      }
    }
    for (let q = 0; q < 20; q++) {
      const r: ConsentRequest = {
        patient: P,
        actors: actors.filter(() => rand(3) === 0).slice(0, 4),
        resourceClass: rand(4),
        action: rand(5),
        purposes: Number(mask(1 + rand(2), 3)),
        time: rand(35),
        dataTime: rand(35),
        facts: new Set(pool.filter(() => rand(3) === 0)),
      };
      const got = decide(s, r);
      const want = reference(model, r);
      kinds.add(want.decision);
      compared++;
      if (got.decision !== want.decision || got.consentId !== want.consentId) {
        t.same(got, want, `round ${round}, request ${JSON.stringify({ ...r, facts: [...r.facts!] })}`);
        return;
      }
    }
  }
  t.equal(compared, 8000);
  t.same([...kinds].sort(), ['actor-not-approved', 'break-glass', 'deny', 'implied', 'no-consent', 'permit'], 'every decision was exercised');
});

t.test('load: what consentOf reports, without the contract’s checks, in first-write order', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true)]);
  s.load(C2, { patient: P, status: 'active', lockedByPatient: false, rules: [rule(true, { actors: [C] })] });
  t.same(s.consentsOf(P), [C1, C2]);
  s.load(C3, { patient: P, status: 'revoked', lockedByPatient: true, rules: [rule(false)] });
  t.same(s.consentsOf(P), [C1, C2], 'loaded revoked: not in force');
  t.equal(s.consent(C3)?.lockedByPatient, true);
  s.load(C3, { patient: P, status: 'active', lockedByPatient: false, rules: [rule(false)] });
  t.same(decide(s, req()), DENY(C3));
  s.load(C1, { patient: P, status: 'revoked', lockedByPatient: false, rules: [rule(true)] });
  t.same(s.consentsOf(P), [C2, C3]);
  throwsCode(t, () => s.load(C1, { patient: Q, status: 'active', lockedByPatient: false, rules: [rule(true)] }), 'ConsentPatientMismatch');
  throwsCode(t, () => s.load(key(0x77), { patient: P, status: 'active', lockedByPatient: false, rules: [] }), 'ConsentNoRules');
  // The active count follows loads: 62 more fit, the 63rd does not.
  for (let i = 0; i < 62; i++) s.put(key(0x3000 + i), P, [rule(false)]);
  throwsCode(t, () => s.put(key(0x4000), P, [rule(false)]), 'ConsentTooManyConsents');
});
