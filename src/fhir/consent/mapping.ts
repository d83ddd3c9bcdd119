/**
 * FHIR R4 Consent → the rules the consent registry stores (docs/consent.md: the decision table,
 * one row per construct; http://hl7.org/fhir/R4/consent.html).
 *
 * `mapConsent` turns one Consent into a registry action, or refuses it with a 422 whose issue
 * names the offending element (FHIRPath `expression`) and a `VLM_CONSENT_*` code. It never drops
 * meaning: an element that would change who may do what, and that the registry cannot hold, is
 * refused rather than ignored.
 *
 * - `status`: `active` → put; `proposed` → an access request (mapped in full, so its approval
 *   cannot fail later, but nothing is put in force); `inactive`, `rejected`, `entered-in-error` →
 *   revoke; `draft` → nothing.
 * - `scope` (consentscope): `patient-privacy` is enforced; `research` is enforced for purpose
 *   HRESCH only (the root's purposes become HRESCH); `treatment` and `adr` are validated and
 *   stored, never enforced (`none`). Any other scope → 422.
 * - The root provision's effect: its `type` when the sender gives one; else the base policy of
 *   `policyRule` (v3 ActCode consent directives, `BASE_POLICIES`), else of a `policy[].uri` the
 *   operator maps (`VELLUM_CONSENT_POLICIES`). EMRGONLY is a deny with a nested permit for ETREAT.
 *   No base → 422 VLM_CONSENT_BASE_POLICY. A nested provision without `type` (R4 requires one, the
 *   official pkb example omits it) takes its parent's.
 * - Nested provisions to any depth (at most 32 provisions in all), each a rule nested in its
 *   parent: it applies only where its parent applies; the most deeply nested applying rules
 *   decide, deny winning among equals.
 * - Conditions: `actor` by role — CST (custodian: the organisation that holds the data, from the
 *   resource's `meta.source`) and AUT (author) are data conditions, every other role names a
 *   recipient (the requester); `action`, `purpose`, `class` (R4 resource types, profiles by their
 *   canonical URL, content types of `urn:ietf:bcp:13`), `code`, `securityLabel`, `period`,
 *   `dataPeriod`, `data` (instance / related / dependents / authoredby). Recipients are keyed
 *   pseudonyms; data conditions are keyed tokens (terms.ts `tokenKeyer`).
 *
 * Not read, because they do not change what is decided: `identifier`, `category`, `dateTime`,
 * `performer`, `organization`, `sourceAttachment` / `sourceReference`, `verification`, `text`,
 * `contained`, `extension`, `provision.id`. Refused wherever they occur: `modifierExtension` and
 * `implicitRules` (they change meaning by definition) and any provision element this module does
 * not know.
 */
import { dateRange } from '../dates.ts';
import { fhirError, type FhirError } from '../errors.ts';
import {
  CONSENT_ACTION_SYSTEM,
  ETREAT,
  HRESCH,
  MAX_RULE_ACTORS,
  MAX_RULE_TOKENS,
  MAX_RULES,
  PURPOSE_SYSTEM,
  RESOURCE_TYPES_SYSTEM,
  actionIndex,
  classBit,
  purposeIndex,
  type Rule,
  type TokenKind,
} from './terms.ts';

export type ConsentMapping =
  | { action: 'put'; consentId: string; patient: string; patientRef: string; rules: Rule[] }
  | { action: 'request'; consentId: string; patient: string; patientRef: string; rules: Rule[]; recipients: string[] }
  | { action: 'revoke'; consentId: string }
  | { action: 'none'; consentId: string };

/** What a mapping needs besides the Consent. */
export interface MappingContext {
  /** Keyed pseudonym of a reference (`Patient/1`, `Practitioner/a`, `Consent/c`). */
  keyOf(reference: string): string;
  /** Keyed token of a data condition (terms.ts `tokenKeyer`). */
  tokenOf(kind: TokenKind, value: string): string;
  /** The operator's table: policy URI → base effect (`VELLUM_CONSENT_POLICIES`). */
  policies?: Readonly<Record<string, 'permit' | 'deny'>>;
  /**
   * References held by the resources `provision.data` names with meaning `related` (by their
   * reference), read from the store by the caller (`relatedReferences`); a resource not held
   * relates to nothing but itself.
   */
  related?: ReadonlyMap<string, readonly string[]>;
}

