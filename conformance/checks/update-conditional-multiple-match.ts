import type { CheckContext } from '../context.ts';

export const id = 'update-conditional-multiple-match';
export const spec = 'http://hl7.org/fhir/R4/http.html#cond-update';
export const description = 'PUT [base]/[type]?[criteria] matching several resources returns 412 and changes nothing';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'update', 'search-type');
  if (capability.conditionalUpdate !== true) ctx.skip('the CapabilityStatement does not declare conditionalUpdate for Patient');
  const a = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const b = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const res = await ctx.fetch(ctx.path('Patient', ctx.scope()), {
    method: 'PUT',
    body: ctx.tagged({ resourceType: 'Patient', gender: 'female' }),
  });
  ctx.expect.status(res, 412);
  ctx.expect.outcome(res);
  ctx.expect.sameIds(await ctx.searchIds('Patient', { ...ctx.scope(), gender: 'male' }), [a.id!, b.id!], 'unchanged matches');
}
