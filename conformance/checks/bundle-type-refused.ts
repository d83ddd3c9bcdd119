import type { CheckContext } from '../context.ts';

export const id = 'bundle-type-refused';
export const spec = 'http://hl7.org/fhir/R4/http.html#transaction';
export const description = 'POST [base] with a Bundle that is neither batch nor transaction (collection) is refused with a 4xx OperationOutcome, storing nothing';

export async function run(ctx: CheckContext): Promise<void> {
  const statement = await ctx.capabilities();
  const rest = statement.rest?.find((r) => r.mode === 'server') ?? statement.rest?.[0];
  if (!rest?.interaction?.some((i) => i.code === 'transaction' || i.code === 'batch')) ctx.skip('the CapabilityStatement lists no batch or transaction interaction');
  await ctx.requireSearchParam('Patient', 'identifier');
  const collection = {
    resourceType: 'Bundle',
    type: 'collection',
    entry: [{ resource: ctx.tagged({ resourceType: 'Patient', gender: 'female' }), request: { method: 'POST', url: 'Patient' } }],
  };
  const res = await ctx.fetch('', { method: 'POST', body: collection });
  ctx.expect.ok(res.status >= 400 && res.status < 500, `${ctx.expect.describe(res)}, expected a 4xx for a collection Bundle posted to the base`);
  ctx.expect.outcome(res);
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [], 'Patients stored from the refused Bundle');
}
