import type { CheckContext } from '../context.ts';

export const id = 'update-as-create';
export const spec = 'http://hl7.org/fhir/R4/http.html#upsert';
export const description =
  'With updateCreate, PUT [base]/[type]/[id] to a new id returns 201 and creates the resource at that id';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'update');
  if (capability.updateCreate !== true) ctx.skip('the CapabilityStatement does not declare updateCreate for Patient');
  const clientId = `vc-${ctx.tag}`;
  const res = await ctx.fetch(`Patient/${clientId}`, {
    method: 'PUT',
    body: ctx.tagged({ resourceType: 'Patient', id: clientId, gender: 'other' }),
  });
  ctx.expect.status(res, 201);
  ctx.expect.header(res, 'etag');
  const read = await ctx.fetch(`Patient/${clientId}`);
  ctx.expect.status(read, 200);
  const created = ctx.expect.resource(read, 'Patient');
  ctx.expect.equal(created.id, clientId, 'id');
  ctx.expect.equal(created.gender, 'other', 'gender');
}
