import type { CheckContext } from '../context.ts';
import { link, matches } from '../fhir.ts';

export const id = 'search-paging-writes';
export const spec = 'http://hl7.org/fhir/R4/http.html#paging';
export const description =
  'next links keep returning consistent pages while others write: a match created or deleted between page requests does not repeat or skip the matches that exist throughout';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'search-type', 'delete');
  await ctx.requireSearchParam('Patient', 'identifier');
  const ids: string[] = [];
  for (let i = 0; i < 8; i++) ids.push((await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }))).id!);
  const first = await ctx.search('Patient', { ...ctx.scope(), _sort: '_id', _count: '3' });
  const served = matches(first).map((e) => e.resource?.id as string);
  ctx.expect.equal(served.length, 3, 'matches on the first page with _count=3');
  const sorted = [...ids].sort();
  // Before the second page: delete the first match not yet served, and add one.
  const victim = sorted.find((i) => !served.includes(i))!;
  const res = await ctx.fetch(`Patient/${victim}`, { method: 'DELETE' });
  ctx.expect.status(res, [200, 202, 204]);
  const added = (await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'female' }))).id!;
  ctx.expect.ok(link(first, 'next'), 'the first page has no next link although there are 8 matches');
  const pages = await ctx.pages(first);
  const seen = pages.flatMap((p) => matches(p).map((e) => e.resource?.id as string));
  ctx.expect.equal(new Set(seen).size, seen.length, `a match appears twice across the pages (${seen.join(', ')})`);
  ctx.expect.equal(
    seen.filter((i) => i !== added),
    sorted.filter((i) => i !== victim),
    'the matches that existed throughout, each once, in _id order',
  );
}
