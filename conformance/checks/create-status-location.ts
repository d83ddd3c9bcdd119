import type { CheckContext } from '../context.ts';

export const id = 'create-status-location';
export const spec = 'http://hl7.org/fhir/R4/http.html#create';
export const description = 'POST [base]/[type] returns 201 with Location: [base]/[type]/[id]/_history/[vid] naming the new version';

const ID = /^[A-Za-z0-9\-.]{1,64}$/;

export async function run(ctx: CheckContext): Promise<void> {
  const res = await ctx.fetch('Patient', {
    method: 'POST',
    body: ctx.tagged({ resourceType: 'Patient', name: [{ family: 'Location' }] }),
  });
  ctx.expect.status(res, 201);
  const location = ctx.expect.header(res, 'location');
  const m = new URL(location, `${ctx.baseUrl}/`).pathname.match(/\/Patient\/([^/]+)\/_history\/([^/]+)$/);
  ctx.expect.ok(m, `Location ${location} is not [base]/Patient/[id]/_history/[vid]`);
  const [, id, vid] = m;
  ctx.expect.ok(ID.test(id!) && ID.test(vid!), `Location ${location}: id and version id must be valid ids`);
  if (res.json?.resourceType === 'Patient') {
    ctx.expect.equal(res.json.id, id, 'the returned resource id (versus the Location)');
    ctx.expect.equal(res.json.meta?.versionId, vid, 'the returned meta.versionId (versus the Location)');
  }
  const version = await ctx.fetch(`Patient/${id}/_history/${vid}`);
  ctx.expect.status(version, 200, 'reading the version the Location names');
  ctx.expect.equal(ctx.expect.resource(version, 'Patient').id, id, 'id of the version the Location names');
}
