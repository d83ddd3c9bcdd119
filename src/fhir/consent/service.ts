/**
 * Consent enforcement on the server (issue 6; design in docs/consent.md).
 *
 * - **The decision cache.** `ConsentService` mirrors the consent registry's state in memory
 *   (`ConsentState`, policy.ts) by replaying the contract's events in chain order, and decides with
 *   the same algorithm as the contract's `decide` view. A permitted read therefore costs no RPC call.
 *   It polls the chain for new events; a write made through Vellum syncs right after its transaction
 *   is mined, so the very next request sees it.
 * - **Freshness.** The cache knows when it last heard from the chain. A consent-gated request needs a
 *   sync no older than `freshnessMs`; failing that it tries one, and if the chain does not answer the
 *   request is denied with 503 `VLM_CONSENT_UNAVAILABLE` (never decided from stale state).
 * - **Gates.** A request by a practitioner, related person, device or organisation gets a
 *   `ConsentGate` (access.ts): every record of the Patient compartment it would return is decided
 *   for the patient whose compartment holds it (the record's key scope). Decisions are logged on the
 *   request for its AuditEvent; break-glass accesses are also recorded on chain.
 */
import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import { fhirError } from '../errors.ts';
import type { Principal } from '../auth/verify.ts';
import { ConsentState, decide, type Decision } from './policy.ts';
import { CONSENT_ACTIONS, ETREAT, R4_RESOURCE_TYPES, purposeMask, tokenKeyer, type TokenKind } from './terms.ts';
import { factsOf, type DataFacts } from './facts.ts';
import type { ConsentLedger } from '../../chain/consent-ledger.ts';
import type { KeyScopeFilter } from '../../storage/search-types.ts';
import type { ConsentEvent } from '../../chain/consent-registry.ts';
import { SHARED_SCOPE } from '../../storage/keys.ts';

/** What the service needs of the consent registry (src/chain/consent-ledger.ts). */
export type ConsentChain = ConsentLedger;

/** One decision, as the access's AuditEvent records it. */
export interface ConsentDecisionEntry {
  decision: Decision['decision'];
  /** The deciding consent's on-chain id (0x…), when one decided. */
  consentId?: string;
  /** The FHIR Consent behind it, when this server knows it. */
  consent?: string;
  resourceType: string;
  /** The custodian answered a patient's access request on the patient's behalf. */
  onBehalfOfPatient?: boolean;
}

export interface ConsentServiceOptions {
  chain: ConsentChain;
  /** HMAC key for consent pseudonyms (KEY_PURPOSE.consentPseudonym). */
  key: Uint8Array;
  /** How old the last successful sync may be for a decision (ms). */
  freshnessMs?: number;
  /** How often to poll the chain for events (ms). */
  pollMs?: number;
  /** Called for each consent change signed by a patient and sent straight to the contract. */
  onSignedChange?: (event: Extract<ConsentEvent, { type: 'ConsentPut' | 'ConsentRevoked' }>) => Promise<void>;
  onError?: (err: unknown) => void;
  now?: () => number;
}

const ACCESS = CONSENT_ACTIONS.indexOf('access');
const CLASS_INDEX = new Map<string, number>(R4_RESOURCE_TYPES.map((type, i) => [type, i]));

/** A patient key no consent is ever put for: what a patient without consents is decided as. */
const NO_PATIENT = `0x${'ff'.repeat(32)}`;

/** Prefix under which a patient's consent key is derived from its key scope (see `patientKeyOfScope`). */
const SCOPE_PREFIX = 'key-scope:';

