import type { CheckContext } from '../context.ts';

export const id = 'delete-conditional';
export const spec = 'http://hl7.org/fhir/R4/http.html#delete';
export const description = 'DELETE [base]/[type]?[criteria] matching one resource deletes it';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'delete', 'search-type');
  if (!['single', 'multiple'].includes(capability.conditionalDelete ?? 'not-supported')) {
    ctx.skip('the CapabilityStatement does not declare conditionalDelete for Patient');
  }
  const existing = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const res = await ctx.fetch(ctx.path('Patient', ctx.scope()), { method: 'DELETE' });
  ctx.expect.status(res, [200, 202, 204]);
  const read = await ctx.fetch(`Patient/${existing.id}`);
  ctx.expect.status(read, [410, 404], 'reading the conditionally deleted resource');
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [], 'resources matching the criteria after the delete');
}
