/**
 * FHIR R4 resource validation.
 *
 * `createValidator()` returns a synchronous validator for resources parsed from JSON. It checks a
 * resource against the official R4 JSON schema (compiled once with ajv, with documented load-time
 * patches for the schema's known defects) and adds what the schema cannot express: primitive
 * formats and ranges, empty objects/arrays/strings, primitive-extension (`_element`) shapes,
 * base cardinality of primitive and choice elements, single `value[x]`, reference syntax,
 * contained-resource rules, the narrative rules txt-1/txt-2 on every Narrative.div (a linear-time
 * XHTML scanner, `narrative.ts`), and recursive validation of contained resources, Bundle entries
 * and Parameters resources against their own types. Issues carry a FHIRPath `expression` and a code
 * (`structure`, `required`, `value`, `invalid`, `invariant`) that map directly onto
 * OperationOutcome.issue; a resource is acceptable when no issue has severity `error`.
 * Terminology, profiles, and most invariants (FHIRPath constraints) are out of scope.
 * `R4_RESOURCE_TYPES` / `isR4ResourceType` list the 146 standard R4 resource types (no Medplum
 * or later-version types) for routing.
 */
export { createValidator } from './validator.ts';
export type { ValidationIssue, Validator } from './validator.ts';
export { R4_RESOURCE_TYPES, isR4ResourceType } from './resource-types.ts';
export { checkNarrativeDiv } from './narrative.ts';
export type { NarrativeProblem } from './narrative.ts';
