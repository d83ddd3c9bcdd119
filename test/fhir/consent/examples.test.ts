/**
 * The official R4 Consent examples (../shared/corpora/r4-examples/Consent), each with the verdict
 * decided by reading it. Nine of the twelve leave the root `provision.type` out (R4 says it is "not
 * permitted in root rule"), which Vellum refuses; each of those is mapped a second time with the
 * type its narrative implies, so the rest of the example is exercised too.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { CORPORA } from '../../helpers/corpora.ts';
import { FhirError } from '../../../src/fhir/errors.ts';
import { mapConsent } from '../../../src/fhir/consent/mapping.ts';
import { classBit, consentKeyer, type Rule } from '../../../src/fhir/consent/terms.ts';

const keyOf = consentKeyer(new Uint8Array(32).fill(1));
const DIR = path.join(CORPORA, 'r4-examples', 'Consent');
const secs = (y: number, mo: number, d: number, h = 0, mi = 0, s = 0) => Date.UTC(y, mo - 1, d, h, mi, s) / 1000;
const OPEN: Omit<Rule, 'permit'> = { actors: [], classes: 0n, actions: 0, purposes: 0n, start: 0, end: 0 };
const ORG = keyOf('Organization/f001');

type Verdict =
  | { put: Rule[] | true }
  | { code: string; issue: 'business-rule' | 'not-supported'; expression: string };
interface Expectation {
  reason: string;
  verdict: Verdict;
  /** For examples without a root type: the type their narrative implies, and what mapping then gives. */
  withType?: { type: 'permit' | 'deny'; reason: string; verdict: Verdict };
}

const TYPE_REQUIRED: Verdict = { code: 'VLM_CONSENT_TYPE_REQUIRED', issue: 'business-rule', expression: 'Consent.provision.type' };

const EXPECTED: Record<string, Expectation> = {
  'consent-example-Emergency': {
    reason: 'root provision has no type: R4 leaves it to policyRule (OPTOUT), which does not say permit or deny',
    verdict: TYPE_REQUIRED,
    withType: {
      type: 'deny',
      reason: 'deny Organization/f001 for ETREAT, with a deny exception naming the same organization (a subset): representable',
      verdict: { put: [{ permit: false, ...OPEN, actors: [ORG], purposes: 0b10n }, { permit: false, ...OPEN, actors: [ORG] }] },
    },
  },
  'consent-example-Out': {
    reason: 'root provision has no type',
    verdict: TYPE_REQUIRED,
    withType: { type: 'deny', reason: 'withhold from Organization/f001 (its CST role is informational)', verdict: { put: [{ permit: false, ...OPEN, actors: [ORG] }] } },
  },
  'consent-example-basic': {
    reason: 'root provision has no type (OPTIN policy, but the type is never inferred)',
    verdict: TYPE_REQUIRED,
    withType: {
      type: 'permit',
      reason: 'permit all, 1964-01-01 (before 1970: unbounded) to the last second of 2016-01-01',
      verdict: { put: [{ permit: true, ...OPEN, end: secs(2016, 1, 1, 23, 59, 59) }] },
    },
  },
  'consent-example-grantor': {
    reason: 'root provision has no type',
    verdict: TYPE_REQUIRED,
    withType: {
      type: 'permit',
      reason: 'the second actor is a Patient, which the registry cannot name as an actor',
      verdict: { code: 'VLM_CONSENT_ACTOR_TYPE', issue: 'not-supported', expression: 'Consent.provision.actor[1].reference' },
    },
  },
  'consent-example-notAuthor': {
    reason: 'root provision has no type',
    verdict: TYPE_REQUIRED,
    withType: { type: 'deny', reason: 'deny Organization/f001', verdict: { put: [{ permit: false, ...OPEN, actors: [ORG] }] } },
  },
  'consent-example-notOrg': {
    reason: 'explicit deny of access and correct to Organization/f001: fully representable',
    verdict: { put: [{ permit: false, ...OPEN, actors: [ORG], actions: 0b10001 }] },
  },
  'consent-example-notThem': {
    reason: 'root provision has no type',
    verdict: TYPE_REQUIRED,
    withType: {
      type: 'deny',
      reason: 'deny access and correct to Practitioner/f204',
      verdict: { put: [{ permit: false, ...OPEN, actors: [keyOf('Practitioner/f204')], actions: 0b10001 }] },
    },
  },
  'consent-example-notThis': {
    reason: 'provision.data names one record (Task/example3): no on-chain representation (checked before type)',
    verdict: { code: 'VLM_CONSENT_ELEMENT', issue: 'not-supported', expression: 'Consent.provision.data' },
  },
  'consent-example-notTime': {
    reason: 'root provision has no type',
    verdict: TYPE_REQUIRED,
    withType: {
      type: 'deny',
      reason: 'deny everything from 2015-01-01 to the end of 2015-02-01 (UTC days)',
      verdict: { put: [{ permit: false, ...OPEN, start: secs(2015, 1, 1), end: secs(2015, 2, 1, 23, 59, 59) }] },
    },
  },
  'consent-example-pkb': {
    reason: 'provision.securityLabel selects data by label: no on-chain representation',
    verdict: { code: 'VLM_CONSENT_ELEMENT', issue: 'not-supported', expression: 'Consent.provision.securityLabel' },
  },
  'consent-example-signature': {
    reason: 'root provision has no type',
    verdict: TYPE_REQUIRED,
    withType: {
      type: 'permit',
      reason: 'the exception selects by LOINC document code (provision.code): no on-chain representation',
      verdict: { code: 'VLM_CONSENT_ELEMENT', issue: 'not-supported', expression: 'Consent.provision.provision[0].code' },
    },
  },
  'consent-example-smartonfhir': {
    reason: 'root provision has no type',
    verdict: TYPE_REQUIRED,
    withType: {
      type: 'permit',
      reason: 'a 30-minute window (+10:00) with a permit exception: access to MedicationRequest',
      verdict: {
        put: [
          { permit: true, ...OPEN, start: secs(2016, 6, 23, 7, 2, 33), end: secs(2016, 6, 23, 7, 32, 33) },
          { permit: true, ...OPEN, actions: 0b1, classes: 1n << BigInt(classBit('MedicationRequest')!) },
        ],
      },
    },
  },
};

