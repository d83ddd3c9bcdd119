import type { CheckContext } from '../context.ts';

export const id = 'search-string-contains';
export const spec = 'http://hl7.org/fhir/R4/search.html#string';
export const description = ':contains matches the search value anywhere in the string, ignoring case';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'family', 'identifier');
  const ids: Record<string, string> = {};
  for (const family of ['Bakerson', 'AKER', 'Ake', 'Smith']) {
    ids[family] = (await ctx.create(ctx.tagged({ resourceType: 'Patient', name: [{ family }] }))).id!;
  }
  ctx.expect.sameIds(
    await ctx.searchIds('Patient', { ...ctx.scope(), 'family:contains': 'aker' }),
    [ids['Bakerson']!, ids['AKER']!],
    'family:contains=aker',
  );
}
