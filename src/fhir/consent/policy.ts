/**
 * The local consent policy: an in-memory mirror of the consent registry's state and the decision
 * its `decide` view makes (docs/consent.md §The decision), so a permitted request costs no RPC.
 * A property test feeds both the same random consents and requests and holds them to the same
 * answers; any change here is a change to the contract's semantics and must be made in both.
 *
 * `ConsentState` rejects exactly what the contract reverts on, with the contract's custom error
 * name as `code`, and changes nothing when it does (a revert changes nothing either).
 *
 * One thing the mirror does that the contract cannot: decide before the data's facts are known
 * (`facts` left out of the request). A rule whose data tokens would have to be checked then makes
 * the answer `undetermined`: the caller loads the resource and decides again with its facts
 * (facts.ts), or — for a filter over many records it cannot load — treats it as not permitted.
 */
import {
  ETREAT,
  MAX_ACTIVE_CONSENTS,
  MAX_REQUEST_ACTORS,
  MAX_RULE_ACTORS,
  MAX_RULE_TOKENS,
  MAX_RULES,
  TOKEN_KIND,
  TREAT,
  type ConsentModel,
  type Rule,
} from './terms.ts';

/** The contract's `Decision`, by name, and the mirror's `undetermined` (facts needed). */
export type DecisionKind = 'permit' | 'deny' | 'break-glass' | 'actor-not-approved' | 'no-consent' | 'implied' | 'undetermined';

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
  /** Bit i = PurposeOfUse i: the purposes the requester names (a rule's purposes match any of them). */
  purposes: number;
  /** Unix seconds. */
  time: number;
  /** When the data was recorded, unix seconds (0: unknown). */
  dataTime?: number;
  /** The data's tokens (facts.ts); undefined: not known yet (see the module comment). */
  facts?: ReadonlySet<string>;
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
  return result.decision === 'permit' || result.decision === 'break-glass' || result.decision === 'implied';
}

/**
 * Decide a request against the mirrored state (docs/consent.md §The decision), in
 * O(rules of the patient's consents). Raises ConsentStateError `ConsentTooManyRequestActors`.
 */
export function decide(state: ConsentState, request: ConsentRequest): Decision {
  return state.decide(request);
}

const ZERO_KEY = `0x${'0'.repeat(64)}`;
const UINT16 = (1n << 16n) - 1n;
const UINT64 = (1n << 64n) - 1n;
const UINT256 = (1n << 256n) - 1n;
const ETREAT_BIT = 1 << ETREAT;
const TREATMENT_BITS = (1 << TREAT) | (1 << ETREAT);
const KIND_CLASS = TOKEN_KIND.class;
const TOKEN = /^0x0[1-6][0-9a-f]{62}$/;

const BREAK_GLASS: Decision = Object.freeze({ decision: 'break-glass' });
const IMPLIED: Decision = Object.freeze({ decision: 'implied' });
const ACTOR_NOT_APPROVED: Decision = Object.freeze({ decision: 'actor-not-approved' });
const NO_CONSENT: Decision = Object.freeze({ decision: 'no-consent' });
const UNDETERMINED: Decision = Object.freeze({ decision: 'undetermined' });

/** A rule in the shape the hot loop reads. */
interface Compiled {
  parent: number;
  permit: boolean;
  actors: readonly string[];
  /** 8 × 32 bits of the uint256 class mask, or null when the mask is zero. */
  classes: Uint32Array | null;
  actions: number;
  /** The purposes mask's low 32 bits (every defined purpose), and whether it is zero. */
  purposesLo: number;
  allPurposes: boolean;
  start: number;
  end: number;
  dataStart: number;
  dataEnd: number;
  /** Data tokens grouped by kind (class tokens apart); empty when none. */
  classTokens: readonly string[];
  kinds: readonly (readonly string[])[];
  /** Whether matching needs the data's facts. */
  needsFacts: boolean;
}

interface Entry {
  readonly id: string;
  readonly patient: string;
  status: 'active' | 'revoked';
  lockedByPatient: boolean;
  rules: readonly Readonly<Rule>[];
  compiled: Compiled[];
  readonly permitResult: Decision;
  readonly denyResult: Decision;
}

