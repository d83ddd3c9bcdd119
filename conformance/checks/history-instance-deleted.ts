import type { CheckContext } from '../context.ts';
import { entryVersion } from '../fhir.ts';

export const id = 'history-instance-deleted';
export const spec = 'http://hl7.org/fhir/R4/http.html#history';
export const description =
  'After a delete, the instance history keeps the earlier versions and shows the deletion as an entry with request.method DELETE and no resource';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'history-instance', 'delete');
  const v1 = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const del = await ctx.fetch(`Patient/${v1.id}`, { method: 'DELETE' });
  ctx.expect.status(del, [200, 202, 204]);
  const res = await ctx.fetch(`Patient/${v1.id}/_history`);
  ctx.expect.status(res, 200);
  const entries = (await ctx.pages(ctx.expect.bundle(res, 'history'))).flatMap((p) => p.entry ?? []);
  ctx.expect.equal(entries.length, 2, 'number of history entries (the create and the delete)');
  const [deletion, created] = entries as [(typeof entries)[0], (typeof entries)[0]];
  ctx.expect.equal(deletion.request?.method, 'DELETE', 'request.method of the newest entry');
  ctx.expect.ok(deletion.resource === undefined, 'the deletion entry carries a resource');
  ctx.expect.equal(entryVersion(created), v1.meta?.versionId, 'version of the oldest entry');
  ctx.expect.equal(created.resource?.gender, 'male', 'content of the version before the delete');
}
