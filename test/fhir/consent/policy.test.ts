import t, { type Test } from 'tap';
import { ConsentState, ConsentStateError, decide, isPermitted, type ConsentRequest, type Decision } from '../../../src/fhir/consent/policy.ts';
import { ETREAT, type Rule } from '../../../src/fhir/consent/terms.ts';

const key = (n: number) => `0x${n.toString(16).padStart(64, '0')}`;
const P = key(0x9001); // patient
const Q = key(0x9002); // another patient
const A = key(0xa); // approved
const B = key(0xb); // approved, emergency
const C = key(0xc); // not approved
const D = key(0xd); // approved
const C1 = key(0xc001);
const C2 = key(0xc002);
const C3 = key(0xc003);
const TREAT = 0;
const OBS = 95;
const COND = 27;
const ACCESS = 0;
const CORRECT = 4;

function rule(permit: boolean, fields: Partial<Omit<Rule, 'permit'>> = {}): Rule {
  return { permit, actors: [], classes: 0n, actions: 0, purposes: 0n, start: 0, end: 0, ...fields };
}

function state(): ConsentState {
  const s = new ConsentState();
  s.approve(A, false);
  s.approve(B, true);
  s.approve(D, false);
  return s;
}

function req(fields: Partial<ConsentRequest> = {}): ConsentRequest {
  return { patient: P, actors: [A], resourceClass: OBS, action: ACCESS, purpose: TREAT, time: 1000, ...fields };
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

t.test('steps 4 and 5 without consents', async (t) => {
  const s = state();
  t.same(decide(s, req()), NO_CONSENT, 'approved actor, no consent');
  t.same(decide(s, req({ actors: [C] })), NOT_APPROVED);
  t.same(decide(s, req({ actors: [] })), NOT_APPROVED, 'no identity at all');
  t.same(decide(s, req({ actors: [C, D] })), NO_CONSENT, 'one approved identity is enough');
  s.revokeApproval(D);
  t.same(decide(s, req({ actors: [C, D] })), NOT_APPROVED, 'approval withdrawn');
});

t.test('a rule matches on time, class, action and purpose; zero means all', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true, { start: 100, end: 200, classes: 1n << BigInt(OBS), actions: 1 << ACCESS, purposes: 1n << BigInt(TREAT) })]);
  t.same(decide(s, req({ time: 100 })), PERMIT(C1), 'start is inclusive');
  t.same(decide(s, req({ time: 200 })), PERMIT(C1), 'end is inclusive');
  t.same(decide(s, req({ time: 99 })), NO_CONSENT);
  t.same(decide(s, req({ time: 201 })), NO_CONSENT);
  t.same(decide(s, req({ time: 150, resourceClass: COND })), NO_CONSENT, 'class bit');
  t.same(decide(s, req({ time: 150, action: CORRECT })), NO_CONSENT, 'action bit');
  t.same(decide(s, req({ time: 150, purpose: 2 })), NO_CONSENT, 'purpose bit');
  t.same(decide(s, req({ time: 150 })), PERMIT(C1));

  const open = state();
  open.put(C1, P, [rule(true)]);
  for (const r of [req({ time: 0 }), req({ time: 2 ** 40 }), req({ resourceClass: 255 }), req({ action: 200 }), req({ purpose: 255 })]) {
    t.same(decide(open, r), PERMIT(C1), 'unbounded and unrestricted');
  }

  const high = state();
  high.put(C1, P, [rule(true, { classes: 1n << 255n, actions: 1 << 15, purposes: (1n << 40n) | (1n << 63n) })]);
  t.same(decide(high, req({ resourceClass: 255, action: 15, purpose: 40 })), PERMIT(C1), 'top bits of each mask');
  t.same(decide(high, req({ resourceClass: 255, action: 15, purpose: 63 })), PERMIT(C1));
  t.same(decide(high, req({ resourceClass: 255, action: 47, purpose: 40 })), NO_CONSENT, 'action beyond uint16 (no shift wrap-around)');
  t.same(decide(high, req({ resourceClass: 255, action: 15, purpose: 72 })), NO_CONSENT, 'purpose beyond uint64 (no shift wrap-around)');
  t.same(decide(high, req({ resourceClass: 223, action: 15, purpose: 40 })), NO_CONSENT, 'class 223 ≠ 255 (same low 5 bits)');
});

