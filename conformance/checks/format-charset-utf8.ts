import type { CheckContext } from '../context.ts';

export const id = 'format-charset-utf8';
export const spec = 'http://hl7.org/fhir/R4/http.html#mime-type';
export const description = 'Responses carry Content-Type application/fhir+json with charset=utf-8, and keep non-ASCII text intact';

export async function run(ctx: CheckContext): Promise<void> {
  const family = 'Ñúñez-Åström-Łódź-日本';
  const created = await ctx.create(ctx.tagged({ resourceType: 'Patient', name: [{ family }] }));
  const res = await ctx.fetch(`Patient/${created.id}`);
  ctx.expect.status(res, 200);
  const type = ctx.expect.header(res, 'content-type');
  ctx.expect.ok(/^application\/fhir\+json\s*;(.*;)?\s*charset="?utf-8"?\s*(;|$)/i.test(type), `Content-Type is ${type}`);
  ctx.expect.equal(ctx.expect.resource(res, 'Patient').name?.[0]?.family, family, 'non-ASCII family name read back');
}
