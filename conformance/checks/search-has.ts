import type { CheckContext } from '../context.ts';

export const id = 'search-has';
export const spec = 'http://hl7.org/fhir/R4/search.html#has';
export const description = 'Patient?_has:Observation:subject:code=s|c finds the Patients referenced by a matching Observation (reverse chaining)';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'identifier');
  await ctx.requireSearchParam('Observation', 'subject', 'code');
  const system = `${ctx.system}/codes`;
  const patient = async () => (await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'unknown' }))).id!;
  const observation = (subject: string, code: string) =>
    ctx.create({ resourceType: 'Observation', status: 'final', code: { coding: [{ system, code }] }, subject: { reference: `Patient/${subject}` } });
  const wanted = await patient();
  const otherCode = await patient();
  await patient(); // no Observation at all
  await observation(wanted, 'wanted');
  await observation(wanted, 'other');
  await observation(otherCode, 'other');
  const params = { ...ctx.scope(), '_has:Observation:subject:code': `${system}|wanted` };
  const res = await ctx.fetch(ctx.path('Patient', params));
  if (res.status === 400 || res.status === 501) ctx.skip(`the server rejects _has (${res.status})`);
  ctx.expect.sameIds(await ctx.searchIds('Patient', params), [wanted], '_has:Observation:subject:code');
}
