import type { CheckContext } from '../context.ts';

export const id = 'format-param-json';
export const spec = 'http://hl7.org/fhir/R4/http.html#mime-type';
export const description =
  '_format=json (and application/json, application/fhir+json) selects JSON, overriding the Accept header';

export async function run(ctx: CheckContext): Promise<void> {
  const created = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  for (const format of ['json', 'application/json', 'application/fhir+json']) {
    const res = await ctx.fetch(ctx.path(`Patient/${created.id}`, { _format: format }), {
      headers: { accept: 'application/fhir+xml' },
    });
    ctx.expect.status(res, 200, `for _format=${format} with Accept: application/fhir+xml`);
    const type = res.headers.get('content-type') ?? '';
    ctx.expect.ok(/^application\/(fhir\+)?json\b/i.test(type), `_format=${format}: Content-Type is ${type || 'missing'}`);
    ctx.expect.equal(ctx.expect.resource(res, 'Patient').id, created.id, `id read with _format=${format}`);
  }
}
