import type { CheckContext } from '../context.ts';

export const id = 'update-conditional-one-match';
export const spec = 'http://hl7.org/fhir/R4/http.html#cond-update';
export const description = 'PUT [base]/[type]?[criteria] matching one resource updates that resource (200, same id, new version)';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'update', 'search-type');
  if (capability.conditionalUpdate !== true) ctx.skip('the CapabilityStatement does not declare conditionalUpdate for Patient');
  const existing = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const res = await ctx.fetch(ctx.path('Patient', ctx.scope()), {
    method: 'PUT',
    body: ctx.tagged({ resourceType: 'Patient', gender: 'female' }),
  });
  ctx.expect.status(res, 200);
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [existing.id!], 'resources matching the criteria');
  const read = await ctx.fetch(`Patient/${existing.id}`);
  ctx.expect.status(read, 200);
  const updated = ctx.expect.resource(read, 'Patient');
  ctx.expect.equal(updated.gender, 'female', 'gender after the conditional update');
  ctx.expect.ok(updated.meta?.versionId !== existing.meta?.versionId, 'the conditional update made no new version');
}
