import type { CheckContext } from '../context.ts';

export const id = 'create-parameters-refused';
export const spec = 'http://hl7.org/fhir/R4/parameters.html';
export const description =
  'Parameters is non-persisted and has no RESTful endpoint: the CapabilityStatement does not list it and POST [base]/Parameters is refused';

export async function run(ctx: CheckContext): Promise<void> {
  const statement = await ctx.capabilities();
  const listed = statement.rest?.some((r) => r.resource?.some((e) => e.type === 'Parameters'));
  ctx.expect.ok(!listed, 'the CapabilityStatement lists a Parameters endpoint');
  const res = await ctx.fetch('Parameters', {
    method: 'POST',
    body: { resourceType: 'Parameters', parameter: [{ name: 'tag', valueString: ctx.tag }] },
  });
  ctx.expect.status(res, [400, 404, 405, 422], 'as Parameters has no RESTful endpoint');
}
