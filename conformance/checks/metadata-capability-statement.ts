import type { CheckContext } from '../context.ts';

export const id = 'metadata-capability-statement';
export const spec = 'http://hl7.org/fhir/R4/http.html#capabilities';
export const description =
  'GET [base]/metadata returns 200 with a CapabilityStatement carrying its required elements and a rest entry in server mode';

export async function run(ctx: CheckContext): Promise<void> {
  const res = await ctx.fetch('metadata');
  ctx.expect.status(res, 200);
  const statement = ctx.expect.resource(res, 'CapabilityStatement');
  // http://hl7.org/fhir/R4/capabilitystatement.html: status, date, kind, fhirVersion and format are 1..1 / 1..*.
  for (const element of ['status', 'date', 'kind', 'fhirVersion']) {
    ctx.expect.ok(typeof statement[element] === 'string' && statement[element] !== '', `CapabilityStatement.${element} is missing`);
  }
  ctx.expect.ok(Array.isArray(statement.format) && statement.format.length > 0, 'CapabilityStatement.format is missing');
  const rest = statement.rest as { mode?: string }[] | undefined;
  ctx.expect.ok(rest?.some((r) => r.mode === 'server'), 'CapabilityStatement.rest has no entry with mode "server"');
}
