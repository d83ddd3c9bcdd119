import type { CheckContext } from '../context.ts';

export const id = 'search-date-precision';
export const spec = 'http://hl7.org/fhir/R4/search.html#date';
export const description =
  'A date search value stands for the whole period of its precision: birthdate=1980 matches the year, eq1980-05 the month, 1980-05-15 the day';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'birthdate', 'identifier');
  const ids: Record<string, string> = {};
  for (const birthDate of ['1979-12-31', '1980-05-15', '1980-12-31', '1981-01-01']) {
    ids[birthDate] = (await ctx.create(ctx.tagged({ resourceType: 'Patient', birthDate }))).id!;
  }
  const search = (birthdate: string) => ctx.searchIds('Patient', { ...ctx.scope(), birthdate });
  ctx.expect.sameIds(await search('1980'), [ids['1980-05-15']!, ids['1980-12-31']!], 'birthdate=1980');
  ctx.expect.sameIds(await search('eq1980-05'), [ids['1980-05-15']!], 'birthdate=eq1980-05');
  ctx.expect.sameIds(await search('1980-05-15'), [ids['1980-05-15']!], 'birthdate=1980-05-15');
  ctx.expect.sameIds(await search('eq1981-01-01'), [ids['1981-01-01']!], 'birthdate=eq1981-01-01');
}
