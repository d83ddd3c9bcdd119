import type { CheckContext } from '../context.ts';

export const id = 'delete-not-in-search';
export const spec = 'http://hl7.org/fhir/R4/http.html#delete';
export const description = 'A deleted resource is no longer found by search';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'delete', 'search-type');
  const kept = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const deleted = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const res = await ctx.fetch(`Patient/${deleted.id}`, { method: 'DELETE' });
  ctx.expect.status(res, [200, 202, 204]);
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [kept.id!], 'search after the delete');
}
