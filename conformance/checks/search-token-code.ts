import type { CheckContext } from '../context.ts';

export const id = 'search-token-code';
export const spec = 'http://hl7.org/fhir/R4/search.html#token';
export const description = 'A token parameter given only a code matches that code in any system (and codes on plain code elements)';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Observation', 'code', 'identifier');
  await ctx.requireSearchParam('Patient', 'gender', 'identifier');
  const make = async (coding: { system?: string; code: string }) =>
    (await ctx.create(ctx.tagged({ resourceType: 'Observation', status: 'final', code: { coding: [coding] } }))).id!;
  const loinc = await make({ system: 'http://loinc.org', code: '8867-4' });
  const snomed = await make({ system: 'http://snomed.info/sct', code: '8867-4' });
  await make({ system: 'http://loinc.org', code: '9279-1' });
  ctx.expect.sameIds(await ctx.searchIds('Observation', { ...ctx.scope(), code: '8867-4' }), [loinc, snomed], 'code=8867-4');

  const female = (await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'female' }))).id!;
  await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  ctx.expect.sameIds(await ctx.searchIds('Patient', { ...ctx.scope(), gender: 'female' }), [female], 'gender=female');
}
