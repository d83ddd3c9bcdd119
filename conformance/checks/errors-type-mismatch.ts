import type { CheckContext } from '../context.ts';

export const id = 'errors-type-mismatch';
export const spec = 'http://hl7.org/fhir/R4/http.html#create';
export const description =
  'A body whose resourceType differs from the type in the URL (POST or PUT) is rejected with 400 and an OperationOutcome';

export async function run(ctx: CheckContext): Promise<void> {
  const observation = ctx.tagged({ resourceType: 'Observation', status: 'final', code: { text: 'mismatch' } });
  const post = await ctx.fetch('Patient', { method: 'POST', body: observation });
  ctx.expect.status(post, 400, 'for an Observation posted to Patient');
  ctx.expect.outcome(post);
  const patient = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const put = await ctx.fetch(`Patient/${patient.id}`, { method: 'PUT', body: { ...observation, id: patient.id } });
  ctx.expect.status(put, 400, 'for an Observation put to Patient/[id]');
  ctx.expect.outcome(put);
  ctx.expect.sameIds(await ctx.searchIds('Observation', ctx.scope()), [], 'Observations created by the rejected requests');
}
