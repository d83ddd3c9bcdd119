import type { CheckContext } from '../context.ts';

export const id = 'search-missing';
export const spec = 'http://hl7.org/fhir/R4/search.html#modifiers';
export const description = ':missing=true matches resources without a value for the parameter, :missing=false those with one';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'birthdate', 'identifier');
  const born = (await ctx.create(ctx.tagged({ resourceType: 'Patient', birthDate: '1960-01-01' }))).id!;
  const unknown = (await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'unknown' }))).id!;
  ctx.expect.sameIds(await ctx.searchIds('Patient', { ...ctx.scope(), 'birthdate:missing': 'true' }), [unknown], 'birthdate:missing=true');
  ctx.expect.sameIds(await ctx.searchIds('Patient', { ...ctx.scope(), 'birthdate:missing': 'false' }), [born], 'birthdate:missing=false');
}
