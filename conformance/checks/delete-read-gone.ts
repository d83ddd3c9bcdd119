import type { CheckContext } from '../context.ts';

export const id = 'delete-read-gone';
export const spec = 'http://hl7.org/fhir/R4/http.html#delete';
export const description =
  'DELETE [base]/[type]/[id] returns 200, 202 or 204; a later read returns 410 Gone (404 on servers that do not track deletions)';

export async function run(ctx: CheckContext): Promise<string | void> {
  await ctx.requireInteraction('Patient', 'delete', 'read');
  const created = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const res = await ctx.fetch(`Patient/${created.id}`, { method: 'DELETE' });
  ctx.expect.status(res, [200, 202, 204]);
  const read = await ctx.fetch(`Patient/${created.id}`);
  ctx.expect.status(read, [410, 404], 'reading a deleted resource');
  if (read.status === 404) return 'a deleted resource reads as 404 (the server does not track deletions)';
}