/** A consent's verdict. */
const enum Verdict {
  None,
  Permit,
  Deny,
  /** A deny whose path names ETREAT among its purposes: break-glass does not override it. */
  DenyNamed,
  Undetermined,
}

/** The registry's state, mirrored: consents, their order per patient, actor approvals and the model. */
export class ConsentState {
  readonly #consents = new Map<string, Entry>();
  /** Every consent of a patient, active or not, in the order first written (the contract's `_consentAt`). */
  readonly #byPatient = new Map<string, Entry[]>();
  readonly #activeCount = new Map<string, number>();
  readonly #approvals = new Map<string, Approval>();
  #model: ConsentModel = 'opt-in';
  #modelSet = false;
  /** Scratch space of `#verdict` (no allocation per decision). */
  readonly #depth = new Uint8Array(MAX_RULES);

  /** The consent model `decide` applies when no consent decides (`setModel`). */
  get model(): ConsentModel {
    return this.#model;
  }

  get modelSet(): boolean {
    return this.#modelSet;
  }

  /** `setModel`: the first call sets it; another model later needs `force`. Raises ConsentModelChange. */
  setModel(model: ConsentModel, force = false): void {
    if (this.#modelSet && this.#model !== model && !force) throw new ConsentStateError('ConsentModelChange', 'the model is already set');
    this.#model = model;
    this.#modelSet = true;
  }

  /**
   * Create or replace consent `id` for `patient`, Active (`putConsent`; `grantBySig` when
   * `bySignature`, which also lifts the patient's lock). Raises ConsentZeroKey, ConsentNoRules,
   * ConsentTooManyRules, ConsentTooManyActors, ConsentTooManyTokens, ConsentBadRule,
   * ConsentPatientMismatch, ConsentLockedByPatient, ConsentTooManyConsents.
   */
  put(id: string, patient: string, rules: readonly Rule[], bySignature = false): void {
    if (id === ZERO_KEY || patient === ZERO_KEY) throw new ConsentStateError('ConsentZeroKey', 'zero key');
    if (rules.length === 0) throw new ConsentStateError('ConsentNoRules', 'a consent needs a rule');
    if (rules.length > MAX_RULES) throw new ConsentStateError('ConsentTooManyRules', `${rules.length} rules`);
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
      if (rule.tokens.length > MAX_RULE_TOKENS) throw new ConsentStateError('ConsentTooManyTokens', `rule ${i}: ${rule.tokens.length} tokens`);
      if ((i !== 0 && rule.parent >= i) || rule.tokens.some((t) => !TOKEN.test(t))) throw new ConsentStateError('ConsentBadRule', `rule ${i}`);
    });
    this.#write(id, patient, rules, 'active', bySignature ? false : (existing?.lockedByPatient ?? false));
    if (becomesActive) this.#activeCount.set(patient, (this.#activeCount.get(patient) ?? 0) + 1);
  }

  /**
   * Set consent `id` to what the chain reports (`consentOf`), without the contract's checks: the
   * chain already accepted it. For replaying events, where `put` could refuse what the chain did
   * (a signed grant after a signed revocation, a put already revoked again by the time it is
   * read). Keeps the first-write order.
   */
  load(id: string, record: { patient: string; status: 'active' | 'revoked'; lockedByPatient: boolean; rules: readonly Rule[] }): void {
    const { patient, status, lockedByPatient, rules } = record;
    if (rules.length === 0 || rules.length > MAX_RULES) throw new ConsentStateError('ConsentNoRules', `a consent has 1 to ${MAX_RULES} rules`);
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
    const stored = rules.map((r, i) =>
      Object.freeze({ ...r, parent: i === 0 ? 0 : r.parent, actors: Object.freeze([...r.actors]) as string[], tokens: Object.freeze([...r.tokens]) as string[] }),
    );
    const existing = this.#consents.get(id);
    if (existing !== undefined) {
      existing.status = status;
      existing.lockedByPatient = lockedByPatient;
      existing.rules = stored;
      existing.compiled = stored.map(compile);
      return;
    }
    const entry: Entry = {
      id,
      patient,
      status,
      lockedByPatient,
      rules: stored,
      compiled: stored.map(compile),
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

  /** Whether some consent in force of `patient` has a rule with data conditions (its decisions may need facts). */
  needsFacts(patient: string): boolean {
    for (const e of this.#byPatient.get(patient) ?? []) if (e.status === 'active' && e.compiled.some((r) => r.needsFacts)) return true;
    return false;
  }

  /** A consent as the registry holds it; undefined when never written. */
  consent(id: string): ConsentRecord | undefined {
    const e = this.#consents.get(id);
    if (e === undefined) return undefined;
    const rules = e.rules.map((r) => ({ ...r, actors: [...r.actors], tokens: [...r.tokens] }));
    return { patient: e.patient, status: e.status, active: e.status === 'active', lockedByPatient: e.lockedByPatient, rules };
  }

  /** See `decide`. */
  decide(request: ConsentRequest): Decision {
    const { actors, resourceClass, action, purposes } = request;
    const n = actors.length;
    if (n > MAX_REQUEST_ACTORS) throw new ConsentStateError('ConsentTooManyRequestActors', `${n} request actors`);
    checkUint8(resourceClass);
    checkUint8(action);
    if (!Number.isInteger(purposes) || purposes < 0 || purposes > 0xffffffff) throw new TypeError('purposes is a mask of the defined purposes');
    if (!Number.isSafeInteger(request.time) || request.time < 0) throw new TypeError('time must be unix seconds');

    let approvedMask = 0;
    let emergency = false;
    for (let j = 0; j < n; j++) {
      const a = this.#approvals.get(actors[j]!);
      if (a !== undefined && a.approved) {
        approvedMask |= 1 << j;
        if (a.emergency) emergency = true;
      }
    }
    const breakGlass = emergency && (purposes & ETREAT_BIT) !== 0;

    let permitting: Entry | undefined;
    let undetermined = false;
    // A deny set aside by break-glass: access is then break-glass, whatever permits.
    let overridden = false;
    const entries = this.#byPatient.get(request.patient);
    if (entries !== undefined) {
      for (let k = 0; k < entries.length; k++) {
        const entry = entries[k]!;
        if (entry.status !== 'active') continue;
        const v = this.#verdict(entry.compiled, request, approvedMask);
        if (v === Verdict.None) continue;
        if (v === Verdict.Undetermined) {
          undetermined = true;
          continue;
        }
        if (v === Verdict.Permit) {
          permitting ??= entry;
          continue;
        }
        // Break-glass overrides a deny unless the deny names ETREAT explicitly.
        // A deny decided without the facts is a deny whatever they are.
        if (!breakGlass || v === Verdict.DenyNamed) return entry.denyResult;
        overridden = true;
      }
    }
    // A consent that could not be decided without the facts might deny (or permit): nothing is final.
    if (undetermined) return UNDETERMINED;
    if (overridden) return BREAK_GLASS;
    if (permitting !== undefined) return permitting.permitResult;
    if (this.#model === 'opt-out' && approvedMask !== 0 && purposes !== 0 && (purposes & ~TREATMENT_BITS) === 0) return IMPLIED;
    if (breakGlass) return BREAK_GLASS;
    if (approvedMask === 0) return ACTOR_NOT_APPROVED;
    return NO_CONSENT;
  }

  /** A consent's verdict: its most deeply nested matching rules decide, deny winning among equals. */
  #verdict(rules: readonly Compiled[], request: ConsentRequest, approvedMask: number): Verdict {
    const depth = this.#depth;
    let matched = 0;
    let named = 0;
    let found = false;
    let best = 0;
    let permit = false;
    let namesEmergency = false;
    for (let i = 0; i < rules.length; i++) {
      const r = rules[i]!;
      const parent = r.parent;
      if (i !== 0 && ((matched >>> parent) & 1) === 0) continue;
      const m = matches(r, request, approvedMask);
      if (m === 0) continue;
      if (m === 2) return Verdict.Undetermined;
      matched |= 1 << i;
      const d = i === 0 ? 0 : depth[parent]! + 1;
      depth[i] = d;
      const names = (r.purposesLo & ETREAT_BIT) !== 0 || (i !== 0 && ((named >>> parent) & 1) === 1);
      if (names) named |= 1 << i;
      if (!found || d > best) {
        found = true;
        best = d;
        permit = r.permit;
        namesEmergency = !r.permit && names;
      } else if (d === best && !r.permit) {
        namesEmergency = permit ? names : namesEmergency || names;
        permit = false;
      }
    }
    if (!found) return Verdict.None;
    if (permit) return Verdict.Permit;
    return namesEmergency ? Verdict.DenyNamed : Verdict.Deny;
  }
}

/** 1: the rule matches; 0: it does not; 2: it cannot be told without the data's facts. */
function matches(r: Compiled, request: ConsentRequest, approvedMask: number): 0 | 1 | 2 {
  const time = request.time;
  if (r.start !== 0 && time < r.start) return 0;
  if (r.end !== 0 && time > r.end) return 0;
  if (r.actions !== 0 && (request.action >= 16 || ((r.actions >>> request.action) & 1) === 0)) return 0;
  if (!r.allPurposes && (r.purposesLo & request.purposes) === 0) return 0;
  if (!actorMatches(r, request.actors, approvedMask)) return 0;
  const facts = request.facts;
  const classBit = r.classes !== null && ((r.classes[request.resourceClass >>> 5]! >>> (request.resourceClass & 31)) & 1) === 1;
  if (!r.needsFacts) return r.classes === null || classBit ? 1 : 0;
  if (facts === undefined) {
    // Without facts, only what does not need them can rule the rule out.
    if (r.classes !== null && !classBit && r.classTokens.length === 0) return 0;
    return 2;
  }
  const dataTime = request.dataTime ?? 0;
  if (r.dataStart !== 0 && dataTime < r.dataStart) return 0;
  if (r.dataEnd !== 0 && dataTime > r.dataEnd) return 0;
  if ((r.classes !== null || r.classTokens.length !== 0) && !classBit && !anyIn(r.classTokens, facts)) return 0;
  for (let k = 0; k < r.kinds.length; k++) if (!anyIn(r.kinds[k]!, facts)) return 0;
  return 1;
}

function anyIn(tokens: readonly string[], facts: ReadonlySet<string>): boolean {
  for (let i = 0; i < tokens.length; i++) if (facts.has(tokens[i]!)) return true;
  return false;
}

/** Deny: some request actor is named (or none is required). Permit: the same, among approved request actors. */
function actorMatches(r: Compiled, actors: readonly string[], approvedMask: number): boolean {
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

function compile(r: Readonly<Rule>): Compiled {
  let words: Uint32Array | null = null;
  if (r.classes !== 0n) {
    words = new Uint32Array(8);
    for (let w = 0; w < 8; w++) words[w] = Number((r.classes >> BigInt(32 * w)) & 0xffffffffn);
  }
  const byKind = new Map<number, string[]>();
  for (const token of r.tokens) {
    const kind = Number.parseInt(token.slice(2, 4), 16);
    const list = byKind.get(kind);
    if (list) list.push(token);
    else byKind.set(kind, [token]);
  }
  const classTokens = byKind.get(KIND_CLASS) ?? [];
  byKind.delete(KIND_CLASS);
  return {
    parent: r.parent,
    permit: r.permit,
    actors: r.actors,
    classes: words,
    actions: r.actions,
    purposesLo: Number(r.purposes & 0xffffffffn),
    allPurposes: r.purposes === 0n,
    start: r.start,
    end: r.end,
    dataStart: r.dataStart,
    dataEnd: r.dataEnd,
    classTokens,
    kinds: [...byKind.values()],
    needsFacts: r.tokens.length !== 0 || r.dataStart !== 0 || r.dataEnd !== 0,
  };
}

/** The ABI bounds of a Rule: what the contract could not even receive. */
function checkRule(r: Rule): void {
  const ok =
    typeof r.permit === 'boolean' &&
    Number.isInteger(r.parent) &&
    r.parent >= 0 &&
    r.parent <= 255 &&
    Array.isArray(r.actors) &&
    Array.isArray(r.tokens) &&
    r.classes >= 0n &&
    r.classes <= UINT256 &&
    Number.isInteger(r.actions) &&
    r.actions >= 0 &&
    BigInt(r.actions) <= UINT16 &&
    r.purposes >= 0n &&
    r.purposes <= UINT64 &&
    [r.start, r.end, r.dataStart, r.dataEnd].every((v) => Number.isSafeInteger(v) && v >= 0);
  if (!ok) throw new TypeError('rule out of ABI bounds');
}

function checkUint8(v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 255) throw new TypeError('class and action are uint8');
}
