import type { CheckContext } from '../context.ts';
import { entryVersion, link } from '../fhir.ts';

export const id = 'history-count-paging';
export const spec = 'http://hl7.org/fhir/R4/http.html#paging';
export const description =
  '_history?_count=1 pages the history one version per page through next links, keeping _count, newest first';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'history-instance', 'update');
  const v1 = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const v2 = await ctx.update({ ...v1, gender: 'female' });
  const v3 = await ctx.update({ ...v2, gender: 'other' });
  const res = await ctx.fetch(`Patient/${v1.id}/_history?_count=1`);
  ctx.expect.status(res, 200);
  const first = ctx.expect.bundle(res, 'history');
  ctx.expect.equal(first.entry?.length ?? 0, 1, 'entries on the first page with _count=1');
  ctx.expect.ok(link(first, 'next'), 'the first page has no next link although more versions exist');
  const pages = await ctx.pages(first);
  ctx.expect.ok(
    pages.every((p) => (p.entry?.length ?? 0) <= 1),
    `a page holds more than _count=1 entries (${pages.map((p) => p.entry?.length ?? 0).join(', ')})`,
  );
  ctx.expect.equal(
    pages.flatMap((p) => p.entry ?? []).map(entryVersion),
    [v3, v2, v1].map((v) => v.meta?.versionId),
    'versions across the pages',
  );
}
