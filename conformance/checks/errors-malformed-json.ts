import type { CheckContext } from '../context.ts';

export const id = 'errors-malformed-json';
export const spec = 'http://hl7.org/fhir/R4/http.html#create';
export const description = 'A body that is not valid JSON is rejected with 400 and an OperationOutcome';

export async function run(ctx: CheckContext): Promise<void> {
  const res = await ctx.fetch('Patient', { method: 'POST', body: '{"resourceType": "Patient", "gender": "male",' });
  ctx.expect.status(res, 400);
  ctx.expect.outcome(res);
}
