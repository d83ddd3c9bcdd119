/**
 * The local consent policy: an in-memory mirror of the consent registry's state and the decision
 * its `decide` view makes (docs/consent.md §The decision), so a permitted request costs no RPC.
 * A differential test holds the two to the same answers; any change here is a change to the
 * contract's semantics and must be made in both.
 *
 * `ConsentState` rejects exactly what the contract reverts on, with the contract's custom error
 * name as `code`, and changes nothing when it does (a revert changes nothing either).
 */
import { ETREAT, MAX_ACTIVE_CONSENTS, MAX_EXCEPTIONS, MAX_REQUEST_ACTORS, MAX_RULE_ACTORS, type Rule } from './terms.ts';

/** The contract's `Decision`, by name. */
export type DecisionKind = 'permit' | 'deny' | 'break-glass' | 'actor-not-approved' | 'no-consent';

export interface Decision {
  readonly decision: DecisionKind;
  /** The deciding consent for `permit` and `deny`; absent otherwise (the contract's zero id). */
  readonly consentId?: string;
}

/** One access request, already keyed and indexed (terms.ts): as the contract's `decide` takes it. */
export interface ConsentRequest {
  patient: string;
  /** Every identity of the requester (≤ 4), as consent keys. */
  actors: readonly string[];
  resourceClass: number;
  action: number;
  purpose: number;
  /** Unix seconds. */
  time: number;
}

export interface Approval {
  approved: boolean;
  emergency: boolean;
}

export interface ConsentRecord {
  patient: string;
  status: 'active' | 'revoked';
  /** `status === 'active'`. */
  active: boolean;
  lockedByPatient: boolean;
  /** A copy: changing it changes nothing here. */
  rules: Rule[];
}

/** A contract revert, mirrored: `code` is the registry's custom error name (e.g. `ConsentUnknown`). */
export class ConsentStateError extends Error {
  override readonly name = 'ConsentStateError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Whether a decision lets the request through (the contract's `isPermitted`). */
export function isPermitted(result: Decision): boolean {
  return result.decision === 'permit' || result.decision === 'break-glass';
}

/**
 * Decide a request against the mirrored state (docs/consent.md §The decision), in
 * O(consents ever written for the patient). Raises ConsentStateError `ConsentTooManyRequestActors`.
 */
export function decide(state: ConsentState, request: ConsentRequest): Decision {
  return state.decide(request);
}

const ZERO_KEY = `0x${'0'.repeat(64)}`;
const UINT16 = (1n << 16n) - 1n;
const UINT64 = (1n << 64n) - 1n;
const UINT256 = (1n << 256n) - 1n;
const ETREAT_BIT = 1n << BigInt(ETREAT);

const BREAK_GLASS: Decision = Object.freeze({ decision: 'break-glass' });
const ACTOR_NOT_APPROVED: Decision = Object.freeze({ decision: 'actor-not-approved' });
const NO_CONSENT: Decision = Object.freeze({ decision: 'no-consent' });

/** A rule after inheritance from the base, in the shape the hot loop reads. */
interface Effective {
  permit: boolean;
  actors: readonly string[];
  /** 8 × 32 bits of the uint256 class mask, or null for "every class". */
  classes: Uint32Array | null;
  actions: number;
  purposesLo: number;
  purposesHi: number;
  /** purposes == 0: every purpose. */
  allPurposes: boolean;
  /** The (inherited) purposes mask is non-zero and names ETREAT: a deny that break-glass does not override. */
  deniesEmergency: boolean;
  start: number;
  end: number;
}

interface Entry {
  readonly id: string;
  readonly patient: string;
  status: 'active' | 'revoked';
  lockedByPatient: boolean;
  rules: readonly Readonly<Rule>[];
  /** `rules[1..]` then `rules[0]`, after inheritance: the order the verdict tries them. */
  order: Effective[];
  readonly permitResult: Decision;
  readonly denyResult: Decision;
}

/** The registry's state, mirrored: consents, their order per patient, and actor approvals. */
export class ConsentState {
  readonly #consents = new Map<string, Entry>();
  /** Every consent of a patient, active or not, in the order first written (the contract's `_consentIds`). */
  readonly #byPatient = new Map<string, Entry[]>();
  readonly #activeCount = new Map<string, number>();
  readonly #approvals = new Map<string, Approval>();

