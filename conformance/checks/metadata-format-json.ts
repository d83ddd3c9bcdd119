import type { CheckContext } from '../context.ts';

export const id = 'metadata-format-json';
export const spec = 'http://hl7.org/fhir/R4/capabilitystatement-definitions.html#CapabilityStatement.format';
export const description = 'The CapabilityStatement lists the JSON format (json or application/fhir+json)';

export async function run(ctx: CheckContext): Promise<void> {
  const statement = await ctx.capabilities();
  const formats = statement.format ?? [];
  ctx.expect.ok(
    formats.some((f) => ['json', 'application/fhir+json', 'application/json'].includes(f.split(';')[0]!.trim())),
    `CapabilityStatement.format ${JSON.stringify(formats)} does not list JSON`,
  );
}
