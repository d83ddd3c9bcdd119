import type { CheckContext } from '../context.ts';
import { etagFor } from '../fhir.ts';

export const id = 'read-current';
export const spec = 'http://hl7.org/fhir/R4/http.html#read';
export const description = 'GET [base]/[type]/[id] returns 200 with the current content, id = [id], and ETag W/"[vid]"';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'read');
  const name = [{ family: 'Reader', given: ['Rita'] }];
  const created = await ctx.create(ctx.tagged({ resourceType: 'Patient', name, birthDate: '1971-03-04' }));
  const res = await ctx.fetch(`Patient/${created.id}`);
  ctx.expect.status(res, 200);
  const read = ctx.expect.resource(res, 'Patient');
  ctx.expect.equal(read.id, created.id, 'id');
  ctx.expect.equal(read.name, name, 'name');
  ctx.expect.equal(read.birthDate, '1971-03-04', 'birthDate');
  ctx.expect.equal(read.meta?.versionId, created.meta?.versionId, 'meta.versionId');
  ctx.expect.equal(ctx.expect.header(res, 'etag'), etagFor(created.meta!.versionId!), 'ETag');
}