t.test('actors: a deny names any request actor; a permit needs an approved, named one', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true, { actors: [A] })]);
  t.same(decide(s, req({ actors: [A] })), PERMIT(C1));
  t.same(decide(s, req({ actors: [D] })), NO_CONSENT, 'approved but not named');
  t.same(decide(s, req({ actors: [C, D, B, A] })), PERMIT(C1), 'the fourth identity');

  // Named and once approved, now not: another approved identity does not stand in for it.
  s.approve(C, false);
  s.put(C2, Q, [rule(true, { actors: [C] })]);
  s.revokeApproval(C);
  t.same(decide(s, req({ patient: Q, actors: [C, D] })), NO_CONSENT);
  t.same(decide(s, req({ patient: Q, actors: [C] })), NOT_APPROVED);

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

t.test('exceptions inherit the fields they leave out; permit never inherits', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true, { classes: 1n << BigInt(OBS), actors: [A], start: 100, end: 200 }), rule(false, { actions: 1 << CORRECT, start: 150 })]);
  t.same(decide(s, req({ action: CORRECT, time: 160 })), DENY(C1), 'exception: inherits class, actors, end');
  t.same(decide(s, req({ action: CORRECT, time: 120 })), PERMIT(C1), 'its own start: base applies before it');
  t.same(decide(s, req({ action: CORRECT, time: 201 })), NO_CONSENT, 'inherited end');
  t.same(decide(s, req({ action: CORRECT, time: 160, resourceClass: COND })), NO_CONSENT, 'inherited class');
  t.same(decide(s, req({ action: CORRECT, time: 160, actors: [D] })), NO_CONSENT, 'inherited actors');
  t.same(decide(s, req({ action: ACCESS, time: 160 })), PERMIT(C1), 'its own action mask');

  const flip = state();
  flip.put(C1, P, [rule(false), rule(true, { purposes: 1n << BigInt(TREAT) })]);
  t.same(decide(flip, req()), PERMIT(C1), 'permit is the exception’s own');
  t.same(decide(flip, req({ purpose: 2 })), DENY(C1));
  t.same(decide(flip, req({ actors: [C] })), DENY(C1), 'unapproved: the permit exception does not match, the base deny does');
});

t.test('the last matching exception decides, else the base, else nothing', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true), rule(false, { classes: 1n << BigInt(OBS) }), rule(true, { actors: [A], classes: 1n << BigInt(OBS) })]);
  t.same(decide(s, req({ actors: [A] })), PERMIT(C1), 'both exceptions match: the last');
  t.same(decide(s, req({ actors: [D] })), DENY(C1), 'only the first exception matches');
  t.same(decide(s, req({ actors: [D], resourceClass: COND })), PERMIT(C1), 'no exception matches: the base');
  s.put(C1, P, [rule(true), rule(true, { actors: [A], classes: 1n << BigInt(OBS) }), rule(false, { classes: 1n << BigInt(OBS) })]);
  t.same(decide(s, req({ actors: [A] })), DENY(C1), 'reversed order, reversed verdict');
  const none = state();
  none.put(C1, P, [rule(true, { classes: 1n << BigInt(COND) }), rule(false, { classes: 1n << BigInt(COND), purposes: 1n << 5n })]);
  t.same(decide(none, req()), NO_CONSENT, 'neither the exception nor the base');
});

t.test('combination: deny overrides; the first permit and the first deny in write order name the consent', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true)]);
  s.put(C2, P, [rule(true)]);
  t.same(decide(s, req()), PERMIT(C1), 'first written permit');
  s.put(C3, P, [rule(false, { classes: 1n << BigInt(OBS) })]);
  t.same(decide(s, req()), DENY(C3), 'a later deny overrides an earlier permit');
  t.same(decide(s, req({ resourceClass: COND })), PERMIT(C1));
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

