import type { CheckContext } from '../context.ts';

export const id = 'validate-invalid';
export const spec = 'http://hl7.org/fhir/R4/resource-operation-validate.html';
export const description = 'POST [base]/[type]/$validate of an invalid resource returns an OperationOutcome with an error issue';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireOperation('Patient', 'validate');
  const res = await ctx.fetch('Patient/$validate', {
    method: 'POST',
    body: {
      resourceType: 'Parameters',
      parameter: [{ name: 'resource', resource: { resourceType: 'Patient', birthDate: 'not-a-date' } }],
    },
  });
  // The operation itself succeeded (200), though servers also answer 400/412/422 for invalid input.
  ctx.expect.status(res, [200, 400, 412, 422]);
  const outcome = ctx.expect.outcome(res);
  ctx.expect.ok(
    (outcome.issue ?? []).some((i) => i.severity === 'error' || i.severity === 'fatal'),
    'the OperationOutcome for an invalid Patient has no error or fatal issue',
  );
}
