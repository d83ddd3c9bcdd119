import type { CheckContext } from '../context.ts';

export const id = 'update-id-mismatch';
export const spec = 'http://hl7.org/fhir/R4/http.html#update';
export const description =
  'PUT [base]/[type]/[id] whose body has another id, or no id, is rejected with 400 and an OperationOutcome, changing nothing';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'update');
  const v1 = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const other = await ctx.fetch(`Patient/${v1.id}`, { method: 'PUT', body: { ...v1, id: `other-${ctx.tag}`, gender: 'female' } });
  ctx.expect.status(other, 400, 'for a body id that differs from the URL id');
  ctx.expect.outcome(other);
  const { id: _dropped, ...withoutId } = v1;
  const none = await ctx.fetch(`Patient/${v1.id}`, { method: 'PUT', body: { ...withoutId, gender: 'female' } });
  ctx.expect.status(none, 400, 'for a body without an id');
  ctx.expect.outcome(none);
  const read = await ctx.fetch(`Patient/${v1.id}`);
  ctx.expect.status(read, 200);
  const current = ctx.expect.resource(read, 'Patient');
  ctx.expect.equal(current.gender, 'male', 'gender after the rejected updates');
  ctx.expect.equal(current.meta?.versionId, v1.meta?.versionId, 'meta.versionId after the rejected updates');
}
