import type { CheckContext } from '../context.ts';
import { queryString } from '../client.ts';

export const id = 'create-conditional-multiple-match';
export const spec = 'http://hl7.org/fhir/R4/http.html#ccreate';
export const description = 'POST with If-None-Exist matching several resources returns 412 and creates nothing';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'create', 'search-type');
  if (capability.conditionalCreate !== true) ctx.skip('the CapabilityStatement does not declare conditionalCreate for Patient');
  const a = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const b = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const res = await ctx.fetch('Patient', {
    method: 'POST',
    body: ctx.tagged({ resourceType: 'Patient', gender: 'female' }),
    headers: { 'if-none-exist': queryString(ctx.scope()) },
  });
  ctx.expect.status(res, 412);
  ctx.expect.outcome(res);
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [a.id!, b.id!], 'resources matching the condition');
}
