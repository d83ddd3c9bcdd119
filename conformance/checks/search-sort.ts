import type { CheckContext } from '../context.ts';

export const id = 'search-sort';
export const spec = 'http://hl7.org/fhir/R4/search.html#sort';
export const description = '_sort=birthdate orders matches ascending, _sort=-birthdate descending';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'birthdate', 'identifier');
  const ids: Record<string, string> = {};
  for (const birthDate of ['1990-01-01', '1970-01-01', '1980-01-01']) {
    ids[birthDate] = (await ctx.create(ctx.tagged({ resourceType: 'Patient', birthDate }))).id!;
  }
  const ascending = ['1970-01-01', '1980-01-01', '1990-01-01'].map((d) => ids[d]);
  ctx.expect.equal(await ctx.searchIds('Patient', { ...ctx.scope(), _sort: 'birthdate' }), ascending, 'order with _sort=birthdate');
  ctx.expect.equal(
    await ctx.searchIds('Patient', { ...ctx.scope(), _sort: '-birthdate' }),
    [...ascending].reverse(),
    'order with _sort=-birthdate',
  );
}