export const CONSENT_SCOPE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentscope';
export const ACT_CODE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
export const PARTICIPATION_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
export const MIME_SYSTEM = 'urn:ietf:bcp:13';

/**
 * v3 ActCode consent directives (_ActConsentDirective) → the base effect of a root provision
 * without `type`. GRANTORCHOICE leaves it to the grantor: the root must state a type.
 */
export const BASE_POLICIES: Readonly<Record<string, 'permit' | 'deny' | 'emergency-only' | undefined>> = Object.freeze({
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
});

/** Actor roles (v3 ParticipationType) that condition the data rather than name the requester. */
const DATA_ROLES: Readonly<Record<string, TokenKind>> = { CST: 'custodian', AUT: 'author' };
const DATA_MEANINGS: ReadonlySet<string> = new Set(['instance', 'related', 'dependents', 'authoredby']);
const RELATIVE_REFERENCE = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/;

/** Provision elements this module reads (anything else is refused). */
const PROVISION_ELEMENTS: ReadonlySet<string> = new Set([
  'id', 'extension', 'type', 'period', 'actor', 'action', 'securityLabel', 'purpose', 'class', 'code', 'dataPeriod', 'data', 'provision',
]);
const ACTOR_ELEMENTS: ReadonlySet<string> = new Set(['id', 'extension', 'role', 'reference']);
const DATA_ELEMENTS: ReadonlySet<string> = new Set(['id', 'extension', 'meaning', 'reference']);

type Json = Record<string, unknown>;

/**
 * Map a Consent to a registry action (docs/consent.md; see the module comment for every rule).
 * `id` defaults to `resource.id` (pass it when create has just assigned one). Raises 422
 * `business-rule` / `not-supported` with a VLM_CONSENT_* code naming the element.
 */
