import type { CheckContext } from '../context.ts';
import { etagFor } from '../fhir.ts';

export const id = 'create-etag-version';
export const spec = 'http://hl7.org/fhir/R4/http.html#create';
export const description =
  'create populates meta.versionId and meta.lastUpdated, and answers with ETag W/"[vid]" and a matching Last-Modified';

export async function run(ctx: CheckContext): Promise<void> {
  const res = await ctx.fetch('Patient', {
    method: 'POST',
    body: ctx.tagged({ resourceType: 'Patient', name: [{ family: 'Etag' }] }),
    headers: { prefer: 'return=representation' },
  });
  ctx.expect.status(res, 201);
  const location = ctx.expect.header(res, 'location');
  const created = await ctx.fetch(location.replace(/\/_history\/[^/]+$/, ''));
  ctx.expect.status(created, 200, 'reading the created resource');
  const meta = ctx.expect.resource(created, 'Patient').meta;
  ctx.expect.ok(typeof meta?.versionId === 'string' && meta.versionId !== '', 'the created resource has no meta.versionId');
  const lastUpdated = meta.lastUpdated;
  ctx.expect.ok(
    typeof lastUpdated === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(lastUpdated),
    `meta.lastUpdated ${JSON.stringify(lastUpdated)} is not an instant`,
  );
  ctx.expect.equal(ctx.expect.header(res, 'etag'), etagFor(meta.versionId), 'ETag of the create response');
  const lastModified = Date.parse(ctx.expect.header(res, 'last-modified'));
  const updatedSecond = Math.floor(Date.parse(lastUpdated) / 1000) * 1000;
  ctx.expect.equal(new Date(lastModified).toISOString(), new Date(updatedSecond).toISOString(), 'Last-Modified (versus meta.lastUpdated)');
}
