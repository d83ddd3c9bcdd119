import type { CheckContext } from '../context.ts';

export const id = 'search-chain';
export const spec = 'http://hl7.org/fhir/R4/search.html#chaining';
export const description = 'Observation?subject:Patient.family=X finds the Observations whose subject Patient has family X';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Observation', 'identifier', 'subject');
  await ctx.requireSearchParam('Patient', 'family');
  const family = `Chain${ctx.tag}`;
  const wanted = await ctx.create(ctx.tagged({ resourceType: 'Patient', name: [{ family }] }, `${ctx.tag}p`));
  const other = await ctx.create(ctx.tagged({ resourceType: 'Patient', name: [{ family: `${family}Other` }] }, `${ctx.tag}p`));
  const observation = async (subject: string) =>
    (await ctx.create(ctx.tagged({ resourceType: 'Observation', status: 'final', code: { text: 'chain' }, subject: { reference: `Patient/${subject}` } }))).id!;
  const hit = await observation(wanted.id!);
  await observation(other.id!);
  const res = await ctx.fetch(ctx.path('Observation', { ...ctx.scope(), 'subject:Patient.family:exact': family }));
  if (res.status === 400 || res.status === 501) ctx.skip(`the server rejects chained parameters (${res.status})`);
  ctx.expect.sameIds(await ctx.searchIds('Observation', { ...ctx.scope(), 'subject:Patient.family:exact': family }), [hit], 'subject:Patient.family:exact');
  ctx.expect.sameIds(await ctx.searchIds('Observation', { ...ctx.scope(), 'subject:Patient.family': `${family}Nobody` }), [], 'a chain matching no patient');
}