t.test('break-glass', async (t) => {
  const s = state();
  const etreat = (actors: string[]) => req({ actors, purpose: ETREAT });
  t.same(decide(s, etreat([B])), BREAK_GLASS, 'no consent: step 3');
  t.same(decide(s, etreat([A])), NO_CONSENT, 'approved without the emergency flag');
  t.same(decide(s, req({ actors: [B] })), NO_CONSENT, 'emergency actor, not ETREAT');
  t.same(decide(s, etreat([C, B])), BREAK_GLASS, 'any identity of the request may carry the flag');

  s.put(C1, P, [rule(false)]);
  t.same(decide(s, etreat([B])), BREAK_GLASS, 'overrides a deny that does not name ETREAT');
  t.same(decide(s, etreat([A])), DENY(C1));
  s.put(C2, P, [rule(true, { actors: [B] })]);
  t.same(decide(s, etreat([B])), PERMIT(C2), 'a permit comes before break-glass');

  const explicit = state();
  explicit.put(C1, P, [rule(false, { purposes: (1n << BigInt(TREAT)) | (1n << BigInt(ETREAT)) })]);
  t.same(decide(explicit, etreat([B])), DENY(C1), 'an explicit ETREAT deny holds');

  const inherited = state();
  inherited.put(C1, P, [rule(true, { purposes: 1n << BigInt(ETREAT), actors: [A] }), rule(false, { actors: [B] })]);
  t.same(decide(inherited, etreat([B])), DENY(C1), 'the ETREAT bit inherited from the base counts as explicit');

  const other = state();
  other.put(C1, P, [rule(false), rule(false, { purposes: 1n << BigInt(TREAT) })]);
  t.same(decide(other, etreat([B])), BREAK_GLASS, 'the base deny (all purposes) matched, not the TREAT exception');
  t.ok(isPermitted(decide(other, etreat([B]))));
  t.notOk(isPermitted(DENY(C1)));
  t.notOk(isPermitted(NO_CONSENT));
  t.notOk(isPermitted(NOT_APPROVED));
  t.ok(isPermitted(PERMIT(C1)));
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
  throwsCode(t, () => s.put(C1, P, Array.from({ length: 10 }, () => rule(false))), 'ConsentTooManyRules');
  throwsCode(t, () => s.put(C1, P, [rule(false, { actors: Array.from({ length: 9 }, (_, i) => key(100 + i)) })]), 'ConsentTooManyActors');
  throwsCode(t, () => s.put(C1, P, [rule(true, { actors: [A, C] })]), 'ConsentActorNotApproved');
  throwsCode(t, () => s.put(C1, P, [rule(false, { actors: [C] }), rule(true)]), 'ConsentActorNotApproved');
  throwsCode(t, () => s.put(key(0), P, [rule(false)]), 'ConsentZeroKey');
  throwsCode(t, () => s.approve(key(0), false), 'ConsentZeroKey');
  t.equal(s.consent(C1), undefined, 'nothing was written');
  t.same(s.consentsOf(P), []);

  s.put(C1, P, [rule(false, { actors: [C] })]);
  s.put(C1, P, [rule(false, { actors: Array.from({ length: 8 }, (_, i) => key(100 + i)) })]);
  throwsCode(t, () => s.put(C1, Q, [rule(false)]), 'ConsentPatientMismatch');
  throwsCode(t, () => s.revoke(C2), 'ConsentUnknown');
  throwsCode(t, () => s.decide(req({ actors: [A, B, C, D, key(5)] })), 'ConsentTooManyRequestActors');
  t.throws(() => s.decide(req({ resourceClass: 256 })), TypeError);
  t.throws(() => s.decide(req({ time: -1 })), TypeError);

  s.revoke(C1);
  s.revoke(C1);
  t.equal(s.consent(C1)?.status, 'revoked', 'revoke is idempotent');
  s.revoke(C1, true);
  t.equal(s.consent(C1)?.lockedByPatient, true, 'a signed revocation locks even a revoked consent');
  throwsCode(t, () => s.put(C1, P, [rule(false)]), 'ConsentLockedByPatient');
  s.put(C1, P, [rule(true)], true);
  t.same(s.consent(C1), { patient: P, status: 'active', active: true, lockedByPatient: false, rules: [rule(true)] }, 'the patient’s grant lifts the lock');
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
  const rules = [rule(true, { actors: [A] })];
  s.put(C1, P, rules);
  rules[0]!.actors.push(D);
  rules[0]!.permit = false;
  t.same(decide(s, req({ actors: [D] })), NO_CONSENT, 'the input was copied');
  s.consent(C1)!.rules[0]!.actors.push(D);
  t.same(decide(s, req({ actors: [D] })), NO_CONSENT, 'the output is a copy');
  t.same(s.approvalOf(C), { approved: false, emergency: false });
  t.same(s.approvalOf(B), { approved: true, emergency: true });
});

