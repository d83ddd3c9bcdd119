import type { CheckContext } from '../context.ts';
import { link, matches } from '../fhir.ts';

export const id = 'search-count-paging';
export const spec = 'http://hl7.org/fhir/R4/search.html#count';
export const description = '_count=2 limits each page to 2 matches, and next links lead through every match exactly once';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'identifier');
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push((await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }))).id!);
  const first = await ctx.search('Patient', { ...ctx.scope(), _count: '2' });
  ctx.expect.equal(matches(first).length, 2, 'matches on the first page with _count=2');
  ctx.expect.ok(link(first, 'next'), 'the first page has no next link although there are 5 matches');
  const pages = await ctx.pages(first);
  const sizes = pages.map((p) => matches(p).length);
  ctx.expect.ok(sizes.every((n) => n <= 2), `a page holds more than _count=2 matches (${sizes.join(', ')})`);
  ctx.expect.sameIds(pages.flatMap((p) => matches(p).map((e) => e.resource?.id)), ids, 'matches across the pages');
}
