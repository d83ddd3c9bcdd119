import type { CheckContext } from '../context.ts';

export const id = 'search-unknown-strict';
export const spec = 'http://hl7.org/fhir/R4/search.html#errors';
export const description = 'With Prefer: handling=strict an unknown search parameter is an error: 400 with an OperationOutcome';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'identifier');
  await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'female' }));
  const res = await ctx.fetch(ctx.path('Patient', { ...ctx.scope(), [`unknown-${ctx.tag}`]: 'x' }), {
    headers: { prefer: 'handling=strict' },
  });
  ctx.expect.status(res, 400);
  ctx.expect.outcome(res);
}
