import type { CheckContext } from '../context.ts';

export const id = 'validate-valid';
export const spec = 'http://hl7.org/fhir/R4/resource-operation-validate.html';
export const description = 'POST [base]/[type]/$validate of a valid resource returns 200 with an OperationOutcome holding no errors';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireOperation('Patient', 'validate');
  const res = await ctx.fetch('Patient/$validate', {
    method: 'POST',
    body: {
      resourceType: 'Parameters',
      parameter: [{ name: 'resource', resource: { resourceType: 'Patient', gender: 'female', birthDate: '1980-02-29' } }],
    },
  });
  ctx.expect.status(res, 200);
  const outcome = ctx.expect.outcome(res);
  const errors = (outcome.issue ?? []).filter((i) => i.severity === 'error' || i.severity === 'fatal');
  ctx.expect.ok(errors.length === 0, `a valid Patient was reported invalid: ${JSON.stringify(errors[0])}`);
}

