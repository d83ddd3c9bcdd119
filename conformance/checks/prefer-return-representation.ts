import type { CheckContext } from '../context.ts';

export const id = 'prefer-return-representation';
export const spec = 'http://hl7.org/fhir/R4/http.html#prefer';
export const description = 'create with Prefer: return=representation returns 201 with the created resource (id and meta) as the body';

export async function run(ctx: CheckContext): Promise<void> {
  const res = await ctx.fetch('Patient', {
    method: 'POST',
    body: ctx.tagged({ resourceType: 'Patient', gender: 'male', birthDate: '1966-06-06' }),
    headers: { prefer: 'return=representation' },
  });
  ctx.expect.status(res, 201);
  const body = ctx.expect.resource(res, 'Patient');
  const location = ctx.expect.header(res, 'location');
  ctx.expect.ok(body.id && location.includes(`Patient/${body.id}/`), `the body's id ${body.id} is not the one in Location ${location}`);
  ctx.expect.ok(body.meta?.versionId, 'the body has no meta.versionId');
  ctx.expect.equal(body.birthDate, '1966-06-06', 'birthDate in the body');
}
