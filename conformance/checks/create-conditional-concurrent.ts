import type { CheckContext } from '../context.ts';
import { queryString } from '../client.ts';

export const id = 'create-conditional-concurrent';
export const spec = 'http://hl7.org/fhir/R4/http.html#ccreate';
export const description =
  'Several concurrent POSTs with the same If-None-Exist create exactly one resource (the others see it: 200)';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'create', 'search-type');
  if (capability.conditionalCreate !== true) ctx.skip('the CapabilityStatement does not declare conditionalCreate for Patient');
  const responses = await Promise.all(
    Array.from({ length: 6 }, () =>
      ctx.fetch('Patient', {
        method: 'POST',
        body: ctx.tagged({ resourceType: 'Patient', gender: 'female' }),
        headers: { 'if-none-exist': queryString(ctx.scope()) },
      }),
    ),
  );
  const statuses = responses.map((r) => r.status);
  ctx.expect.ok(statuses.filter((s) => s === 201).length === 1, `statuses ${statuses.join(', ')}: expected exactly one 201`);
  ctx.expect.ok(statuses.every((s) => [200, 201, 409, 412].includes(s)), `statuses ${statuses.join(', ')}: the others must see the match`);
  ctx.expect.equal((await ctx.searchIds('Patient', ctx.scope())).length, 1, 'resources matching the condition');
}
