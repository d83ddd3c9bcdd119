import type { CheckContext } from '../context.ts';
import { etagFor } from '../fhir.ts';

export const id = 'read-if-none-match';
export const spec = 'http://hl7.org/fhir/R4/http.html#cread';
export const description = 'read with If-None-Match naming the current version returns 304; another version returns 200';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'read');
  if (!['not-match', 'full-support'].includes(capability.conditionalRead ?? 'not-supported')) {
    ctx.skip('the CapabilityStatement does not declare conditionalRead not-match for Patient');
  }
  const created = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const same = await ctx.fetch(`Patient/${created.id}`, { headers: { 'if-none-match': etagFor(created.meta!.versionId!) } });
  ctx.expect.status(same, 304, 'for the current ETag');
  const other = await ctx.fetch(`Patient/${created.id}`, { headers: { 'if-none-match': etagFor(`x${ctx.tag}`) } });
  ctx.expect.status(other, 200, 'for an ETag of no version');
  ctx.expect.resource(other, 'Patient');
}
