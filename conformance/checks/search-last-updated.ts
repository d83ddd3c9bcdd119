import type { CheckContext } from '../context.ts';

export const id = 'search-last-updated';
export const spec = 'http://hl7.org/fhir/R4/search.html#lastUpdated';
export const description = '_lastUpdated compares meta.lastUpdated with the gt, ge and le prefixes';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'identifier');
  const first = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  await ctx.sleep(1100); // servers may keep lastUpdated to the second
  const second = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'female' }));
  const at = first.meta!.lastUpdated!;
  const search = (prefix: string) => ctx.searchIds('Patient', { ...ctx.scope(), _lastUpdated: `${prefix}${at}` });
  ctx.expect.sameIds(await search('gt'), [second.id!], `_lastUpdated=gt${at}`);
  ctx.expect.sameIds(await search('ge'), [first.id!, second.id!], `_lastUpdated=ge${at}`);
  ctx.expect.sameIds(await search('le'), [first.id!], `_lastUpdated=le${at}`);
}
