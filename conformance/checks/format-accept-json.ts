import type { CheckContext } from '../context.ts';

export const id = 'format-accept-json';
export const spec = 'http://hl7.org/fhir/R4/http.html#mime-type';
export const description = 'A request with Accept: application/json is answered with the FHIR JSON representation';

export async function run(ctx: CheckContext): Promise<void> {
  const created = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const res = await ctx.fetch(`Patient/${created.id}`, { headers: { accept: 'application/json' } });
  ctx.expect.status(res, 200);
  const type = res.headers.get('content-type') ?? '';
  ctx.expect.ok(/^application\/(fhir\+)?json\b/i.test(type), `Content-Type is ${type || 'missing'}`);
  ctx.expect.equal(ctx.expect.resource(res, 'Patient').id, created.id, 'id');
}
