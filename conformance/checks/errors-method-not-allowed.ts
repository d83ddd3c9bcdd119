import type { CheckContext } from '../context.ts';

export const id = 'errors-method-not-allowed';
export const spec = 'http://hl7.org/fhir/R4/http.html#update';
export const description =
  'PUT to a past version ([type]/[id]/_history/[vid], which cannot be updated) returns 405 with an Allow header (RFC 9110 §15.5.6)';

export async function run(ctx: CheckContext): Promise<void> {
  const created = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const path = `Patient/${created.id}/_history/${created.meta?.versionId}`;
  const res = await ctx.fetch(path, { method: 'PUT', body: { ...created, gender: 'female' } });
  if (res.status === 404) ctx.skip(`${ctx.expect.describe(res)}: the server does not answer 405 for methods a path does not support`);
  ctx.expect.status(res, 405);
  ctx.expect.header(res, 'allow');
  ctx.expect.outcome(res);
  const read = await ctx.fetch(`Patient/${created.id}`);
  ctx.expect.equal(ctx.expect.resource(read, 'Patient').gender, 'male', 'gender after the refused request');
}
