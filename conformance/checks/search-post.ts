import type { CheckContext } from '../context.ts';
import { queryString } from '../client.ts';
import { matches } from '../fhir.ts';

export const id = 'search-post';
export const spec = 'http://hl7.org/fhir/R4/http.html#search';
export const description = 'POST [base]/[type]/_search with form-encoded parameters returns the same matches as the GET search';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'gender', 'identifier');
  const female = (await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'female' }))).id!;
  await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const params = { ...ctx.scope(), gender: 'female' };
  ctx.expect.sameIds(await ctx.searchIds('Patient', params), [female], 'GET search');
  const res = await ctx.fetch('Patient/_search', {
    method: 'POST',
    body: queryString(params),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  ctx.expect.status(res, 200);
  const bundle = ctx.expect.bundle(res, 'searchset');
  const ids = (await ctx.pages(bundle)).flatMap((p) => matches(p).map((e) => e.resource?.id));
  ctx.expect.sameIds(ids, [female], 'POST _search');
}
