import type { CheckContext } from '../context.ts';

export const id = 'read-if-modified-since';
export const spec = 'http://hl7.org/fhir/R4/http.html#cread';
export const description = 'read with If-Modified-Since at the Last-Modified time returns 304; an earlier time returns 200';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'read');
  if (!['modified-since', 'full-support'].includes(capability.conditionalRead ?? 'not-supported')) {
    ctx.skip('the CapabilityStatement does not declare conditionalRead modified-since for Patient');
  }
  const created = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const read = await ctx.fetch(`Patient/${created.id}`);
  ctx.expect.status(read, 200);
  // The validator a cache would send back is the server's own Last-Modified (RFC 9110 §13.1.3).
  const lastModified = ctx.expect.header(read, 'last-modified');
  const same = await ctx.fetch(`Patient/${created.id}`, { headers: { 'if-modified-since': lastModified } });
  ctx.expect.status(same, 304, `for If-Modified-Since: ${lastModified}`);
  const earlier = new Date(Date.parse(lastModified) - 86_400_000).toUTCString();
  const changed = await ctx.fetch(`Patient/${created.id}`, { headers: { 'if-modified-since': earlier } });
  ctx.expect.status(changed, 200, `for If-Modified-Since a day earlier`);
  ctx.expect.resource(changed, 'Patient');
}