export function mapConsent(resource: unknown, context: MappingContext, id?: string): ConsentMapping {
  if (!isObject(resource) || resource['resourceType'] !== 'Consent') throw new TypeError('mapConsent needs a Consent');
  const consentKeyId = id ?? resource['id'];
  if (typeof consentKeyId !== 'string' || consentKeyId === '') throw new TypeError('mapConsent needs the Consent id');
  const consentId = context.keyOf(`Consent/${consentKeyId}`);

  refuseModifiers(resource, 'Consent');
  if (resource['implicitRules'] !== undefined) {
    throw notSupported('VLM_CONSENT_MODIFIER', 'implicitRules may change the meaning of the consent', 'Consent.implicitRules');
  }
  const status = resource['status'];
  const scope = scopeOf(resource['scope']);
  const patientRef = patientReference(resource['patient'], scope);

  switch (status) {
    case 'draft':
      return { action: 'none', consentId };
    case 'inactive':
    case 'rejected':
    case 'entered-in-error':
      return { action: scope === 'enforced' || scope === 'research' ? 'revoke' : 'none', consentId };
    case 'active':
    case 'proposed':
      break;
    default:
      throw businessRule('VLM_CONSENT_STATUS', 'Consent.status must be an R4 consent-state-codes code', 'Consent.status');
  }

  const root = resource['provision'];
  // A Consent of a scope Vellum does not enforce (treatment, adr) is validated as any other (with
  // a permit base where it states none) and stored as written: nothing is put in force.
  const base = scope === 'stored' ? { effect: baseEffect(resource, context).effect ?? ('permit' as const) } : baseEffect(resource, context);
  const rules: Rule[] = [];
  const recipients = new Set<string>();
  const walk = (value: unknown, path: string, parent: number, inherited: boolean | undefined) => {
    if (rules.length >= MAX_RULES) {
      throw businessRule('VLM_CONSENT_TOO_MANY_PROVISIONS', `at most ${MAX_RULES} provisions in all`, path);
    }
    const p = asObject(value, path);
    refuseModifiers(p, path);
    for (const key of Object.keys(p)) {
      if (!PROVISION_ELEMENTS.has(key) && !key.startsWith('_')) throw notSupported('VLM_CONSENT_ELEMENT', `${key} is not a provision element Vellum enforces`, `${path}.${key}`);
    }
    const type = p['type'];
    if (type !== undefined && type !== 'permit' && type !== 'deny') throw notSupported('VLM_CONSENT_TYPE', 'type is permit or deny', `${path}.type`);
    let permit: boolean;
    if (type !== undefined) permit = type === 'permit';
    else if (inherited !== undefined) permit = inherited;
    else if (base.effect !== undefined) permit = base.effect === 'permit';
    else throw businessRule('VLM_CONSENT_BASE_POLICY', 'no base policy: give policyRule, a policy the server knows, or the root provision type', 'Consent.policyRule');
    const rule = ruleOf(p, path, context, permit, parent === -1 ? 0 : parent);
    for (const a of rule.actors) recipients.add(a);
    if (parent === -1 && scope === 'research') rule.purposes = researchPurposes(rule.purposes, path);
    const index = rules.length;
    rules.push(rule);
    arrayOf(p['provision']).forEach((child, i) => walk(child, `${path}.provision[${i}]`, index, permit));
  };
  if (root === undefined) {
    // A Consent with only a policy: its base applies to everything of the patient.
    if (base.effect === undefined) {
      throw businessRule('VLM_CONSENT_BASE_POLICY', 'no provision and no base policy Vellum knows', 'Consent.policyRule');
    }
    walk({}, 'Consent.provision', -1, undefined);
  } else {
    walk(root, 'Consent.provision', -1, undefined);
  }
  if (base.effect === 'emergency-only' && (root === undefined || asObject(root, 'Consent.provision')['type'] === undefined)) {
    // EMRGONLY: every purpose withheld but emergency treatment (a permit nested in the root).
    if (rules.length >= MAX_RULES) throw businessRule('VLM_CONSENT_TOO_MANY_PROVISIONS', `at most ${MAX_RULES} provisions in all`, 'Consent.provision');
    rules.push({ ...emptyRule(true, 0), purposes: 1n << BigInt(ETREAT) });
  }
  if (scope === 'stored') return { action: 'none', consentId };
  const patient = context.keyOf(patientRef);
  if (status === 'proposed') return { action: 'request', consentId, patient, patientRef, rules, recipients: [...recipients] };
  return { action: 'put', consentId, patient, patientRef, rules };
}

/** Whether the Consent's scope is enforced (`enforced`: patient-privacy), for research only, or only stored. */
function scopeOf(scope: unknown): 'enforced' | 'research' | 'stored' {
  const codings = isObject(scope) ? arrayOf(scope['coding']) : [];
  const codes = new Set(codings.filter((c) => isObject(c) && c['system'] === CONSENT_SCOPE_SYSTEM).map((c) => (c as Json)['code']));
  if (codes.size !== 1) {
    throw notSupported('VLM_CONSENT_SCOPE', 'scope is one code of the consentscope code system', 'Consent.scope');
  }
  switch ([...codes][0]) {
    case 'patient-privacy':
      return 'enforced';
    case 'research':
      return 'research';
    case 'treatment':
    case 'adr':
      return 'stored';
    default:
      throw notSupported('VLM_CONSENT_SCOPE', 'scope is patient-privacy, research, treatment or adr', 'Consent.scope');
  }
}

function patientReference(patient: unknown, scope: string): string {
  if (patient === undefined) {
    if (scope === 'stored') return '';
    throw businessRule('VLM_CONSENT_PATIENT_REQUIRED', 'a privacy consent names its patient', 'Consent.patient');
  }
  const ref = isObject(patient) ? patient['reference'] : undefined;
  const m = typeof ref === 'string' ? RELATIVE_REFERENCE.exec(ref) : null;
  if (!m || m[1] !== 'Patient' || (isObject(patient) && patient['type'] !== undefined && patient['type'] !== 'Patient')) {
    throw notSupported('VLM_CONSENT_PATIENT_REFERENCE', 'Consent.patient must be a relative Patient/{id} reference', 'Consent.patient');
  }
  return ref as string;
}