/** docs/consent.md §The decision, written as plainly as possible, for a randomized comparison. */
function reference(s: { rules: Map<string, { patient: string; active: boolean; rules: Rule[] }>; order: string[]; approvals: Map<string, boolean> }, r: ConsentRequest): Decision {
  const approved = (a: string) => s.approvals.has(a);
  const emergency = r.actors.some((a) => s.approvals.get(a) === true);
  const breakGlass = r.purpose === ETREAT && emergency;
  const has = (mask: bigint, bit: number) => mask === 0n || ((mask >> BigInt(bit)) & 1n) === 1n;
  const matches = (x: Rule) =>
    (x.start === 0 || x.start <= r.time) &&
    (x.end === 0 || r.time <= x.end) &&
    has(x.classes, r.resourceClass) &&
    has(BigInt(x.actions), r.action) &&
    has(x.purposes, r.purpose) &&
    (x.permit
      ? r.actors.some((a) => approved(a) && (x.actors.length === 0 || x.actors.includes(a)))
      : x.actors.length === 0 || r.actors.some((a) => x.actors.includes(a)));
  let permit: string | undefined;
  for (const id of s.order) {
    const c = s.rules.get(id)!;
    if (!c.active || c.patient !== r.patient) continue;
    const [base, ...exceptions] = c.rules;
    const effective = exceptions.map((e) => ({
      permit: e.permit,
      actors: e.actors.length ? e.actors : base!.actors,
      classes: e.classes || base!.classes,
      actions: e.actions || base!.actions,
      purposes: e.purposes || base!.purposes,
      start: e.start || base!.start,
      end: e.end || base!.end,
    }));
    const verdict = [...effective].reverse().find(matches) ?? (matches(base!) ? base! : undefined);
    if (!verdict) continue;
    if (!verdict.permit) {
      const explicit = verdict.purposes !== 0n && ((verdict.purposes >> BigInt(ETREAT)) & 1n) === 1n;
      if (!breakGlass || explicit) return { decision: 'deny', consentId: id };
    } else permit ??= id;
  }
  if (permit) return { decision: 'permit', consentId: permit };
  if (breakGlass) return { decision: 'break-glass' };
  if (!r.actors.some(approved)) return { decision: 'actor-not-approved' };
  return { decision: 'no-consent' };
}

t.test('randomized: the same decisions as a plain reading of the design', async (t) => {
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const actors = [A, B, C, D, key(0xe)];
  const mask = (bits: number, width: number) => {
    let m = 0n;
    for (let i = 0; i < bits; i++) m |= 1n << BigInt(rand(width));
    return m;
  };
  const randomRule = (): Rule => ({
    permit: rand(2) === 0,
    actors: rand(2) ? [] : [actors[rand(5)]!, actors[rand(5)]!].filter((a, i, all) => all.indexOf(a) === i),
    classes: rand(2) ? 0n : mask(2, 4),
    actions: rand(2) ? 0 : Number(mask(2, 5)),
    purposes: rand(2) ? 0n : mask(2, 3),
    start: rand(3) ? 0 : rand(20),
    end: rand(3) ? 0 : 10 + rand(20),
  });
  let compared = 0;
  const kinds = new Set<string>();
  for (let round = 0; round < 300; round++) {
    const s = new ConsentState();
    const model = { rules: new Map<string, { patient: string; active: boolean; rules: Rule[] }>(), order: [] as string[], approvals: new Map<string, boolean>() };
    for (const a of actors) {
      if (rand(3) === 0) continue;
      const emergency = rand(3) === 0;
      s.approve(a, emergency);
      model.approvals.set(a, emergency);
    }
    for (let k = 0; k < 1 + rand(4); k++) {
      const id = key(0x5000 + rand(5));
      const rules = Array.from({ length: 1 + rand(3) }, randomRule);
      try {
        s.put(id, P, rules);
      } catch (err) {
        if (err instanceof ConsentStateError && err.code === 'ConsentActorNotApproved') continue;
        throw err;
      }
      if (!model.rules.has(id)) model.order.push(id);
      model.rules.set(id, { patient: P, active: true, rules });
      if (rand(5) === 0) {
        s.revoke(id);
        model.rules.get(id)!.active = false;
      }
    }
    for (let q = 0; q < 20; q++) {
      const r = req({ actors: actors.filter(() => rand(3) === 0).slice(0, 4), resourceClass: rand(4), action: rand(5), purpose: rand(3), time: rand(35) });
      const got = decide(s, r);
      const want = reference(model, r);
      kinds.add(want.decision);
      compared++;
      if (got.decision !== want.decision || got.consentId !== want.consentId) {
        t.same(got, want, `round ${round}, request ${JSON.stringify(r)}`);
        return;
      }
    }
  }
  t.equal(compared, 6000);
  t.same([...kinds].sort(), ['actor-not-approved', 'break-glass', 'deny', 'no-consent', 'permit'], 'every decision was exercised');
});

t.test('load: what consentOf reports, without the contract’s checks, in first-write order', async (t) => {
  const s = state();
  s.put(C1, P, [rule(true)]);
  // A permit naming an actor whose approval the replay has not reached: put would refuse it.
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
