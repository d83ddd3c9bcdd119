import type { CheckContext } from '../context.ts';

export const id = 'search-token-of-type';
export const spec = 'http://hl7.org/fhir/R4/search.html#token';
export const description =
  'identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|value matches the identifier value only under that identifier type';

const V2_0203 = 'http://terminology.hl7.org/CodeSystem/v2-0203';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'identifier');
  const value = `mrn-${ctx.tag}`;
  const typed = (code: string) => ({ type: { coding: [{ system: V2_0203, code }] }, system: `${ctx.system}/ids`, value });
  const mr = (await ctx.create(ctx.tagged({ resourceType: 'Patient', identifier: [typed('MR')] }))).id!;
  await ctx.create(ctx.tagged({ resourceType: 'Patient', identifier: [typed('SS')] }));
  const params = { ...ctx.scope(), 'identifier:of-type': `${V2_0203}|MR|${value}` };
  const res = await ctx.fetch(ctx.path('Patient', params));
  if (res.status === 400 || res.status === 501) ctx.skip(`the server rejects the :of-type modifier (${res.status})`);
  ctx.expect.sameIds(await ctx.searchIds('Patient', params), [mr], 'identifier:of-type=…|MR|value');
  ctx.expect.sameIds(await ctx.searchIds('Patient', { ...ctx.scope(), 'identifier:of-type': `${V2_0203}|DL|${value}` }), [], 'under another type');
}