/** The base effect from policyRule, else from a policy URI the operator maps. */
function baseEffect(resource: Json, context: MappingContext): { effect: 'permit' | 'deny' | 'emergency-only' | undefined } {
  const rule = resource['policyRule'];
  if (rule !== undefined) {
    const codings = isObject(rule) ? arrayOf(rule['coding']) : [];
    for (const c of codings) {
      if (!isObject(c) || c['system'] !== ACT_CODE_SYSTEM || typeof c['code'] !== 'string') continue;
      // GRANTORCHOICE (known, no base): the grantor decides — the root must state its type.
      if (Object.hasOwn(BASE_POLICIES, c['code'])) return { effect: BASE_POLICIES[c['code']] };
    }
  }
  for (const p of arrayOf(resource['policy'])) {
    const uri = isObject(p) ? p['uri'] : undefined;
    const effect = typeof uri === 'string' ? context.policies?.[uri] : undefined;
    if (effect) return { effect };
  }
  return { effect: undefined };
}

function researchPurposes(purposes: bigint, path: string): bigint {
  const research = 1n << BigInt(HRESCH);
  if (purposes !== 0n && (purposes & research) === 0n) {
    throw businessRule('VLM_CONSENT_PURPOSE', 'a research consent governs purpose HRESCH', `${path}.purpose`);
  }
  return research;
}

function emptyRule(permit: boolean, parent: number): Rule {
  return { parent, permit, actors: [], classes: 0n, actions: 0, purposes: 0n, start: 0, end: 0, dataStart: 0, dataEnd: 0, tokens: [] };
}