  /**
   * Create or replace consent `id` for `patient`, Active (`putConsent`; `grantBySig` when
   * `bySignature`, which also lifts the patient's lock). Raises ConsentZeroKey, ConsentNoRules,
   * ConsentTooManyRules, ConsentPatientMismatch, ConsentLockedByPatient, ConsentTooManyConsents,
   * ConsentTooManyActors, ConsentActorNotApproved.
   */
  put(id: string, patient: string, rules: readonly Rule[], bySignature = false): void {
    if (id === ZERO_KEY || patient === ZERO_KEY) throw new ConsentStateError('ConsentZeroKey', 'zero key');
    if (rules.length === 0) throw new ConsentStateError('ConsentNoRules', 'a consent needs a rule');
    if (rules.length > MAX_EXCEPTIONS + 1) throw new ConsentStateError('ConsentTooManyRules', `${rules.length} rules`);
    const existing = this.#consents.get(id);
    if (existing !== undefined && existing.patient !== patient) throw new ConsentStateError('ConsentPatientMismatch', 'consent of another patient');
    if (!bySignature && existing?.lockedByPatient) throw new ConsentStateError('ConsentLockedByPatient', 'revoked by the patient');
    const becomesActive = existing?.status !== 'active';
    if (becomesActive && (this.#activeCount.get(patient) ?? 0) >= MAX_ACTIVE_CONSENTS) {
      throw new ConsentStateError('ConsentTooManyConsents', `at most ${MAX_ACTIVE_CONSENTS} consents in force`);
    }
    rules.forEach((rule, i) => {
      checkRule(rule);
      if (rule.actors.length > MAX_RULE_ACTORS) throw new ConsentStateError('ConsentTooManyActors', `rule ${i}: ${rule.actors.length} actors`);
      if (!rule.permit) return;
      // An exception without actors of its own permits the base's.
      const named = i > 0 && rule.actors.length === 0 ? rules[0]!.actors : rule.actors;
      for (const actor of named) {
        if (this.#approvals.get(actor)?.approved !== true) throw new ConsentStateError('ConsentActorNotApproved', 'permit names an unapproved actor');
      }
    });

    this.#write(id, patient, rules, 'active', bySignature ? false : (existing?.lockedByPatient ?? false));
    if (becomesActive) this.#activeCount.set(patient, (this.#activeCount.get(patient) ?? 0) + 1);
  }

  /**
   * Set consent `id` to what the chain reports (`consentOf`), without the contract's checks: the
   * chain already accepted it. For replaying events, where `put` could refuse what the chain did
   * (approvals revoked since, a signed grant after a signed revocation, a put already revoked again
   * by the time it is read). Keeps the first-write order.
   */
  load(id: string, record: { patient: string; status: 'active' | 'revoked'; lockedByPatient: boolean; rules: readonly Rule[] }): void {
    const { patient, status, lockedByPatient, rules } = record;
    if (rules.length === 0 || rules.length > MAX_EXCEPTIONS + 1) throw new ConsentStateError('ConsentNoRules', 'a consent has 1 to 9 rules');
    rules.forEach(checkRule);
    const existing = this.#consents.get(id);
    if (existing !== undefined && existing.patient !== patient) throw new ConsentStateError('ConsentPatientMismatch', 'consent of another patient');
    const wasActive = existing?.status === 'active';
    this.#write(id, patient, rules, status, lockedByPatient);
    const delta = (status === 'active' ? 1 : 0) - (wasActive ? 1 : 0);
    if (delta !== 0) this.#activeCount.set(patient, (this.#activeCount.get(patient) ?? 0) + delta);
  }

  /** Store a consent (new ones join the end of the patient's list). The active count is the caller's. */
  #write(id: string, patient: string, rules: readonly Rule[], status: 'active' | 'revoked', lockedByPatient: boolean): void {
    const stored = rules.map((r) => Object.freeze({ ...r, actors: Object.freeze([...r.actors]) as string[] }));
    const existing = this.#consents.get(id);
    if (existing !== undefined) {
      existing.status = status;
      existing.lockedByPatient = lockedByPatient;
      existing.rules = stored;
      existing.order = compile(stored);
      return;
    }
    const entry: Entry = {
      id,
      patient,
      status,
      lockedByPatient,
      rules: stored,
      order: compile(stored),
      permitResult: Object.freeze({ decision: 'permit', consentId: id }),
      denyResult: Object.freeze({ decision: 'deny', consentId: id }),
    };
    this.#consents.set(id, entry);
    const list = this.#byPatient.get(patient);
    if (list === undefined) this.#byPatient.set(patient, [entry]);
    else list.push(entry);
  }

  /**
   * Revoke consent `id` (`revokeConsent`, idempotent; `revokeBySig` when `bySignature`, which
   * also locks it against the custodian). Raises ConsentUnknown.
   */
  revoke(id: string, bySignature = false): void {
    const entry = this.#consents.get(id);
    if (entry === undefined) throw new ConsentStateError('ConsentUnknown', 'unknown consent');
    if (entry.status === 'active') {
      entry.status = 'revoked';
      this.#activeCount.set(entry.patient, this.#activeCount.get(entry.patient)! - 1);
    }
    if (bySignature) entry.lockedByPatient = true;
  }

  /** Approve an actor, with or without the emergency (break-glass) flag (`approveActor`). Raises ConsentZeroKey. */
  approve(actor: string, emergency: boolean): void {
    if (actor === ZERO_KEY) throw new ConsentStateError('ConsentZeroKey', 'zero key');
    this.#approvals.set(actor, { approved: true, emergency });
  }

  /** Withdraw an actor's approval (`revokeApproval`). */
  revokeApproval(actor: string): void {
    this.#approvals.delete(actor);
  }

  approvalOf(actor: string): Approval {
    const a = this.#approvals.get(actor);
    return { approved: a?.approved ?? false, emergency: a?.emergency ?? false };
  }

  /** The patient's consents in force, in the order first written. */
  consentsOf(patient: string): string[] {
    return (this.#byPatient.get(patient) ?? []).filter((e) => e.status === 'active').map((e) => e.id);
  }

  /** A consent as the registry holds it; undefined when never written. */
  consent(id: string): ConsentRecord | undefined {
    const e = this.#consents.get(id);
    if (e === undefined) return undefined;
    const rules = e.rules.map((r) => ({ ...r, actors: [...r.actors] }));
    return { patient: e.patient, status: e.status, active: e.status === 'active', lockedByPatient: e.lockedByPatient, rules };
  }

  /** See `decide`. */
  decide(request: ConsentRequest): Decision {
    const { actors, resourceClass, action, purpose, time } = request;
    const n = actors.length;
    if (n > MAX_REQUEST_ACTORS) throw new ConsentStateError('ConsentTooManyRequestActors', `${n} request actors`);
    checkUint8(resourceClass);
    checkUint8(action);
    checkUint8(purpose);
    if (!Number.isSafeInteger(time) || time < 0) throw new TypeError('time must be unix seconds');

    let approvedMask = 0;
    let emergency = false;
    for (let j = 0; j < n; j++) {
      const a = this.#approvals.get(actors[j]!);
      if (a !== undefined && a.approved) {
        approvedMask |= 1 << j;
        if (a.emergency) emergency = true;
      }
    }
    const breakGlass = purpose === ETREAT && emergency;
    const classWord = resourceClass >>> 5;
    const classShift = resourceClass & 31;

    let permitting: Entry | undefined;
    const entries = this.#byPatient.get(request.patient);
    if (entries !== undefined) {
      for (let k = 0; k < entries.length; k++) {
        const entry = entries[k]!;
        if (entry.status !== 'active') continue;
        // The verdict: the last matching exception, else the base (`order` lists them so).
        const order = entry.order;
        let verdict: Effective | undefined;
        for (let i = 0; i < order.length; i++) {
          const r = order[i]!;
          if (r.start !== 0 && time < r.start) continue;
          if (r.end !== 0 && time > r.end) continue;
          if (r.classes !== null && ((r.classes[classWord]! >>> classShift) & 1) === 0) continue;
          if (r.actions !== 0 && (action >= 16 || ((r.actions >>> action) & 1) === 0)) continue;
          if (!r.allPurposes && !purposeBit(r, purpose)) continue;
          if (!actorMatches(r, actors, approvedMask)) continue;
          verdict = r;
          break;
        }
        if (verdict === undefined) continue;
        if (!verdict.permit) {
          // Break-glass overrides a deny unless the deny names ETREAT explicitly.
          if (!breakGlass || verdict.deniesEmergency) return entry.denyResult;
        } else if (permitting === undefined) {
          permitting = entry;
        }
      }
    }
    if (permitting !== undefined) return permitting.permitResult;
    if (breakGlass) return BREAK_GLASS;
    if (approvedMask === 0) return ACTOR_NOT_APPROVED;
    return NO_CONSENT;
  }
}

function purposeBit(r: Effective, purpose: number): boolean {
  if (purpose < 32) return ((r.purposesLo >>> purpose) & 1) === 1;
  if (purpose < 64) return ((r.purposesHi >>> (purpose - 32)) & 1) === 1;
  return false;
}

/** Deny: some request actor is named (or none is required). Permit: the same, among approved request actors. */
function actorMatches(r: Effective, actors: readonly string[], approvedMask: number): boolean {
  const eligible = r.permit ? approvedMask : 0xff;
  const named = r.actors;
  if (named.length === 0) return !r.permit || eligible !== 0;
  for (let j = 0; j < actors.length; j++) {
    if (((eligible >>> j) & 1) === 0) continue;
    const actor = actors[j]!;
    for (let i = 0; i < named.length; i++) if (named[i] === actor) return true;
  }
  return false;
}

/** Rules → the verdict's try order (exceptions last-first, then the base), with inheritance applied. */
function compile(rules: readonly Readonly<Rule>[]): Effective[] {
  const base = rules[0]!;
  const order: Effective[] = [];
  for (let i = rules.length - 1; i >= 1; i--) {
    const r = rules[i]!;
    order.push(
      effective(
        r.permit,
        r.actors.length !== 0 ? r.actors : base.actors,
        r.classes !== 0n ? r.classes : base.classes,
        r.actions !== 0 ? r.actions : base.actions,
        r.purposes !== 0n ? r.purposes : base.purposes,
        r.start !== 0 ? r.start : base.start,
        r.end !== 0 ? r.end : base.end,
      ),
    );
  }
  order.push(effective(base.permit, base.actors, base.classes, base.actions, base.purposes, base.start, base.end));
  return order;
}

function effective(
  permit: boolean,
  actors: readonly string[],
  classes: bigint,
  actions: number,
  purposes: bigint,
  start: number,
  end: number,
): Effective {
  let words: Uint32Array | null = null;
  if (classes !== 0n) {
    words = new Uint32Array(8);
    for (let w = 0; w < 8; w++) words[w] = Number((classes >> BigInt(32 * w)) & 0xffffffffn);
  }
  return {
    permit,
    actors,
    classes: words,
    actions,
    purposesLo: Number(purposes & 0xffffffffn),
    purposesHi: Number((purposes >> 32n) & 0xffffffffn),
    allPurposes: purposes === 0n,
    deniesEmergency: purposes !== 0n && (purposes & ETREAT_BIT) !== 0n,
    start,
    end,
  };
}

/** The ABI bounds of a Rule (uint256 / uint16 / uint64 / uint64 / uint64): what the contract could not even receive. */
function checkRule(r: Rule): void {
  const ok =
    typeof r.permit === 'boolean' &&
    Array.isArray(r.actors) &&
    r.classes >= 0n &&
    r.classes <= UINT256 &&
    Number.isInteger(r.actions) &&
    r.actions >= 0 &&
    BigInt(r.actions) <= UINT16 &&
    r.purposes >= 0n &&
    r.purposes <= UINT64 &&
    Number.isSafeInteger(r.start) &&
    r.start >= 0 &&
    Number.isSafeInteger(r.end) &&
    r.end >= 0;
  if (!ok) throw new TypeError('rule out of ABI bounds');
}

function checkUint8(v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 255) throw new TypeError('class, action and purpose are uint8');
}
