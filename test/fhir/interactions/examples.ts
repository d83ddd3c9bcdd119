/**
 * The resource types the interaction tests cover most deeply, each with an official R4 example
 * (../shared/corpora/r4-examples, located through CORPORA) and the few type-specific facts the
 * tests need: a field to revise between versions, a way to make the resource invalid, how to
 * mark it so that conditional criteria match exactly the resources a test made, and its
 * mandatory top-level elements (kept by `_elements` / `_summary=text`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { CORPORA } from '../../helpers/corpora.ts';

export type Resource = { resourceType: string; id?: string; meta?: Record<string, unknown>; [key: string]: any };

export interface TypeCase {
  type: string;
  file: string;
  /** The official example without id and meta. */
  example(): Resource;
  /** Set a field to a value derived from `n` (so that every write differs), and read it back. */
  revise(resource: Resource, n: number): Resource;
  revision(resource: Resource): unknown;
  /** The same resource made invalid against the R4 definition. */
  invalid(resource: Resource): Resource;
  /** Mark the resource with `key`; `criteria(key)` is a search that matches exactly the marked ones. */
  mark(resource: Resource, key: string): Resource;
  criteria(key: string): string;
  /** Top-level elements with min ≥ 1 (besides resourceType/id/meta). */
  mandatory: string[];
}

export const TEST_SYSTEM = 'urn:vellum:test';

function load(type: string, file: string): Resource {
  const resource = JSON.parse(fs.readFileSync(path.join(CORPORA, 'r4-examples', type, file), 'utf8')) as Resource;
  delete resource.id;
  delete resource.meta;
  return resource;
}

const byIdentifier = {
  mark: (r: Resource, key: string) => ({ ...r, identifier: [{ system: TEST_SYSTEM, value: key }] }),
  criteria: (key: string) => `identifier=${encodeURIComponent(`${TEST_SYSTEM}|${key}`)}`,
};

function typeCase(c: Omit<TypeCase, 'example' | 'mark' | 'criteria'> & Partial<Pick<TypeCase, 'mark' | 'criteria'>>): TypeCase {
  return { ...byIdentifier, ...c, example: () => load(c.type, c.file) };
}

export const TYPE_CASES: TypeCase[] = [
  typeCase({
    type: 'Patient',
    file: 'Patient-example.json',
    revise: (r, n) => ({ ...r, name: [{ use: 'official', family: `Family${n}`, given: ['Peter'] }] }),
    revision: (r) => r.name?.[0]?.family,
    invalid: (r) => ({ ...r, gender: 'not-a-gender' }),
    mandatory: [],
  }),
  typeCase({
    type: 'Observation',
    file: 'Observation-example.json',
    revise: (r, n) => ({ ...r, valueQuantity: { value: n, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' } }),
    revision: (r) => r.valueQuantity?.value,
    invalid: (r) => ({ ...r, status: 'not-a-status' }),
    mandatory: ['status', 'code'],
  }),
  typeCase({
    type: 'MedicationRequest',
    file: 'MedicationRequest-medrx0302.json',
    revise: (r, n) => ({ ...r, note: [{ text: `note ${n}` }] }),
    revision: (r) => r.note?.[0]?.text,
    invalid: (r) => ({ ...r, intent: 42 }),
    mandatory: ['status', 'intent', 'medication', 'subject'],
  }),
  typeCase({
    type: 'Consent',
    file: 'Consent-consent-example-basic.json',
    revise: (r, n) => ({ ...r, dateTime: `${2000 + (n % 1000)}-05-11` }),
    revision: (r) => r.dateTime,
    invalid: (r) => {
      const { scope: _scope, ...rest } = r;
      return rest as Resource; // Consent.scope is 1..1
    },
    mandatory: ['status', 'scope', 'category'],
  }),
  typeCase({
    type: 'AuditEvent',
    file: 'AuditEvent-example-login.json',
    revise: (r, n) => ({ ...r, outcomeDesc: `attempt ${n}` }),
    revision: (r) => r.outcomeDesc,
    invalid: (r) => ({ ...r, recorded: 'yesterday' }),
    // AuditEvent has no identifier search parameter: mark it with a tag instead.
    mark: (r, key) => ({ ...r, meta: { tag: [{ system: TEST_SYSTEM, code: key }] } }),
    criteria: (key) => `_tag=${encodeURIComponent(`${TEST_SYSTEM}|${key}`)}`,
    mandatory: ['type', 'recorded', 'agent', 'source'],
  }),
  typeCase({
    type: 'Practitioner',
    file: 'Practitioner-example.json',
    revise: (r, n) => ({ ...r, name: [{ family: `Careful${n}`, given: ['Adam'] }] }),
    revision: (r) => r.name?.[0]?.family,
    invalid: (r) => ({ ...r, active: 'yes' }),
    mandatory: [],
  }),
  typeCase({
    type: 'Organization',
    file: 'Organization-1.json',
    revise: (r, n) => ({ ...r, name: `Gastroenterology ${n}` }),
    revision: (r) => r.name,
    invalid: (r) => ({ ...r, telecom: 'not a list' }),
    mandatory: [],
  }),
];

export const PATIENT_CASE = TYPE_CASES[0]!;

/** A minimal valid Patient. */
export function minimalPatient(family = 'Chalmers'): Resource {
  return { resourceType: 'Patient', name: [{ family, given: ['Peter'] }], gender: 'male', birthDate: '1974-12-25' };
}

export const JSON_PATCH = { 'content-type': 'application/json-patch+json' };

/** Path and query of an absolute link under the test server's base, for `s.fhir`. */
export function relative(baseUrl: string, url: string): string {
  if (!url.startsWith(`${baseUrl}/`)) throw new Error(`${url} is not under ${baseUrl}`);
  return url.slice(baseUrl.length + 1);
}