export class ConsentService {
  readonly state = new ConsentState();
  #chain: ConsentChain;
  #key: KeyObject;
  #freshnessMs: number;
  #pollMs: number;
  #now: () => number;
  #synced = -1;
  /** The newest block a write made through Vellum was mined in: decisions wait until the cache reaches it. */
  #required = -1;
  #lastSync = 0;
  #syncing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** After the first sync: signed changes replayed at start were written back before a restart. */
  #started = false;
  #scopeKeys = new Map<string, string>();
  /** Every patient key a consent was ever put for (the patients whose decision can be a permit). */
  #patients = new Set<string>();
  /** Patient key → key scope, for the patients of `#patients` (the key is an HMAC: not reversible). */
  #scopeOfPatient = new Map<string, string>();
  #scopesLoading: Promise<void> | undefined;
  /** On-chain consent id → FHIR Consent id, for the consents this server wrote. */
  readonly fhirIds = new Map<string, string>();
  #options: ConsentServiceOptions;

  constructor(options: ConsentServiceOptions) {
    this.#options = options;
    this.#chain = options.chain;
    this.#key = createSecretKey(Buffer.from(options.key));
    this.#freshnessMs = options.freshnessMs ?? 5_000;
    this.#pollMs = options.pollMs ?? 500;
    this.#now = options.now ?? Date.now;
  }

  get chain(): ConsentChain {
    return this.#chain;
  }

  /** The block the cache reflects (−1 before the first sync). */
  get syncedBlock(): number {
    return this.#synced;
  }