/** One provision (without its nested provisions) as a Rule. */
function ruleOf(p: Json, path: string, context: MappingContext, permit: boolean, parent: number): Rule {
  const rule = emptyRule(permit, parent);
  const tokens = new Set<string>();
  const actorKeys = new Set<string>();
  arrayOf(p['actor']).forEach((a, i) => {
    const at = `${path}.actor[${i}]`;
    const actor = asObject(a, at);
    refuseModifiers(actor, at);
    for (const key of Object.keys(actor)) {
      if (!ACTOR_ELEMENTS.has(key)) throw notSupported('VLM_CONSENT_ELEMENT', `${key} is not an actor element Vellum enforces`, `${at}.${key}`);
    }
    const ref = referenceOf(actor['reference'], `${at}.reference`, 'VLM_CONSENT_ACTOR_REFERENCE');
    const dataRole = roleOf(actor['role']);
    if (dataRole) tokens.add(context.tokenOf(dataRole, ref));
    else actorKeys.add(context.keyOf(ref));
  });
  if (actorKeys.size > MAX_RULE_ACTORS) throw businessRule('VLM_CONSENT_TOO_MANY_ACTORS', `at most ${MAX_RULE_ACTORS} recipient actors per provision`, `${path}.actor`);
  rule.actors = [...actorKeys];

  arrayOf(p['action']).forEach((cc, i) => {
    const codes = new Set(
      (isObject(cc) ? arrayOf(cc['coding']) : []).filter((c) => isObject(c) && c['system'] === CONSENT_ACTION_SYSTEM).map((c) => (c as Json)['code']),
    );
    const code = codes.size === 1 ? [...codes][0] : undefined;
    const bit = typeof code === 'string' ? actionIndex(code) : undefined;
    if (bit === undefined) throw notSupported('VLM_CONSENT_ACTION', `action is one code of ${CONSENT_ACTION_SYSTEM}`, `${path}.action[${i}]`);
    rule.actions |= 1 << bit;
  });
  arrayOf(p['purpose']).forEach((c, i) => {
    const bit = isObject(c) && c['system'] === PURPOSE_SYSTEM && typeof c['code'] === 'string' ? purposeIndex(c['code']) : undefined;
    if (bit === undefined) throw notSupported('VLM_CONSENT_PURPOSE', `purpose is a supported code of ${PURPOSE_SYSTEM}`, `${path}.purpose[${i}]`);
    rule.purposes |= 1n << BigInt(bit);
  });
  arrayOf(p['class']).forEach((c, i) => {
    const at = `${path}.class[${i}]`;
    const system = isObject(c) ? c['system'] : undefined;
    const code = isObject(c) ? c['code'] : undefined;
    if (typeof code !== 'string' || code === '') throw notSupported('VLM_CONSENT_CLASS', 'a class has a code', at);
    if (system === RESOURCE_TYPES_SYSTEM) {
      const bit = classBit(code);
      if (bit === undefined) throw notSupported('VLM_CONSENT_CLASS', 'not an R4 resource type', at);
      rule.classes |= 1n << BigInt(bit);
    } else if (system === MIME_SYSTEM) {
      tokens.add(context.tokenOf('class', `mime|${code.toLowerCase()}`));
    } else if (/^(https?|urn):/.test(code)) {
      // A profile, by its canonical URL (a version after `|` is not part of what a resource claims).
      tokens.add(context.tokenOf('class', `profile|${code.split('|')[0]}`));
    } else {
      throw notSupported('VLM_CONSENT_CLASS', `class is an R4 resource type (${RESOURCE_TYPES_SYSTEM}), a profile's canonical URL, or a content type (${MIME_SYSTEM})`, at);
    }
  });
  arrayOf(p['code']).forEach((cc, i) => {
    const codings = isObject(cc) ? arrayOf(cc['coding']) : [];
    if (codings.length === 0) throw notSupported('VLM_CONSENT_CODE', 'a code is a CodeableConcept with codings', `${path}.code[${i}]`);
    codings.forEach((c, j) => tokens.add(context.tokenOf('code', codingValue(c, `${path}.code[${i}].coding[${j}]`, 'VLM_CONSENT_CODE'))));
  });
  arrayOf(p['securityLabel']).forEach((c, i) => tokens.add(context.tokenOf('label', codingValue(c, `${path}.securityLabel[${i}]`, 'VLM_CONSENT_LABEL'))));
  arrayOf(p['data']).forEach((d, i) => {
    const at = `${path}.data[${i}]`;
    const data = asObject(d, at);
    refuseModifiers(data, at);
    for (const key of Object.keys(data)) {
      if (!DATA_ELEMENTS.has(key)) throw notSupported('VLM_CONSENT_ELEMENT', `${key} is not a data element Vellum enforces`, `${at}.${key}`);
    }
    const meaning = data['meaning'];
    if (typeof meaning !== 'string' || !DATA_MEANINGS.has(meaning)) {
      throw notSupported('VLM_CONSENT_DATA', 'meaning is instance, related, dependents or authoredby', `${at}.meaning`);
    }
    const ref = referenceOf(data['reference'], `${at}.reference`, 'VLM_CONSENT_DATA');
    tokens.add(context.tokenOf('data', `${meaning}|${ref}`));
    if (meaning === 'related') for (const held of context.related?.get(ref) ?? []) tokens.add(context.tokenOf('data', `related|${held}`));
  });
  if (tokens.size > MAX_RULE_TOKENS) {
    throw businessRule('VLM_CONSENT_TOO_MANY_CONDITIONS', `at most ${MAX_RULE_TOKENS} data conditions per provision`, path);
  }
  rule.tokens = [...tokens];
  const period = bounds(p['period'], `${path}.period`);
  rule.start = period.start;
  rule.end = period.end;
  const dataPeriod = bounds(p['dataPeriod'], `${path}.dataPeriod`);
  rule.dataStart = dataPeriod.start;
  rule.dataEnd = dataPeriod.end;
  return rule;
}

/** The data role of an actor (CST, AUT), or undefined for a recipient. */
function roleOf(role: unknown): TokenKind | undefined {
  for (const c of isObject(role) ? arrayOf(role['coding']) : []) {
    if (isObject(c) && c['system'] === PARTICIPATION_SYSTEM && typeof c['code'] === 'string' && Object.hasOwn(DATA_ROLES, c['code'])) return DATA_ROLES[c['code']];
  }
  return undefined;
}

