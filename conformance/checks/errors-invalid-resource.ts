import type { CheckContext } from '../context.ts';

export const id = 'errors-invalid-resource';
export const spec = 'http://hl7.org/fhir/R4/http.html#create';
export const description =
  'create of a resource that breaks R4 rules (birthDate not a date) returns 400 or 422 with an error OperationOutcome, creating nothing';

export async function run(ctx: CheckContext): Promise<void> {
  const res = await ctx.fetch('Patient', {
    method: 'POST',
    body: ctx.tagged({ resourceType: 'Patient', birthDate: 'not-a-date' }),
  });
  ctx.expect.status(res, [400, 422]);
  const outcome = ctx.expect.outcome(res);
  ctx.expect.ok(
    (outcome.issue ?? []).some((i) => i.severity === 'error' || i.severity === 'fatal'),
    'the OperationOutcome has no error or fatal issue',
  );
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [], 'resources created by the rejected request');
}