  /** Keyed pseudonym of a FHIR reference (`Practitioner/1`, `Consent/c`): 0x + 64 hex digits. */
  keyOf(reference: string): string {
    return '0x' + createHmac('sha256', this.#key).update(reference, 'utf8').digest('hex');
  }

  readonly #tokens = new Map<string, string>();
  readonly #tokenKeyer = tokenKeyer((reference) => this.keyOf(reference));

  /**
   * Keyed token of a data condition or fact (terms.ts `tokenKeyer`). Facts repeat across records
   * (codes, labels, custodians, the same records read again), so tokens are remembered (bounded):
   * an HMAC costs microseconds, a lookup a fraction of one.
   */
  readonly tokenOf = (kind: TokenKind, value: string): string => {
    const memo = `${kind}:${value}`;
    let token = this.#tokens.get(memo);
    if (token === undefined) {
      token = this.#tokenKeyer(kind, value);
      if (this.#tokens.size >= 200_000) this.#tokens.clear();
      this.#tokens.set(memo, token);
    }
    return token;
  };

  /** The facts of a resource version, as the consents' data conditions read them (facts.ts). */
  factsOf(resource: Record<string, unknown>, lastUpdated: number): DataFacts {
    return factsOf(resource, lastUpdated, this.tokenOf);
  }

  /**
   * A patient's consent key, from the key scope its compartment's records carry (the scope is
   * itself a keyed pseudonym of `Patient/{id}`), so a record is decided without knowing its patient.
   */
  patientKeyOfScope(keyScope: string, remember = false): string {
    let key = this.#scopeKeys.get(keyScope);
    if (key === undefined) {
      key = this.keyOf(SCOPE_PREFIX + keyScope);
      if (this.#scopeKeys.size >= 100_000) this.#scopeKeys.clear();
      this.#scopeKeys.set(keyScope, key);
    }
    // The reverse (patient key → key scope) is kept for the patients that have consents, and for
    // those a Consent is being written for (`remember`, write-step.ts `consentKeys`).
    if ((remember || this.#patients.has(key)) && !this.#scopeOfPatient.has(key)) this.#scopeOfPatient.set(key, keyScope);
    return key;
  }

  /** Learn the key scopes of patients (e.g. those of the stored Consents): see `scopeOfPatient`. */
  rememberScopes(keyScopes: Iterable<string>): void {
    for (const keyScope of keyScopes) this.patientKeyOfScope(keyScope, true);
  }

  /** The key scope of the patient whose consent key is `patientKey`, when this server knows it. */
  scopeOfPatient(patientKey: string): string | undefined {
    return this.#scopeOfPatient.get(patientKey);
  }

  /** Patient keys that have (or had) consents: every patient whose decision can be a permit or a deny. */
  consentPatients(): ReadonlySet<string> {
    return this.#patients;
  }

  /** Whether some patient with consents has a key scope this server does not know yet. */
  get scopesIncomplete(): boolean {
    for (const patient of this.#patients) if (!this.#scopeOfPatient.has(patient)) return true;
    return false;
  }

  /**
   * Learn the key scopes of the patients with consents once, from `load` (the stored Consents'
   * key scopes: a Consent is in its patient's compartment); concurrent callers share the load. After
   * it, Consents written through Vellum teach theirs as they are written (`consentKeys`).
   */
  async loadScopesOnce(load: () => Promise<Iterable<string>>): Promise<void> {
    this.#scopesLoading ??= load().then(
      (scopes) => this.rememberScopes(scopes),
      (err) => {
        this.#scopesLoading = undefined; // retried by the next request
        throw err;
      },
    );
    await this.#scopesLoading;
  }

  /** First sync (replays every event) and the polling loop. */
  async start(): Promise<void> {
    await this.sync();
    this.#started = true;
    const tick = () => {
      if (this.#closed) return;
      this.sync()
        .catch((err) => this.#options.onError?.(err))
        .finally(() => {
          if (!this.#closed) this.#timer = setTimeout(tick, this.#pollMs).unref();
        });
    };
    this.#timer = setTimeout(tick, this.#pollMs).unref();
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
  }

  /**
   * Resolves once the cache reflects every event up to `block` — the block a consent write made
   * through Vellum was mined in — so the very next request is decided with it. A poll already in
   * flight does not count: it may have read the chain's head before that block. Until then every
   * consent-gated request waits for it (`ensureFresh`), so a failure here cannot let a revoked
   * consent permit. Raises what `sync` raises.
   */
  async syncTo(block: number): Promise<void> {
    if (block > this.#required) this.#required = block;
    for (let fresh = 0; this.#synced < block; fresh++) {
      // A poll that began before the write may end below `block`; the one after it reads a later head.
      if (fresh > 3) throw new Error(`the chain reports a head below block ${block}`);
      await this.sync();
    }
  }

  /** Apply every event up to the chain's head (one sync at a time; callers share it). */
  sync(): Promise<void> {
    if (!this.#syncing) {
      this.#syncing = this.#sync().finally(() => {
        this.#syncing = undefined;
      });
    }
    return this.#syncing;
  }

  async #sync(): Promise<void> {
    const head = await this.#chain.head();
    if (head > this.#synced) {
      const events = await this.#chain.events(this.#synced + 1, head);
      for (const event of events) {
        try {
          await this.#apply(event);
        } catch (err) {
          // The contract accepted it, so the mirror cannot refuse it; a refusal here (e.g. a revocation
          // of a consent never seen) can only leave the mirror stricter than the chain.
          if ((err as Error).name !== 'ConsentStateError') throw err;
          this.#options.onError?.(err);
        }
      }
      this.#synced = head;
    }
    this.#lastSync = this.#now();
  }

  async #apply(event: ConsentEvent): Promise<void> {
    switch (event.type) {
      case 'ConsentPut': {
        const consent = await this.#chain.consentOf(event.id, { blockTag: event.blockNumber });
        if (consent) {
          this.state.put(event.id, consent.patient, consent.rules, event.bySignature);
          this.#patients.add(consent.patient);
        }
        break;
      }
      case 'ConsentRevoked':
        this.state.revoke(event.id, event.bySignature);
        break;
      case 'ActorApproved':
        this.state.approve(event.actor, event.emergency);
        break;
      case 'ActorApprovalRevoked':
        this.state.revokeApproval(event.actor);
        break;
      case 'ConsentModelSet':
        this.state.setModel(event.model, true);
        break;
      default:
        return;
    }
    if ((event.type === 'ConsentPut' || event.type === 'ConsentRevoked') && event.bySignature && this.#started) {
      await this.#options.onSignedChange?.(event);
    }
  }

  /** Resolves when decisions may be made; 503 `VLM_CONSENT_UNAVAILABLE` when the chain cannot be asked. */
  async ensureFresh(): Promise<void> {
    if (this.#synced >= 0 && this.#synced >= this.#required && this.#now() - this.#lastSync <= this.#freshnessMs) return;
    try {
      if (this.#synced < this.#required) await this.syncTo(this.#required);
      else await this.sync();
    } catch {
      throw fhirError(503, 'transient', 'VLM_CONSENT_UNAVAILABLE', 'Consent cannot be checked: the consent registry does not answer');
    }
  }

  /** A gate for one request by `actors` (keys) for `purposeOfUse`, logging into `log`. */
  gate(actors: string[], principal: Principal, log: ConsentDecisionEntry[]): ConsentGate {
    return new ConsentGate(this, actors, principal, log);
  }
}

/** The consent decisions of one request. */
export class ConsentGate {
  #service: ConsentService;
  #actors: string[];
  #purposes: number;
  #time: number;
  #log: ConsentDecisionEntry[];
  #seen = new Map<string, Decision>();
  #logged = new Set<string>();
  #emergency = new Set<string>();
  #links = new Map<string, KeyScopeFilter | undefined>();
  /** Some record was released under break-glass (the response is labelled). */
  breakGlass = false;

  constructor(service: ConsentService, actors: string[], principal: Principal, log: ConsentDecisionEntry[]) {
    this.#service = service;
    this.#actors = actors;
    // A token may name several purposes of use (space-separated); a rule's purposes match any.
    this.#purposes = purposeMask(String(principal.purposeOfUse ?? '').split(' '));
    this.#time = Math.floor(Date.now() / 1000);
    this.#log = log;
  }

  /**
   * The decision for a record of `type` in the compartment whose key scope is `keyScope`, for
   * consent `action` (default `access`). When the patient's consents have data conditions that
   * apply, the record's facts decide (`facts`, from the loaded resource); without them the answer
   * is `undetermined`, which never lets a record through. Decisions that need no facts are made
   * once per (patient, type, action); each distinct decision is logged once.
   */
  decide(type: string, keyScope: string, action: number = ACCESS, facts?: () => DataFacts): Decision {
    const memo = `${keyScope}|${type}|${action}`;
    const known = this.#seen.get(memo);
    if (known && known.decision !== 'undetermined') return known;
    const patient = this.#service.patientKeyOfScope(keyScope);
    const resourceClass = CLASS_INDEX.get(type) ?? 255;
    const request = { patient, actors: this.#actors, resourceClass, action, purposes: this.#purposes, time: this.#time };
    // Undetermined is remembered too: the records of such a class go straight to their facts.
    let decision = known ?? decide(this.#service.state, request);
    if (!known) this.#seen.set(memo, decision);
    if (decision.decision === 'undetermined') {
      if (facts === undefined) return decision;
      const f = facts();
      decision = decide(this.#service.state, { ...request, facts: f.tokens, dataTime: f.dataTime });
    }
    const logKey = `${memo}|${decision.decision}|${decision.consentId ?? ''}`;
    if (!this.#logged.has(logKey)) {
      this.#logged.add(logKey);
      const fhirId = decision.consentId ? this.#service.fhirIds.get(decision.consentId) : undefined;
      this.#log.push({
        decision: decision.decision,
        resourceType: type,
        ...(decision.consentId ? { consentId: decision.consentId } : {}),
        ...(fhirId ? { consent: `Consent/${fhirId}` } : {}),
      });
    }
    if (decision.decision === 'break-glass') {
      this.breakGlass = true;
      if (!this.#emergency.has(patient)) {
        this.#emergency.add(patient);
        // On chain too, without holding the response: an emergency access leaves a public trace.
        for (const actor of this.#actors.slice(0, 1)) {
          void this.#service.chain.recordEmergencyAccess(patient, actor, resourceClass, ETREAT).catch(() => undefined);
        }
      }
    }
    return decision;
  }

  /** Whether the record may be seen (`decide` is permit, break-glass or implied). */
  allowed(type: string, keyScope: string, action?: number, facts?: () => DataFacts): boolean {
    const d = this.decide(type, keyScope, action, facts).decision;
    return d === 'permit' || d === 'break-glass' || d === 'implied';
  }

  /** The facts of a resource version (facts.ts), for `decide`. */
  factsOf(resource: Record<string, unknown>, lastUpdated: number): DataFacts {
    return this.#service.factsOf(resource, lastUpdated);
  }

  /** Whether a Consent names one of the caller's identities among its actors (at any depth). */
  namesCaller(consent: Record<string, unknown>): boolean {
    const mine = new Set(this.#actors);
    const walk = (provision: unknown): boolean => {
      if (typeof provision !== 'object' || provision === null) return false;
      const p = provision as { actor?: unknown; provision?: unknown };
      for (const a of Array.isArray(p.actor) ? p.actor : []) {
        const ref = (a as { reference?: { reference?: unknown } })?.reference?.reference;
        if (typeof ref === 'string' && mine.has(this.#service.keyOf(ref))) return true;
      }
      return (Array.isArray(p.provision) ? p.provision : []).some(walk);
    };
    return walk(consent['provision']);
  }

  /** Whether deciding a record of `type` of this compartment needs the record's facts. */
  needsFacts(type: string, keyScope: string, action: number = ACCESS): boolean {
    return this.decide(type, keyScope, action).decision === 'undetermined';
  }

  /**
   * The key scopes of the records of `type` this request may see (action `access`), as a filter a
   * search's chains and `_has` apply to the resources they traverse (src/fhir/access.ts
   * `linkScopes`). Decided from the mirrored state for every patient that has consents, without
   * logging each (the matches a search returns are decided and logged one by one):
   * - normally only a permitting consent lets a record be seen: `only` the scopes of the patients
   *   that permit, and `'shared'` (records of no patient). A permitting patient whose key scope this
   *   server does not know is left out (stricter, never looser);
   * - under break-glass (ETREAT, an approved emergency actor) every patient is permitted unless a
   *   consent denies: every scope `except` those of the denying patients. A denying patient whose
   *   key scope is unknown cannot be left out: undefined (the caller refuses the search). The use of
   *   break-glass is logged once for the type and labels the response.
   * Memoised per type for the request.
   */
  linkScopes(type: string): KeyScopeFilter | undefined {
    if (this.#links.has(type)) return this.#links.get(type);
    const service = this.#service;
    const resourceClass = CLASS_INDEX.get(type) ?? 255;
    // What a patient without consents gets: break-glass, or treatment implied by an opt-out model,
    // opens every compartment but those whose consents withhold; otherwise only permits open one.
    const open = decide(service.state, {
      patient: NO_PATIENT,
      actors: this.#actors,
      resourceClass,
      action: ACCESS,
      purposes: this.#purposes,
      time: this.#time,
    }).decision;
    const opened = open === 'break-glass' || open === 'implied';
    const scopes: string[] = [];
    let result: KeyScopeFilter | undefined;
    let complete = true;
    for (const patient of service.consentPatients()) {
      const d = decide(service.state, {
        patient,
        actors: this.#actors,
        resourceClass,
        action: ACCESS,
        purposes: this.#purposes,
        time: this.#time,
      }).decision;
      // Undetermined (data conditions): not every record of the patient may be seen — left out,
      // or, when compartments are open, counted among those that withhold.
      const permitted = d === 'permit' || d === 'break-glass' || d === 'implied';
      if (permitted === opened) continue; // open: list the withholding patients; otherwise the permitting ones
      const scope = service.scopeOfPatient(patient);
      if (scope !== undefined) scopes.push(scope);
      else if (opened) complete = false;
    }
    if (!opened) result = { only: [SHARED_SCOPE, ...scopes] };
    else if (complete) {
      result = { except: scopes };
      if (open === 'break-glass') {
        this.breakGlass = true;
        this.#log.push({ decision: 'break-glass', resourceType: type });
      }
    }
    this.#links.set(type, result);
    return result;
  }
}

export { ACCESS as CONSENT_ACCESS };
