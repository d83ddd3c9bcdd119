import type { CheckContext } from '../context.ts';

export const id = 'format-decimal-precision';
export const spec = 'http://hl7.org/fhir/R4/datatypes.html#decimal';
export const description =
  'Decimals keep the precision they were written with (5.40 stays 5.40; 18 significant digits survive), as R4 requires';

export async function run(ctx: CheckContext): Promise<void> {
  // Sent as text: a JSON.stringify of numbers would already lose what is being checked.
  const body = `{"resourceType":"Observation","status":"final","code":{"text":"decimal precision"},
    "identifier":[{"system":${JSON.stringify(ctx.system)},"value":${JSON.stringify(ctx.tag)}}],
    "valueQuantity":{"value":5.40,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"},
    "component":[{"code":{"text":"eighteen digits"},"valueQuantity":{"value":0.123456789012345678}}]}`;
  const res = await ctx.fetch('Observation', { method: 'POST', body });
  ctx.expect.status(res, 201);
  const location = ctx.expect.header(res, 'location');
  const read = await ctx.fetch(location.replace(/\/_history\/[^/]+$/, ''));
  ctx.expect.status(read, 200);
  ctx.expect.resource(read, 'Observation');
  const values = [...read.text.matchAll(/"value"\s*:\s*(-?[0-9][0-9.eE+-]*)/g)].map((m) => m[1]);
  ctx.expect.ok(values.includes('5.40'), `valueQuantity.value 5.40 was read back as ${values[0] ?? 'nothing'}`);
  ctx.expect.ok(
    values.includes('0.123456789012345678'),
    `component valueQuantity.value 0.123456789012345678 was read back as ${values[1] ?? 'nothing'}`,
  );
}
