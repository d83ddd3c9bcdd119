import type { CheckContext } from '../context.ts';
import { etagFor } from '../fhir.ts';

export const id = 'update-if-match-stale';
export const spec = 'http://hl7.org/fhir/R4/http.html#concurrency';
export const description =
  'PUT with an If-Match naming an old version returns 412 and changes nothing; the current version in If-Match succeeds';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'update');
  if (capability.versioning !== 'versioned-update') ctx.skip('the CapabilityStatement does not declare versioned-update for Patient');
  const v1 = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const v2 = await ctx.update({ ...v1, gender: 'female' });
  const stale = await ctx.fetch(`Patient/${v1.id}`, {
    method: 'PUT',
    body: { ...v2, gender: 'other' },
    headers: { 'if-match': etagFor(v1.meta!.versionId!) },
  });
  ctx.expect.status(stale, 412, 'for a stale If-Match');
  const read = await ctx.fetch(`Patient/${v1.id}`);
  ctx.expect.equal(ctx.expect.resource(read, 'Patient').meta?.versionId, v2.meta?.versionId, 'meta.versionId after the rejected update');
  const current = await ctx.fetch(`Patient/${v1.id}`, {
    method: 'PUT',
    body: { ...v2, gender: 'other' },
    headers: { 'if-match': etagFor(v2.meta!.versionId!) },
  });
  ctx.expect.status(current, 200, 'for an If-Match naming the current version');
}
