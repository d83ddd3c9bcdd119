import type { CheckContext } from '../context.ts';

export const id = 'search-token-not';
export const spec = 'http://hl7.org/fhir/R4/search.html#token';
export const description = ':not matches resources without a matching value, including those with no value at all';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'gender', 'identifier');
  await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const female = (await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'female' }))).id!;
  const none = (await ctx.create(ctx.tagged({ resourceType: 'Patient', name: [{ family: 'NoGender' }] }))).id!;
  ctx.expect.sameIds(await ctx.searchIds('Patient', { ...ctx.scope(), 'gender:not': 'male' }), [female, none], 'gender:not=male');
}