function examples(): Map<string, Record<string, unknown>> {
  const found = new Map<string, Record<string, unknown>>();
  for (const file of readdirSync(DIR)) {
    if (!file.endsWith('.json')) continue;
    const resource = JSON.parse(readFileSync(path.join(DIR, file), 'utf8')) as Record<string, unknown>;
    if (resource['resourceType'] === 'Consent') found.set(resource['id'] as string, resource);
  }
  return found;
}

function check(t: Test, resource: unknown, verdict: Verdict, reason: string): void {
  let result: ReturnType<typeof mapConsent> | undefined;
  let thrown: unknown;
  try {
    result = mapConsent(resource, keyOf);
  } catch (err) {
    thrown = err;
  }
  if ('put' in verdict) {
    if (thrown !== undefined || result?.action !== 'put') {
      t.fail(`${reason}: expected put, got ${thrown instanceof FhirError ? thrown.issues[0]?.vellumCode : String(thrown ?? result?.action)}`);
      return;
    }
    t.equal(result.patientRef, (resource as { patient: { reference: string } }).patient.reference, reason);
    if (verdict.put !== true) t.same(result.rules, verdict.put, reason);
    return;
  }
  if (!(thrown instanceof FhirError)) {
    t.fail(`${reason}: expected ${verdict.code}, got ${String(thrown ?? result?.action)}`);
    return;
  }
  t.equal(thrown.status, 422, reason);
  t.equal(thrown.issues[0]?.code, verdict.issue, reason);
  t.equal(thrown.issues[0]?.vellumCode, verdict.code, reason);
  t.same(thrown.issues[0]?.expression, [verdict.expression], reason);
}

t.test('every official R4 Consent example has a verdict', async (t) => {
  const found = examples();
  t.ok(found.size >= 12, `found ${found.size} examples in ${DIR}`);
  t.same([...found.keys()].sort(), Object.keys(EXPECTED).sort());
});

for (const [id, resource] of examples()) {
  const expected = EXPECTED[id];
  if (!expected) continue;
  t.test(id, async (t) => {
    check(t, resource, expected.verdict, expected.reason);
    if (expected.withType) {
      const { type, verdict, reason } = expected.withType;
      const provision = { ...(resource['provision'] as Record<string, unknown>), type };
      check(t, { ...resource, provision }, verdict, `with type ${type}: ${reason}`);
    }
    // Whatever the verdict while active, a non-active status never reads the provision.
    t.equal(mapConsent({ ...resource, status: 'inactive' }, keyOf).action, 'revoke');
    t.equal(mapConsent({ ...resource, status: 'draft' }, keyOf).action, 'none');
  });
}
