import type { CheckContext } from '../context.ts';

export const id = 'prefer-return-outcome';
export const spec = 'http://hl7.org/fhir/R4/http.html#prefer';
export const description = 'create with Prefer: return=OperationOutcome returns 201 with an OperationOutcome as the body';

export async function run(ctx: CheckContext): Promise<void> {
  const res = await ctx.fetch('Patient', {
    method: 'POST',
    body: ctx.tagged({ resourceType: 'Patient', gender: 'male' }),
    headers: { prefer: 'return=OperationOutcome' },
  });
  ctx.expect.status(res, 201);
  ctx.expect.header(res, 'location');
  const outcome = ctx.expect.outcome(res);
  ctx.expect.ok(
    !(outcome.issue ?? []).some((i) => i.severity === 'error' || i.severity === 'fatal'),
    'the OperationOutcome of a successful create reports an error',
  );
}
