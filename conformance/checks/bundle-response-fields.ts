import type { CheckContext } from '../context.ts';
import { etagFor } from '../fhir.ts';

export const id = 'bundle-response-fields';
export const spec = 'http://hl7.org/fhir/R4/bundle-definitions.html#Bundle.entry.response';
export const description =
  'transaction-response entries carry status, location (Type/id/_history/v), etag W/"v" and lastModified for a create and an update';

export async function run(ctx: CheckContext): Promise<void> {
  const statement = await ctx.capabilities();
  const rest = statement.rest?.find((r) => r.mode === 'server') ?? statement.rest?.[0];
  if (!rest?.interaction?.some((i) => i.code === 'transaction')) ctx.skip('the CapabilityStatement lists no transaction interaction');
  const capability = await ctx.requireInteraction('Patient', 'create', 'update');
  const existing = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }, `${ctx.tag}old`));
  const transaction = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      { resource: ctx.tagged({ resourceType: 'Patient', gender: 'female' }), request: { method: 'POST', url: 'Patient' } },
      { resource: { ...existing, gender: 'other' }, request: { method: 'PUT', url: `Patient/${existing.id}` } },
    ],
  };
  const res = await ctx.fetch('', { method: 'POST', body: transaction });
  ctx.expect.status(res, 200);
  const response = ctx.expect.bundle(res, 'transaction-response');
  ctx.expect.equal(response.entry?.length, 2, 'number of response entries');
  const versioned = capability.versioning === 'versioned' || capability.versioning === 'versioned-update';
  const check = (i: number, status: number, id?: string) => {
    const r = response.entry![i]!.response;
    ctx.expect.ok(r, `entry ${i} has no response`);
    ctx.expect.ok(new RegExp(`^${status}\\b`).test(r.status ?? ''), `entry ${i}: response.status ${JSON.stringify(r.status)}, expected ${status}`);
    const m = ((r as { location?: string }).location ?? '').match(/(Patient)\/([A-Za-z0-9\-.]{1,64})\/_history\/([^/]+)$/);
    ctx.expect.ok(m, `entry ${i}: response.location ${JSON.stringify((r as { location?: string }).location)} is not Patient/id/_history/version`);
    if (id !== undefined) ctx.expect.equal(m[2], id, `entry ${i}: id in response.location`);
    if (versioned) ctx.expect.equal(r.etag, etagFor(m[3]!), `entry ${i}: response.etag`);
    ctx.expect.ok(r.lastModified && !Number.isNaN(Date.parse(r.lastModified)), `entry ${i}: response.lastModified ${JSON.stringify(r.lastModified)} is not an instant`);
    return m[3]!;
  };
  check(0, 201);
  const version = check(1, 200, existing.id);
  ctx.expect.ok(version !== existing.meta?.versionId, 'the update entry reports the old version in response.location');
}
