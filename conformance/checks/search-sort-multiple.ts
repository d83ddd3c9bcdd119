import type { CheckContext } from '../context.ts';

export const id = 'search-sort-multiple';
export const spec = 'http://hl7.org/fhir/R4/search.html#sort';
export const description = '_sort=family,-birthdate orders by family ascending, then birthdate descending within a family';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'family', 'birthdate', 'identifier');
  const ids: Record<string, string> = {};
  // Created in an order that neither key gives.
  for (const [family, birthDate] of [
    ['Beta', '1970-01-01'],
    ['Alpha', '1980-01-01'],
    ['Beta', '1995-01-01'],
    ['Alpha', '1990-01-01'],
  ] as const) {
    ids[`${family} ${birthDate}`] = (await ctx.create(ctx.tagged({ resourceType: 'Patient', name: [{ family }], birthDate }))).id!;
  }
  const expected = ['Alpha 1990-01-01', 'Alpha 1980-01-01', 'Beta 1995-01-01', 'Beta 1970-01-01'].map((k) => ids[k]!);
  ctx.expect.equal(await ctx.searchIds('Patient', { ...ctx.scope(), _sort: 'family,-birthdate' }), expected, 'order with _sort=family,-birthdate');
  ctx.expect.equal(
    await ctx.searchIds('Patient', { ...ctx.scope(), _sort: '-family,birthdate' }),
    [...expected].reverse(),
    'order with _sort=-family,birthdate',
  );
}
