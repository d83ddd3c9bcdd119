import type { CheckContext } from '../context.ts';
import { etagFor } from '../fhir.ts';

export const id = 'vread-version';
export const spec = 'http://hl7.org/fhir/R4/http.html#vread';
export const description =
  'GET [base]/[type]/[id]/_history/[vid] returns that version (id = [id], meta.versionId = [vid]), also after later updates';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'vread', 'update');
  const v1 = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const v2 = await ctx.update({ ...v1, gender: 'female' });
  ctx.expect.ok(v2.meta?.versionId !== v1.meta?.versionId, 'the update did not change meta.versionId');
  for (const [version, gender] of [[v1, 'male'], [v2, 'female']] as const) {
    const vid = version.meta!.versionId!;
    const res = await ctx.fetch(`Patient/${v1.id}/_history/${vid}`);
    ctx.expect.status(res, 200);
    const read = ctx.expect.resource(res, 'Patient');
    ctx.expect.equal(read.id, v1.id, `id of version ${vid}`);
    ctx.expect.equal(read.meta?.versionId, vid, `meta.versionId of version ${vid}`);
    ctx.expect.equal(read.gender, gender, `gender in version ${vid}`);
    ctx.expect.equal(res.headers.get('etag'), etagFor(vid), `ETag of version ${vid}`);
  }
}
