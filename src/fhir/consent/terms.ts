/**
 * The vocabulary a consent is stored in on chain (docs/consent.md §Fixed enumerations): resource
 * classes, consent actions and purposes of use as bit positions, the `Rule` a contract stores, and
 * the keyed pseudonyms (`0x` + 64 hex) that stand for patients, actors and consent ids.
 *
 * Every list here is on-chain meaning: an index, once written to a chain, means that entry
 * forever. Never reorder, insert into or remove from them.
 */
import { createHmac, createSecretKey } from 'node:crypto';
import { KEY_PURPOSE, deriveKey } from '../../storage/keys.ts';
import { R4_RESOURCE_TYPES as SERVER_RESOURCE_TYPES } from '../validation/resource-types.ts';
import { TOKEN_KIND, type ConsentModel, type Rule, type TokenKind } from '../../chain/consent-registry.ts';

export { TOKEN_KIND };
export type { ConsentModel, Rule, TokenKind };

/**
 * The 146 resource types of FHIR R4 (4.0.1), sorted by code unit, so `classBit(type)` is the index
 * here: the server's own list (validation/resource-types.ts). R4 is frozen, and a test pins the
 * list's length and indices, so the bit positions cannot move.
 */
export const R4_RESOURCE_TYPES: readonly string[] = SERVER_RESOURCE_TYPES;

/** Codes of http://terminology.hl7.org/CodeSystem/consentaction, in bit order. */
export const CONSENT_ACTIONS = Object.freeze(['access', 'collect', 'use', 'disclose', 'correct'] as const);
export type ConsentAction = (typeof CONSENT_ACTIONS)[number];

/** v3 PurposeOfUse codes (system `http://terminology.hl7.org/CodeSystem/v3-ActReason`), in bit order. */
export const PURPOSES = Object.freeze([
  'TREAT', 'ETREAT', 'HPAYMT', 'HRESCH', 'PUBHLTH', 'HOPERAT', 'CAREMGT', 'PATRQT', 'FAMRQT', 'COVERAGE',
  'HMARKT', 'HDIRECT', 'HSYSADMIN', 'HTEST', 'CLINTRCH', 'HLEGAL', 'HQUALIMP', 'HCOMPL', 'HACCRED', 'HOUTCOMS',
] as const);
export type Purpose = (typeof PURPOSES)[number];

export const RESOURCE_TYPES_SYSTEM = 'http://hl7.org/fhir/resource-types';
export const CONSENT_ACTION_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentaction';
export const PURPOSE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';

/** Index of TREAT in `PURPOSES`: treatment, which an opt-out model implies. */
export const TREAT = 0;
/** Index of ETREAT in `PURPOSES`: the purpose that can break the glass. */
export const ETREAT = 1;
/** Index of HRESCH in `PURPOSES`: research, the only purpose a `research` Consent governs. */
export const HRESCH = 3;

/** Limits the contract enforces (docs/consent.md §A consent). */
export const MAX_RULES = 32;
export const MAX_RULE_ACTORS = 8;
export const MAX_RULE_TOKENS = 32;
export const MAX_ACTIVE_CONSENTS = 64;
export const MAX_REQUEST_ACTORS = 4;

/** What the contract stores for one consent: `rules[0]` is the root, the others nested in it. */
export interface ConsentTerms {
  consentId: string;
  patient: string;
  rules: Rule[];
}

const CLASS_INDEX: ReadonlyMap<string, number> = new Map(R4_RESOURCE_TYPES.map((t, i) => [t, i]));
const PURPOSE_INDEX: ReadonlyMap<string, number> = new Map(PURPOSES.map((p, i) => [p, i]));

/** Index of an R4 resource type in `R4_RESOURCE_TYPES` (its bit in `classes`); undefined for any other string. */
export function classBit(type: string): number | undefined {
  return CLASS_INDEX.get(type);
}

/** Index of a PurposeOfUse code in `PURPOSES` (its bit in `purposes`); undefined for any other code. */
export function purposeIndex(code: string): number | undefined {
  return PURPOSE_INDEX.get(code);
}

/** Index of a consentaction code in `CONSENT_ACTIONS`; undefined for any other code. */
export function actionIndex(code: string): number | undefined {
  const i = (CONSENT_ACTIONS as readonly string[]).indexOf(code);
  return i < 0 ? undefined : i;
}

/** The FHIR interactions (http://hl7.org/fhir/R4/http.html) a consent can gate. */
export type Interaction =
  | 'read'
  | 'vread'
  | 'search-type'
  | 'search-system'
  | 'search-compartment'
  | 'history-instance'
  | 'history-type'
  | 'history-system'
  | 'everything'
  | 'include'
  | 'create'
  | 'update'
  | 'patch'
  | 'delete';

const INTERACTION_ACTION: Readonly<Record<Interaction, ConsentAction>> = Object.freeze({
  read: 'access',
  vread: 'access',
  'search-type': 'access',
  'search-system': 'access',
  'search-compartment': 'access',
  'history-instance': 'access',
  'history-type': 'access',
  'history-system': 'access',
  everything: 'access',
  include: 'access',
  create: 'collect',
  update: 'correct',
  patch: 'correct',
  delete: 'correct',
});

/** The consent action an interaction performs (docs/consent.md §Fixed enumerations). */
export function actionFor(interaction: Interaction): ConsentAction {
  const action = INTERACTION_ACTION[interaction];
  if (action === undefined) throw new TypeError(`no consent action for interaction ${String(interaction)}`);
  return action;
}

/**
 * The consent keyer: `reference → 0x + hex(HMAC-SHA-256(deriveKey(masterKey, consentPseudonym), reference))`,
 * for `Patient/123`, `Practitioner/abc`, `Consent/{id}`, … (docs/consent.md §Keys). The HMAC key
 * is derived once. Raises VLM_KEY_INVALID (storage, invalid) for a master key that is not 32 bytes.
 */
export function consentKeyer(masterKey: Uint8Array): (reference: string) => string {
  const key = createSecretKey(deriveKey(masterKey, KEY_PURPOSE.consentPseudonym));
  return (reference) => {
    if (typeof reference !== 'string' || reference.length === 0) throw new TypeError('empty reference');
    return `0x${createHmac('sha256', key).update(reference, 'utf8').digest('hex')}`;
  };
}

/**
 * The token keyer: a data condition or fact as a 32-byte token whose first byte is its kind
 * (`TOKEN_KIND`) and whose other 31 are the first 31 bytes of the consent keyer's HMAC of
 * `kind:value` — `code:http://loinc.org|8867-4`, `label:http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY`,
 * `custodian:Organization/f001`, `data:dependents|ServiceRequest/lab1`, … (docs/consent.md §Keys).
 */
export function tokenKeyer(keyOf: (reference: string) => string): (kind: TokenKind, value: string) => string {
  return (kind, value) => {
    const digest = keyOf(`${kind}:${value}`);
    return `0x0${TOKEN_KIND[kind]}${digest.slice(4)}`;
  };
}

/** The bit mask of PurposeOfUse codes (unknown codes are left out; see `purposeMask`'s callers). */
export function purposeMask(codes: Iterable<string>): number {
  let mask = 0;
  for (const code of codes) {
    const i = PURPOSE_INDEX.get(code);
    if (i !== undefined) mask |= 1 << i;
  }
  return mask;
}
