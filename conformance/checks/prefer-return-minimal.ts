import type { CheckContext } from '../context.ts';

export const id = 'prefer-return-minimal';
export const spec = 'http://hl7.org/fhir/R4/http.html#prefer';
export const description = 'create with Prefer: return=minimal returns 201 with Location and no body';

export async function run(ctx: CheckContext): Promise<void> {
  const res = await ctx.fetch('Patient', {
    method: 'POST',
    body: ctx.tagged({ resourceType: 'Patient', gender: 'male' }),
    headers: { prefer: 'return=minimal' },
  });
  ctx.expect.status(res, 201);
  ctx.expect.header(res, 'location');
  ctx.expect.ok(res.text.trim() === '', `${ctx.expect.describe(res)}: body is not empty (${res.text.slice(0, 80)})`);
}
