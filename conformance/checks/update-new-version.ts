import type { CheckContext } from '../context.ts';
import { etagFor } from '../fhir.ts';

export const id = 'update-new-version';
export const spec = 'http://hl7.org/fhir/R4/http.html#update';
export const description =
  'PUT [base]/[type]/[id] returns 200, makes a new version (ignoring the client meta.versionId) with ETag W/"[vid]", and read returns it';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'update');
  const v1 = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const res = await ctx.fetch(`Patient/${v1.id}`, {
    method: 'PUT',
    body: { ...v1, gender: 'female', meta: { versionId: 'client-chosen' } },
  });
  ctx.expect.status(res, 200);
  const etag = ctx.expect.header(res, 'etag');
  ctx.expect.header(res, 'last-modified');
  const read = await ctx.fetch(`Patient/${v1.id}`);
  ctx.expect.status(read, 200);
  const v2 = ctx.expect.resource(read, 'Patient');
  ctx.expect.equal(v2.gender, 'female', 'gender after the update');
  const vid = v2.meta?.versionId;
  ctx.expect.ok(vid && vid !== v1.meta?.versionId, `meta.versionId after the update is ${JSON.stringify(vid)}, expected a new version`);
  ctx.expect.ok(vid !== 'client-chosen', "the server kept the client's meta.versionId");
  ctx.expect.equal(etag, etagFor(vid), 'ETag of the update response');
}
