import type { CheckContext } from '../context.ts';
import { etagFor } from '../fhir.ts';

export const id = 'update-if-match-deleted';
export const spec = 'http://hl7.org/fhir/R4/http.html#delete';
export const description =
  'The ETag a server gives for a deleted resource works in If-Match to bring it back to life with PUT; an older one gets 412';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'delete', 'update');
  if (capability.versioning !== 'versioned-update') ctx.skip('the CapabilityStatement does not declare versioned-update for Patient');
  const created = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const del = await ctx.fetch(`Patient/${created.id}`, { method: 'DELETE' });
  ctx.expect.status(del, [200, 202, 204]);
  const gone = await ctx.fetch(`Patient/${created.id}`);
  // "servers MAY include an ETag on the delete response to allow version contention management
  // when a resource is brought back to life" (also on the 410 of a read, http.html#read).
  const etag = del.headers.get('etag') ?? gone.headers.get('etag');
  if (etag === null) ctx.skip('the server gives no ETag for a deleted resource');
  const body = { ...created, gender: 'female' };
  const stale = await ctx.fetch(`Patient/${created.id}`, { method: 'PUT', body, headers: { 'if-match': etagFor(created.meta!.versionId!) } });
  ctx.expect.status(stale, [409, 412], 'for an If-Match naming the version before the delete');
  const res = await ctx.fetch(`Patient/${created.id}`, { method: 'PUT', body, headers: { 'if-match': etag } });
  ctx.expect.status(res, [200, 201], `for If-Match: ${etag}, the ETag the server gave for the deleted resource`);
  const read = await ctx.fetch(`Patient/${created.id}`);
  ctx.expect.status(read, 200, 'reading the resource brought back to life');
  ctx.expect.equal(ctx.expect.resource(read, 'Patient').gender, 'female', 'gender after it was brought back');
}
