import type { CheckContext } from '../context.ts';

export const id = 'search-reference';
export const spec = 'http://hl7.org/fhir/R4/search.html#reference';
export const description = 'A reference parameter matches by [type]/[id] and by bare [id]';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Observation', 'subject', 'identifier');
  const p1 = (await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }))).id!;
  const p2 = (await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'female' }))).id!;
  const observe = async (patient: string) =>
    (
      await ctx.create(
        ctx.tagged({ resourceType: 'Observation', status: 'final', code: { text: 'reference' }, subject: { reference: `Patient/${patient}` } }),
      )
    ).id!;
  const o1 = await observe(p1);
  await observe(p2);
  ctx.expect.sameIds(await ctx.searchIds('Observation', { ...ctx.scope(), subject: `Patient/${p1}` }), [o1], `subject=Patient/${p1}`);
  ctx.expect.sameIds(await ctx.searchIds('Observation', { ...ctx.scope(), subject: p1 }), [o1], `subject=${p1}`);
}
