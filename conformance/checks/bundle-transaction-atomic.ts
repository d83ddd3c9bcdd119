import type { CheckContext } from '../context.ts';

export const id = 'bundle-transaction-atomic';
export const spec = 'http://hl7.org/fhir/R4/http.html#transaction';
export const description =
  'a transaction with one invalid entry fails as a whole (4xx OperationOutcome): neither its creates nor its updates are stored';

export async function run(ctx: CheckContext): Promise<void> {
  const statement = await ctx.capabilities();
  const rest = statement.rest?.find((r) => r.mode === 'server') ?? statement.rest?.[0];
  if (!rest?.interaction?.some((i) => i.code === 'transaction')) ctx.skip('the CapabilityStatement lists no transaction interaction');
  await ctx.requireSearchParam('Patient', 'identifier');
  const existing = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }, `${ctx.tag}old`));
  const transaction = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      { resource: ctx.tagged({ resourceType: 'Patient', gender: 'female' }), request: { method: 'POST', url: 'Patient' } },
      { resource: { ...existing, gender: 'female' }, request: { method: 'PUT', url: `Patient/${existing.id}` } },
      { resource: ctx.tagged({ resourceType: 'Patient', gender: 'other' }), request: { method: 'POST', url: 'Patient' } },
      // Breaks R4 rules (birthDate is not a date): the whole transaction must fail.
      { resource: ctx.tagged({ resourceType: 'Patient', birthDate: 'not-a-date' }), request: { method: 'POST', url: 'Patient' } },
    ],
  };
  const res = await ctx.fetch('', { method: 'POST', body: transaction });
  ctx.expect.ok(res.status >= 400 && res.status < 500, `${ctx.expect.describe(res)}, expected a 4xx for a transaction with an invalid entry`);
  ctx.expect.outcome(res);
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [], 'Patients created by the failed transaction');
  const read = await ctx.fetch(`Patient/${existing.id}`);
  ctx.expect.status(read, 200);
  const after = ctx.expect.resource(read, 'Patient');
  ctx.expect.equal(after.gender, 'male', 'gender of the Patient the failed transaction updated');
  ctx.expect.equal(after.meta?.versionId, existing.meta?.versionId, 'its versionId');
}
