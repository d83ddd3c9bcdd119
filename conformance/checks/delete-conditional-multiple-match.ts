import type { CheckContext } from '../context.ts';

export const id = 'delete-conditional-multiple-match';
export const spec = 'http://hl7.org/fhir/R4/http.html#delete';
export const description =
  'DELETE [base]/[type]?[criteria] matching several resources: 412 deleting nothing (conditionalDelete single), or deletes them all (multiple)';

export async function run(ctx: CheckContext): Promise<string | void> {
  const capability = await ctx.requireInteraction('Patient', 'delete', 'search-type');
  const mode = capability.conditionalDelete ?? 'not-supported';
  if (!['single', 'multiple'].includes(mode)) ctx.skip('the CapabilityStatement does not declare conditionalDelete for Patient');
  const a = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const b = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const res = await ctx.fetch(ctx.path('Patient', ctx.scope()), { method: 'DELETE' });
  if (mode === 'single') {
    ctx.expect.status(res, 412, 'as the server declares conditionalDelete single');
    ctx.expect.outcome(res);
    ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [a.id!, b.id!], 'resources left after the refused delete');
    return;
  }
  ctx.expect.status(res, [200, 202, 204], 'as the server declares conditionalDelete multiple');
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [], 'resources left after deleting every match');
  return 'deleted every match (conditionalDelete multiple)';
}
