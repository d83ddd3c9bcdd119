import type { CheckContext } from '../context.ts';

export const id = 'bundle-batch-independent';
export const spec = 'http://hl7.org/fhir/R4/http.html#transaction';
export const description =
  'batch entries succeed or fail on their own: a batch-response (200) with one entry per request in order, failures with their own status, the rest stored';

export async function run(ctx: CheckContext): Promise<void> {
  const statement = await ctx.capabilities();
  const rest = statement.rest?.find((r) => r.mode === 'server') ?? statement.rest?.[0];
  if (!rest?.interaction?.some((i) => i.code === 'batch')) ctx.skip('the CapabilityStatement lists no batch interaction');
  await ctx.requireSearchParam('Patient', 'identifier');
  const batch = {
    resourceType: 'Bundle',
    type: 'batch',
    entry: [
      { resource: ctx.tagged({ resourceType: 'Patient', gender: 'female' }), request: { method: 'POST', url: 'Patient' } },
      { resource: ctx.tagged({ resourceType: 'Patient', birthDate: 'not-a-date' }), request: { method: 'POST', url: 'Patient' } },
      { request: { method: 'GET', url: `Patient/no-such-${ctx.tag}` } },
      { resource: ctx.tagged({ resourceType: 'Patient', gender: 'male' }), request: { method: 'POST', url: 'Patient' } },
    ],
  };
  const res = await ctx.fetch('', { method: 'POST', body: batch });
  ctx.expect.status(res, 200);
  const response = ctx.expect.bundle(res, 'batch-response');
  const statuses = (response.entry ?? []).map((e) => Number((e.response?.status ?? '').match(/^\d{3}/)?.[0]));
  ctx.expect.equal(statuses.length, 4, 'number of response entries');
  ctx.expect.equal(statuses[0], 201, 'entry 0 (valid create): status');
  ctx.expect.ok(statuses[1]! >= 400 && statuses[1]! < 500, `entry 1 (invalid create): status ${statuses[1]}, expected 4xx`);
  ctx.expect.equal(statuses[2], 404, 'entry 2 (read of an unknown id): status');
  ctx.expect.equal(statuses[3], 201, 'entry 3 (valid create): status');
  const created = await ctx.searchIds('Patient', ctx.scope());
  ctx.expect.equal(created.length, 2, 'Patients stored by the batch');
}
