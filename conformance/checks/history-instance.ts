import type { CheckContext } from '../context.ts';
import { entryId, entryVersion } from '../fhir.ts';

export const id = 'history-instance';
export const spec = 'http://hl7.org/fhir/R4/http.html#history';
export const description =
  'GET [base]/[type]/[id]/_history returns a history Bundle with every version of the resource, newest first';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'history-instance', 'update');
  const v1 = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const v2 = await ctx.update({ ...v1, gender: 'female' });
  const v3 = await ctx.update({ ...v2, gender: 'other' });
  const res = await ctx.fetch(`Patient/${v1.id}/_history`);
  ctx.expect.status(res, 200);
  const entries = (await ctx.pages(ctx.expect.bundle(res, 'history'))).flatMap((p) => p.entry ?? []);
  ctx.expect.equal(
    entries.map(entryVersion),
    [v3, v2, v1].map((v) => v.meta?.versionId),
    'version ids in the history, in order',
  );
  ctx.expect.ok(entries.every((e) => entryId(e) === v1.id), 'the history holds entries of another resource');
  ctx.expect.equal(
    entries.map((e) => e.resource?.gender),
    ['other', 'female', 'male'],
    'gender in each version of the history',
  );
}
