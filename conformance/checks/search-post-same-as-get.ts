import type { CheckContext } from '../context.ts';
import { queryString } from '../client.ts';
import { matches } from '../fhir.ts';

export const id = 'search-post-same-as-get';
export const spec = 'http://hl7.org/fhir/R4/http.html#search';
export const description =
  'POST [base]/Patient/_search (form body) returns the same matches, in the same order and pages, as GET with the same OR list, _sort and _count';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'gender', 'birthdate', 'identifier');
  const made = [
    ['female', '1971-01-01'],
    ['male', '1972-01-01'],
    ['other', '1973-01-01'],
    ['female', '1974-01-01'],
    ['male', '1975-01-01'],
  ];
  const ids: string[] = [];
  for (const [gender, birthDate] of made) ids.push((await ctx.create(ctx.tagged({ resourceType: 'Patient', gender, birthDate }))).id!);
  const params = { ...ctx.scope(), gender: 'female,male', _sort: '-birthdate', _count: '2' };
  const pageIds = async (first: Parameters<CheckContext['pages']>[0]) =>
    (await ctx.pages(first)).map((page) => matches(page).map((e) => e.resource?.id ?? '(no id)'));
  const byGet = await pageIds(await ctx.search('Patient', params));
  const res = await ctx.fetch('Patient/_search', {
    method: 'POST',
    body: queryString(params),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  ctx.expect.status(res, 200);
  const byPost = await pageIds(ctx.expect.bundle(res, 'searchset'));
  const expected = [ids[4]!, ids[3]!, ids[1]!, ids[0]!];
  ctx.expect.equal(byGet.flat(), expected, 'GET matches in order');
  ctx.expect.equal(byPost, byGet, 'POST _search pages, compared with GET');
}
