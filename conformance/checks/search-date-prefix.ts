import type { CheckContext } from '../context.ts';

export const id = 'search-date-prefix';
export const spec = 'http://hl7.org/fhir/R4/search.html#prefix';
export const description = 'Date prefixes ge, gt, le and lt compare against the period of the search value';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'birthdate', 'identifier');
  const ids: Record<string, string> = {};
  for (const birthDate of ['1979-12-31', '1980-05-15', '1980-12-31', '1981-01-01']) {
    ids[birthDate] = (await ctx.create(ctx.tagged({ resourceType: 'Patient', birthDate }))).id!;
  }
  const search = (birthdate: string | string[]) => ctx.searchIds('Patient', { ...ctx.scope(), birthdate });
  const pick = (...dates: string[]) => dates.map((d) => ids[d]!);
  ctx.expect.sameIds(await search('ge1980-05-15'), pick('1980-05-15', '1980-12-31', '1981-01-01'), 'birthdate=ge1980-05-15');
  ctx.expect.sameIds(await search('lt1980-05-15'), pick('1979-12-31'), 'birthdate=lt1980-05-15');
  ctx.expect.sameIds(await search('gt1980'), pick('1981-01-01'), 'birthdate=gt1980');
  ctx.expect.sameIds(await search('le1980'), pick('1979-12-31', '1980-05-15', '1980-12-31'), 'birthdate=le1980');
  ctx.expect.sameIds(await search(['ge1980', 'lt1980-06']), pick('1980-05-15'), 'birthdate=ge1980&birthdate=lt1980-06');
}
