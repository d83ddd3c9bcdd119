import type { CheckContext } from '../context.ts';
import { matches } from '../fhir.ts';

export const id = 'search-summary-count';
export const spec = 'http://hl7.org/fhir/R4/search.html#summary';
export const description = '_summary=count returns a searchset with total = the number of matches and no matching entries';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'identifier');
  for (let i = 0; i < 3; i++) await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const bundle = await ctx.search('Patient', { ...ctx.scope(), _summary: 'count' });
  ctx.expect.equal(bundle.total, 3, 'Bundle.total');
  ctx.expect.equal(matches(bundle).length, 0, 'matching entries returned with _summary=count');
}
