/**
 * FHIR R4 Consent → the terms the consent registry stores (docs/consent.md §A consent).
 *
 * `mapConsent` turns one Consent into a registry action, or refuses it with a 422 whose issue
 * names the offending element (FHIRPath `expression`) and a `VLM_CONSENT_*` code. It never drops
 * meaning: an element that would change who may do what, and that the registry cannot hold, is
 * refused rather than ignored.
 *
 * What is read, and how (http://hl7.org/fhir/R4/consent.html):
 *
 * - `status`: `active` → put; `inactive`, `rejected`, `entered-in-error` → revoke; `draft`,
 *   `proposed` → none (this version puts nothing in force; if an earlier version of the same
 *   Consent was put, revoking it is the caller's business: the mapping knows no history).
 * - `scope` must carry `consentscope|patient-privacy` (and no other consentscope code), and
 *   `patient` must be a relative `Patient/{id}` reference. Both are checked for every status: a
 *   Consent that fails them never belongs in the registry, so neither does its revocation.
 * - `provision` is checked only for `active`. It is required (a Consent with only a policy has
 *   nothing the registry can enforce). The root provision is `rules[0]`; its nested provisions
 *   (one level, at most 8) are `rules[1..]`.
 * - `provision.type` is required in the root and in every exception. R4 says "not permitted in root
 *   rule" and leaves the root's effect to `policyRule`, but the registry's base rule needs a
 *   permit/deny, and the official examples show OPTIN/OPTOUT do not determine it (consent-example-
 *   notTime is OPTIN and withholds; consent-example-grantor is OPTOUT and grants), so Vellum asks
 *   for it explicitly rather than guessing.
 * - `provision.actor[].reference`: relative `Practitioner|PractitionerRole|Organization|
 *   RelatedPerson|Device/{id}`; at most 8 distinct actors per rule (duplicates are merged).
 *   `actor.role` is informational (not stored).
 * - `provision.class` (system `http://hl7.org/fhir/resource-types`, R4 types), `provision.action`
 *   (consentaction; other codings in the same CodeableConcept are taken as translations),
 *   `provision.purpose` (v3-ActReason codes in `PURPOSES`): bitmasks.
 * - `provision.period`: `start` is the first second of its precision, `end` the last (a date-only
 *   value is a UTC day, since it carries no zone). A start before 1970 becomes 0 (unbounded, which
 *   is the same for every possible request time); an end at or before 1970-01-01T00:00:00Z cannot be
 *   stored (0 means unbounded) and is refused.
 * - Nesting is narrowing: R4 nested provisions are exceptions *within* their parent, while the
 *   registry replaces a field an exception states (and inherits one it leaves out). The two agree
 *   only when each stated field of an exception lies within the base's (classes, actions,
 *   purposes and actors a subset, period inside), so a wider exception is refused.
 *
 * Not read, because they do not change what the registry decides: `identifier`, `category`,
 * `dateTime`, `performer`, `organization`, `sourceAttachment` / `sourceReference` (the record of
 * the agreement, not its terms), `verification` (whether it was confirmed, not what it says),
 * `policy` and `policyRule` (the regulatory basis; Vellum's base policy is fixed: no permitting
 * consent means no access, which is never wider than an opt-in or opt-out base), `text`,
 * `contained`, `extension`, `actor.role`. Refused wherever they occur: `modifierExtension` and
 * `implicitRules` (they change meaning by definition), `provision.data`, `.securityLabel`,
 * `.code`, `.dataPeriod` and any element this module does not know.
 *
 * Errors (all 422). `business-rule` when something required is missing, a limit is exceeded or
 * values contradict: VLM_CONSENT_STATUS, VLM_CONSENT_PATIENT_REQUIRED,
 * VLM_CONSENT_PROVISION_REQUIRED, VLM_CONSENT_TYPE_REQUIRED, VLM_CONSENT_TOO_MANY_EXCEPTIONS,
 * VLM_CONSENT_TOO_MANY_ACTORS, VLM_CONSENT_PERIOD, VLM_CONSENT_EXCEPTION_WIDENS. `not-supported`
 * when the Consent states something the registry cannot hold: VLM_CONSENT_SCOPE,
 * VLM_CONSENT_PATIENT_REFERENCE, VLM_CONSENT_TYPE, VLM_CONSENT_ACTOR_REFERENCE,
 * VLM_CONSENT_ACTOR_TYPE, VLM_CONSENT_CLASS, VLM_CONSENT_ACTION, VLM_CONSENT_PURPOSE,
 * VLM_CONSENT_ELEMENT, VLM_CONSENT_NESTING, VLM_CONSENT_MODIFIER.
 */
