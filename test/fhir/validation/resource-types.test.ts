import t from 'tap';
import { R4_RESOURCE_TYPES, isR4ResourceType } from '../../../src/fhir/validation/resource-types.ts';
import { loadOfficialR4Schema } from '../../../src/fhir/validation/validator.ts';

t.test('R4_RESOURCE_TYPES is the discriminator list of the official R4 schema', async (t) => {
  const schema = loadOfficialR4Schema();
  const mapping = Object.keys(schema.discriminator?.mapping ?? {});
  t.same([...R4_RESOURCE_TYPES], mapping);
  t.equal(R4_RESOURCE_TYPES.length, 146, 'the 146 concrete R4 resource types');
  t.equal(new Set(R4_RESOURCE_TYPES).size, R4_RESOURCE_TYPES.length, 'no duplicates');
  t.ok(Object.isFrozen(R4_RESOURCE_TYPES));
});

t.test('isR4ResourceType', async (t) => {
  for (const type of ['Patient', 'Observation', 'Bundle', 'Parameters', 'Binary', 'OperationOutcome', 'SubstanceSourceMaterial', 'CatalogEntry']) {
    t.ok(isR4ResourceType(type), type);
  }
  // Medplum's own types, abstract types, R4B/R5 types, wrong case
  for (const type of ['Project', 'Bot', 'ClientApplication', 'User', 'SubscriptionStatus', 'Resource', 'DomainResource', 'patient', 'PATIENT', '', 'Patient ', 'HumanName']) {
    t.notOk(isR4ResourceType(type), JSON.stringify(type));
  }
});
