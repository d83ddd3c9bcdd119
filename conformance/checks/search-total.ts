import type { CheckContext } from '../context.ts';

export const id = 'search-total';
export const spec = 'http://hl7.org/fhir/R4/search.html#total';
export const description = 'With _total=accurate, Bundle.total of a searchset is the number of matches across all pages';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'identifier');
  for (let i = 0; i < 3; i++) await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'other' }));
  const bundle = await ctx.search('Patient', { ...ctx.scope(), _total: 'accurate', _count: '2' });
  if (bundle.total === undefined) ctx.skip('the server gave no Bundle.total (permitted: _total is a request, not an obligation)');
  ctx.expect.equal(bundle.total, 3, 'Bundle.total');
}