import { dateRange } from '../dates.ts';
import { fhirError, type FhirError } from '../errors.ts';
import {
  CONSENT_ACTION_SYSTEM,
  MAX_EXCEPTIONS,
  MAX_RULE_ACTORS,
  PURPOSE_SYSTEM,
  RESOURCE_TYPES_SYSTEM,
  actionIndex,
  classBit,
  purposeIndex,
  type Rule,
} from './terms.ts';

export type ConsentMapping =
  | { action: 'put'; consentId: string; patient: string; patientRef: string; rules: Rule[] }
  | { action: 'revoke'; consentId: string }
  | { action: 'none'; consentId: string };

export const CONSENT_SCOPE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentscope';
const ACTOR_TYPES: ReadonlySet<string> = new Set(['Practitioner', 'PractitionerRole', 'Organization', 'RelatedPerson', 'Device']);
const RELATIVE_REFERENCE = /^([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/;

/** Provision elements: what each is, for the registry. */
const PROVISION_ELEMENTS: Readonly<Record<string, 'read' | 'ignore' | 'refuse'>> = {
  id: 'ignore',
  extension: 'ignore',
  _type: 'ignore',
  type: 'read',
  period: 'read',
  actor: 'read',
  action: 'read',
  purpose: 'read',
  class: 'read',
  provision: 'read',
  securityLabel: 'refuse',
  code: 'refuse',
  dataPeriod: 'refuse',
  data: 'refuse',
};
const ACTOR_ELEMENTS: ReadonlySet<string> = new Set(['id', 'extension', 'role', 'reference']);

type Json = Record<string, unknown>;

/**
 * Map a Consent to a registry action (docs/consent.md §A consent; see the module comment for
 * every rule). `keyOf` is a `consentKeyer`; `id` defaults to `resource.id` (pass it when create
 * has just assigned one). Raises 422 `business-rule` / `not-supported` with a VLM_CONSENT_* code.
 */
export function mapConsent(resource: unknown, keyOf: (reference: string) => string, id?: string): ConsentMapping {
  if (!isObject(resource) || resource['resourceType'] !== 'Consent') throw new TypeError('mapConsent needs a Consent');
  const consentKeyId = id ?? resource['id'];
  if (typeof consentKeyId !== 'string' || consentKeyId === '') throw new TypeError('mapConsent needs the Consent id');
  const consentId = keyOf(`Consent/${consentKeyId}`);

  refuseModifiers(resource, 'Consent');
  if (resource['implicitRules'] !== undefined) {
    throw notSupported('VLM_CONSENT_MODIFIER', 'implicitRules may change the meaning of the consent', 'Consent.implicitRules');
  }
  const status = resource['status'];
  checkScope(resource['scope']);
  const patientRef = patientReference(resource['patient']);

  switch (status) {
    case 'draft':
    case 'proposed':
      return { action: 'none', consentId };
    case 'inactive':
    case 'rejected':
    case 'entered-in-error':
      return { action: 'revoke', consentId };
    case 'active':
      break;
    default:
      throw businessRule('VLM_CONSENT_STATUS', 'Consent.status must be an R4 consent-state-codes code', 'Consent.status');
  }

  const root = resource['provision'];
  if (root === undefined) {
    throw businessRule('VLM_CONSENT_PROVISION_REQUIRED', 'an active Consent needs a provision to enforce', 'Consent.provision');
  }
  const base = rule(root, 'Consent.provision', keyOf);
  const rules = [base];
  const nested = arrayOf(asObject(root, 'Consent.provision')['provision']);
  if (nested.length > MAX_EXCEPTIONS) {
    throw businessRule('VLM_CONSENT_TOO_MANY_EXCEPTIONS', `at most ${MAX_EXCEPTIONS} nested provisions`, 'Consent.provision.provision');
  }
  nested.forEach((p, i) => {
    const path = `Consent.provision.provision[${i}]`;
    if (arrayOf(asObject(p, path)['provision']).length > 0) {
      throw notSupported('VLM_CONSENT_NESTING', 'provisions nest one level only', `${path}.provision`);
    }
    const exception = rule(p, path, keyOf);
    checkNarrows(base, exception, path);
    rules.push(exception);
  });
  return { action: 'put', consentId, patient: keyOf(patientRef), patientRef, rules };
}

function checkScope(scope: unknown): void {
  const codings = isObject(scope) ? arrayOf(scope['coding']) : [];
  const scopes = codings.filter((c) => isObject(c) && c['system'] === CONSENT_SCOPE_SYSTEM) as Json[];
  if (scopes.length === 0 || scopes.some((c) => c['code'] !== 'patient-privacy')) {
    throw notSupported('VLM_CONSENT_SCOPE', 'only patient-privacy consents are enforced', 'Consent.scope');
  }
}

function patientReference(patient: unknown): string {
  if (patient === undefined) throw businessRule('VLM_CONSENT_PATIENT_REQUIRED', 'a privacy consent names its patient', 'Consent.patient');
  const ref = isObject(patient) ? patient['reference'] : undefined;
  const m = typeof ref === 'string' ? RELATIVE_REFERENCE.exec(ref) : null;
  if (!m || m[1] !== 'Patient' || (isObject(patient) && patient['type'] !== undefined && patient['type'] !== 'Patient')) {
    throw notSupported('VLM_CONSENT_PATIENT_REFERENCE', 'Consent.patient must be a relative Patient/{id} reference', 'Consent.patient');
  }
  return ref as string;
}

/** One provision (without its nested provisions) as a Rule, fields as written. */
function rule(value: unknown, path: string, keyOf: (reference: string) => string): Rule {
  const p = asObject(value, path);
  refuseModifiers(p, path);
  for (const key of Object.keys(p)) {
    const kind = PROVISION_ELEMENTS[key];
    if (kind === 'refuse' || kind === undefined) {
      throw notSupported('VLM_CONSENT_ELEMENT', `${key} has no representation in the consent registry`, `${path}.${key}`);
    }
  }
  const type = p['type'];
  if (type === undefined) throw businessRule('VLM_CONSENT_TYPE_REQUIRED', 'state permit or deny', `${path}.type`);
  if (type !== 'permit' && type !== 'deny') throw notSupported('VLM_CONSENT_TYPE', 'type is permit or deny', `${path}.type`);
  return {
    permit: type === 'permit',
    actors: actors(p['actor'], `${path}.actor`, keyOf),
    classes: classes(p['class'], `${path}.class`),
    actions: actions(p['action'], `${path}.action`),
    purposes: purposes(p['purpose'], `${path}.purpose`),
    ...period(p['period'], `${path}.period`),
  };
}

function actors(value: unknown, path: string, keyOf: (reference: string) => string): string[] {
  const keys = new Set<string>();
  arrayOf(value).forEach((a, i) => {
    const at = `${path}[${i}]`;
    const actor = asObject(a, at);
    refuseModifiers(actor, at);
    for (const key of Object.keys(actor)) {
      if (!ACTOR_ELEMENTS.has(key)) throw notSupported('VLM_CONSENT_ELEMENT', `${key} has no representation in the consent registry`, `${at}.${key}`);
    }
    const reference = actor['reference'];
    const ref = isObject(reference) ? reference['reference'] : undefined;
    const m = typeof ref === 'string' ? RELATIVE_REFERENCE.exec(ref) : null;
    if (!m) throw notSupported('VLM_CONSENT_ACTOR_REFERENCE', 'an actor is a relative reference Type/{id}', `${at}.reference`);
    if (!ACTOR_TYPES.has(m[1]!)) {
      throw notSupported('VLM_CONSENT_ACTOR_TYPE', 'an actor is a Practitioner, PractitionerRole, Organization, RelatedPerson or Device', `${at}.reference`);
    }
    const declared = (reference as Json)['type'];
    if (declared !== undefined && declared !== m[1]) {
      throw notSupported('VLM_CONSENT_ACTOR_REFERENCE', 'Reference.type contradicts the reference', `${at}.reference.type`);
    }
    keys.add(keyOf(ref as string));
  });
  if (keys.size > MAX_RULE_ACTORS) throw businessRule('VLM_CONSENT_TOO_MANY_ACTORS', `at most ${MAX_RULE_ACTORS} actors per provision`, path);
  return [...keys];
}

function classes(value: unknown, path: string): bigint {
  let mask = 0n;
  arrayOf(value).forEach((c, i) => {
    const bit = isObject(c) && c['system'] === RESOURCE_TYPES_SYSTEM && typeof c['code'] === 'string' ? classBit(c['code']) : undefined;
    if (bit === undefined) throw notSupported('VLM_CONSENT_CLASS', `class is an R4 resource type of ${RESOURCE_TYPES_SYSTEM}`, `${path}[${i}]`);
    mask |= 1n << BigInt(bit);
  });
  return mask;
}

function actions(value: unknown, path: string): number {
  let mask = 0;
  arrayOf(value).forEach((cc, i) => {
    const codes = new Set(
      (isObject(cc) ? arrayOf(cc['coding']) : []).filter((c) => isObject(c) && c['system'] === CONSENT_ACTION_SYSTEM).map((c) => (c as Json)['code']),
    );
    const code = codes.size === 1 ? [...codes][0] : undefined;
    const bit = typeof code === 'string' ? actionIndex(code) : undefined;
    if (bit === undefined) throw notSupported('VLM_CONSENT_ACTION', `action is one code of ${CONSENT_ACTION_SYSTEM}`, `${path}[${i}]`);
    mask |= 1 << bit;
  });
  return mask;
}

function purposes(value: unknown, path: string): bigint {
  let mask = 0n;
  arrayOf(value).forEach((c, i) => {
    const bit = isObject(c) && c['system'] === PURPOSE_SYSTEM && typeof c['code'] === 'string' ? purposeIndex(c['code']) : undefined;
    if (bit === undefined) throw notSupported('VLM_CONSENT_PURPOSE', `purpose is a supported code of ${PURPOSE_SYSTEM}`, `${path}[${i}]`);
    mask |= 1n << BigInt(bit);
  });
  return mask;
}

function period(value: unknown, path: string): { start: number; end: number } {
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

/** Refuse an exception that states a field wider than its base (see the module comment). */
function checkNarrows(base: Rule, e: Rule, path: string): void {
  const widens = (element: string) =>
    businessRule('VLM_CONSENT_EXCEPTION_WIDENS', `${element} of an exception must lie within the base provision's`, `${path}.${element}`);
  if (e.classes !== 0n && base.classes !== 0n && (e.classes & ~base.classes) !== 0n) throw widens('class');
  if (e.actions !== 0 && base.actions !== 0 && (e.actions & ~base.actions) !== 0) throw widens('action');
  if (e.purposes !== 0n && base.purposes !== 0n && (e.purposes & ~base.purposes) !== 0n) throw widens('purpose');
  if (e.actors.length > 0 && base.actors.length > 0 && e.actors.some((a) => !base.actors.includes(a))) throw widens('actor');
  if (e.start !== 0 && base.start !== 0 && e.start < base.start) throw widens('period.start');
  // A stated start after the base's end (or end before its start) leaves an exception that never
  // matches, which is also what R4 nesting means: accepted.
  if (e.end !== 0 && base.end !== 0 && e.end > base.end) throw widens('period.end');
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
