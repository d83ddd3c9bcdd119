import type { CheckContext } from '../context.ts';

export const id = 'search-uri';
export const spec = 'http://hl7.org/fhir/R4/search.html#uri';
export const description = 'A uri parameter matches the whole URI exactly (no prefix match)';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('ValueSet', 'url', 'identifier');
  const url = `http://example.org/fhir/ValueSet/${ctx.tag}`;
  const exact = (await ctx.create(ctx.tagged({ resourceType: 'ValueSet', status: 'draft', url }))).id!;
  await ctx.create(ctx.tagged({ resourceType: 'ValueSet', status: 'draft', url: `${url}-extended` }));
  ctx.expect.sameIds(await ctx.searchIds('ValueSet', { ...ctx.scope(), url }), [exact], `url=${url}`);
}
