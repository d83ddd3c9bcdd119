import type { CheckContext } from '../context.ts';
import { entryVersion } from '../fhir.ts';

export const id = 'history-since';
export const spec = 'http://hl7.org/fhir/R4/http.html#history';
export const description = '_history?_since=[instant] includes only the versions created at or after that instant';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'history-instance', 'update');
  const v1 = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  // Servers need not be finer than a second (http.html#history), so the versions are > 1 s apart.
  await ctx.sleep(1100);
  const v2 = await ctx.update({ ...v1, gender: 'female' });
  const versions = async (since: string) => {
    const res = await ctx.fetch(ctx.path(`Patient/${v1.id}/_history`, { _since: since }));
    ctx.expect.status(res, 200);
    const pages = await ctx.pages(ctx.expect.bundle(res, 'history'));
    return pages.flatMap((p) => p.entry ?? []).map(entryVersion);
  };
  ctx.expect.equal(await versions(v2.meta!.lastUpdated!), [v2.meta?.versionId], `versions _since the second version's lastUpdated`);
  ctx.expect.equal(
    await versions(v1.meta!.lastUpdated!),
    [v2.meta?.versionId, v1.meta?.versionId],
    `versions _since the first version's lastUpdated`,
  );
}
