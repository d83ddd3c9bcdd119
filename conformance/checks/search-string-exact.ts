import type { CheckContext } from '../context.ts';

export const id = 'search-string-exact';
export const spec = 'http://hl7.org/fhir/R4/search.html#string';
export const description = ':exact matches the whole string, including case and accents';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'family', 'identifier');
  const ids: Record<string, string> = {};
  for (const family of ['Aker', 'aker', 'Åker', 'Akerlund']) {
    ids[family] = (await ctx.create(ctx.tagged({ resourceType: 'Patient', name: [{ family }] }))).id!;
  }
  ctx.expect.sameIds(await ctx.searchIds('Patient', { ...ctx.scope(), 'family:exact': 'Aker' }), [ids['Aker']!], 'family:exact=Aker');
  ctx.expect.sameIds(await ctx.searchIds('Patient', { ...ctx.scope(), 'family:exact': 'Åker' }), [ids['Åker']!], 'family:exact=Åker');
}
