import type { CheckContext } from '../context.ts';
import { queryString } from '../client.ts';

export const id = 'create-conditional-one-match';
export const spec = 'http://hl7.org/fhir/R4/http.html#ccreate';
export const description = 'POST with If-None-Exist matching one resource returns 200 and creates nothing';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'create', 'search-type');
  if (capability.conditionalCreate !== true) ctx.skip('the CapabilityStatement does not declare conditionalCreate for Patient');
  const existing = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const res = await ctx.fetch('Patient', {
    method: 'POST',
    body: ctx.tagged({ resourceType: 'Patient', gender: 'female' }),
    headers: { 'if-none-exist': queryString(ctx.scope()) },
  });
  ctx.expect.status(res, 200);
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [existing.id!], 'resources matching the condition');
  const read = await ctx.fetch(`Patient/${existing.id}`);
  ctx.expect.equal(ctx.expect.resource(read, 'Patient').gender, 'male', 'gender of the existing resource');
}
