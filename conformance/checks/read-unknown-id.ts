import type { CheckContext } from '../context.ts';

export const id = 'read-unknown-id';
export const spec = 'http://hl7.org/fhir/R4/http.html#read';
export const description = 'GET [base]/[type]/[id] for an id that never existed returns 404 with an OperationOutcome';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'read');
  const res = await ctx.fetch(`Patient/never-${ctx.tag}`);
  ctx.expect.status(res, 404);
  ctx.expect.outcome(res);
}