function referenceOf(reference: unknown, path: string, code: string): string {
  const ref = isObject(reference) ? reference['reference'] : undefined;
  const m = typeof ref === 'string' ? RELATIVE_REFERENCE.exec(ref) : null;
  if (!m) throw notSupported(code, 'a relative reference Type/{id}', path);
  const declared = (reference as Json)['type'];
  if (declared !== undefined && declared !== m[1]) throw notSupported(code, 'Reference.type contradicts the reference', `${path}.type`);
  return ref as string;
}

function codingValue(c: unknown, path: string, code: string): string {
  const system = isObject(c) ? c['system'] : undefined;
  const value = isObject(c) ? c['code'] : undefined;
  if (typeof system !== 'string' || system === '' || typeof value !== 'string' || value === '') {
    throw notSupported(code, 'a coding with a system and a code', path);
  }
  return `${system}|${value}`;
}

/** A Period as inclusive unix seconds (0 = open): start is its first second, end its last. */
function bounds(value: unknown, path: string): { start: number; end: number } {
  if (value === undefined) return { start: 0, end: 0 };
  const p = asObject(value, path);
  let start = 0;
  let end = 0;
  if (p['start'] !== undefined) {
    const range = typeof p['start'] === 'string' ? dateRange(p['start']) : undefined;
    if (!range) throw businessRule('VLM_CONSENT_PERIOD', 'start is not a FHIR dateTime', `${path}.start`);
    // Years before 1970 (and the 0–99 years Date.UTC misreads) are all "before any request".
    start = yearOf(p['start'] as string) < 1970 ? 0 : Math.max(0, Math.floor(range.low / 1000));
  }
  if (p['end'] !== undefined) {
    const range = typeof p['end'] === 'string' ? dateRange(p['end']) : undefined;
    if (!range) throw businessRule('VLM_CONSENT_PERIOD', 'end is not a FHIR dateTime', `${path}.end`);
    end = yearOf(p['end'] as string) < 1970 ? 0 : Math.floor(range.high / 1000);
    if (end <= 0) throw businessRule('VLM_CONSENT_PERIOD', 'an end at or before 1970-01-01T00:00:00Z cannot be stored', `${path}.end`);
  }
  if (end !== 0 && start > end) throw businessRule('VLM_CONSENT_PERIOD', 'the period ends before it starts', path);
  return { start, end };
}

/** The references `provision.data` items with meaning `related` name, anywhere in the Consent. */
export function relatedDataReferences(resource: unknown): string[] {
  const out = new Set<string>();
  const visit = (p: unknown) => {
    if (!isObject(p)) return;
    for (const d of arrayOf(p['data'])) {
      if (isObject(d) && d['meaning'] === 'related' && isObject(d['reference']) && typeof d['reference']['reference'] === 'string') {
        out.add(d['reference']['reference'] as string);
      }
    }
    arrayOf(p['provision']).forEach(visit);
  };
  if (isObject(resource)) visit(resource['provision']);
  return [...out];
}

function refuseModifiers(o: Json, path: string): void {
  if (o['modifierExtension'] !== undefined) {
    throw notSupported('VLM_CONSENT_MODIFIER', 'modifier extensions are not understood', `${path}.modifierExtension`);
  }
}

function yearOf(value: string): number {
  return Number(value.slice(0, 4));
}

function asObject(value: unknown, path: string): Json {
  if (!isObject(value)) throw notSupported('VLM_CONSENT_ELEMENT', 'not a FHIR element', path);
  return value;
}

function arrayOf(value: unknown): unknown[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function businessRule(code: string, diagnostics: string, expression: string): FhirError {
  return fhirError(422, 'business-rule', code, diagnostics, [expression]);
}

function notSupported(code: string, diagnostics: string, expression: string): FhirError {
  return fhirError(422, 'not-supported', code, diagnostics, [expression]);
}
