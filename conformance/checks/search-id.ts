import type { CheckContext } from '../context.ts';

export const id = 'search-id';
export const spec = 'http://hl7.org/fhir/R4/search.html#id';
export const description = '_id matches the logical ids given (comma-separated values are alternatives)';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'search-type');
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }))).id!);
  ctx.expect.sameIds(await ctx.searchIds('Patient', { _id: ids[0]! }), [ids[0]!], `_id=${ids[0]}`);
  ctx.expect.sameIds(await ctx.searchIds('Patient', { _id: `${ids[0]},${ids[2]}` }), [ids[0]!, ids[2]!], `_id=${ids[0]},${ids[2]}`);
}
