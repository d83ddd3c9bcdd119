import type { CheckContext } from '../context.ts';

export const id = 'metadata-fhir-version';
export const spec = 'http://hl7.org/fhir/R4/capabilitystatement-definitions.html#CapabilityStatement.fhirVersion';
export const description = 'The CapabilityStatement declares fhirVersion 4.0.1 (FHIR R4)';

export async function run(ctx: CheckContext): Promise<void> {
  const statement = await ctx.capabilities();
  ctx.expect.equal(statement.fhirVersion, '4.0.1', 'CapabilityStatement.fhirVersion');
}
