import type { CheckContext } from '../context.ts';

export const id = 'create-ignores-client-id';
export const spec = 'http://hl7.org/fhir/R4/http.html#create';
export const description =
  'create ignores an id, meta.versionId and meta.lastUpdated sent by the client and assigns its own';

export async function run(ctx: CheckContext): Promise<void> {
  const clientId = `client-${ctx.tag}`;
  const res = await ctx.fetch('Patient', {
    method: 'POST',
    body: ctx.tagged({
      resourceType: 'Patient',
      id: clientId,
      meta: { versionId: '999', lastUpdated: '2001-01-01T00:00:00Z' },
      name: [{ family: 'Assigned' }],
    }),
  });
  ctx.expect.status(res, 201);
  const location = ctx.expect.header(res, 'location');
  const read = await ctx.fetch(location.replace(/\/_history\/[^/]+$/, ''));
  ctx.expect.status(read, 200, 'reading the created resource');
  const created = ctx.expect.resource(read, 'Patient');
  ctx.expect.ok(created.id !== clientId, `the server kept the client's id ${clientId}`);
  ctx.expect.ok(created.meta?.versionId !== '999', "the server kept the client's meta.versionId");
  ctx.expect.ok(!created.meta?.lastUpdated?.startsWith('2001-01-01'), "the server kept the client's meta.lastUpdated");
  const byClientId = await ctx.fetch(`Patient/${clientId}`);
  ctx.expect.status(byClientId, [404, 410], `because no resource should exist at the client's id`);
}
