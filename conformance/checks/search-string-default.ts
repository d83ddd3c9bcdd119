import type { CheckContext } from '../context.ts';

export const id = 'search-string-default';
export const spec = 'http://hl7.org/fhir/R4/search.html#string';
export const description =
  'A string parameter matches values that equal or start with the search value, ignoring case and accents';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'family', 'identifier');
  const ids: Record<string, string> = {};
  for (const family of ['Åkerlund', 'akerman', 'AKER', 'Bäker', 'Ak']) {
    ids[family] = (await ctx.create(ctx.tagged({ resourceType: 'Patient', name: [{ family }] }))).id!;
  }
  const expected = [ids['Åkerlund']!, ids['akerman']!, ids['AKER']!];
  ctx.expect.sameIds(await ctx.searchIds('Patient', { ...ctx.scope(), family: 'aker' }), expected, 'family=aker');
  ctx.expect.sameIds(await ctx.searchIds('Patient', { ...ctx.scope(), family: 'ÅKER' }), expected, 'family=ÅKER');
}
