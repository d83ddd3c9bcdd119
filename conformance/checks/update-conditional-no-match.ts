import type { CheckContext } from '../context.ts';

export const id = 'update-conditional-no-match';
export const spec = 'http://hl7.org/fhir/R4/http.html#cond-update';
export const description = 'PUT [base]/[type]?[criteria] matching nothing creates the resource (201)';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'update', 'search-type');
  if (capability.conditionalUpdate !== true) ctx.skip('the CapabilityStatement does not declare conditionalUpdate for Patient');
  const res = await ctx.fetch(ctx.path('Patient', ctx.scope()), {
    method: 'PUT',
    body: ctx.tagged({ resourceType: 'Patient', gender: 'female' }),
  });
  ctx.expect.status(res, 201);
  const ids = await ctx.searchIds('Patient', ctx.scope());
  ctx.expect.equal(ids.length, 1, 'resources matching the criteria after the conditional update');
  const read = await ctx.fetch(`Patient/${ids[0]}`);
  ctx.expect.equal(ctx.expect.resource(read, 'Patient').gender, 'female', 'gender of the created resource');
}
