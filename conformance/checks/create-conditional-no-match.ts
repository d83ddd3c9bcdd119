import type { CheckContext } from '../context.ts';
import { queryString } from '../client.ts';

export const id = 'create-conditional-no-match';
export const spec = 'http://hl7.org/fhir/R4/http.html#ccreate';
export const description = 'POST with If-None-Exist matching nothing creates the resource (201)';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'create', 'search-type');
  if (capability.conditionalCreate !== true) ctx.skip('the CapabilityStatement does not declare conditionalCreate for Patient');
  const res = await ctx.fetch('Patient', {
    method: 'POST',
    body: ctx.tagged({ resourceType: 'Patient', gender: 'male' }),
    headers: { 'if-none-exist': queryString(ctx.scope()) },
  });
  ctx.expect.status(res, 201);
  const id = ctx.expect.header(res, 'location').match(/Patient\/([^/]+)\/_history\//)?.[1];
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [id ?? '(id from Location)'], 'resources matching the condition');
}
