import type { CheckContext } from '../context.ts';
import { link, matches } from '../fhir.ts';

export const id = 'search-unknown-lenient';
export const spec = 'http://hl7.org/fhir/R4/search.html#errors';
export const description =
  'With Prefer: handling=lenient an unknown search parameter is ignored: 200, the same matches, and a self link without it';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'identifier');
  const a = (await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'female' }))).id!;
  const b = (await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }))).id!;
  const unknown = `unknown-${ctx.tag}`;
  const bundle = await ctx.search('Patient', { ...ctx.scope(), [unknown]: 'x' }, { headers: { prefer: 'handling=lenient' } });
  const ids = (await ctx.pages(bundle)).flatMap((p) => matches(p).map((e) => e.resource?.id));
  ctx.expect.sameIds(ids, [a, b], 'matches with an unknown parameter under handling=lenient');
  // The self link carries "the parameters that were actually used to process the search".
  const self = link(bundle, 'self');
  ctx.expect.ok(self, 'the searchset has no self link');
  ctx.expect.ok(!self.includes(unknown), `the self link ${self} claims the ignored parameter ${unknown} was used`);
  ctx.expect.ok(/[?&]identifier=/.test(self), `the self link ${self} omits the identifier parameter that was used`);
}
