import type { CheckContext } from '../context.ts';
import { matches } from '../fhir.ts';

export const id = 'search-revinclude';
export const spec = 'http://hl7.org/fhir/R4/search.html#revinclude';
export const description = '_revinclude=Observation:subject adds the Observations that reference each matched Patient (search.mode include)';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'identifier');
  const capability = await ctx.resourceCapability('Patient');
  if (!(capability.searchRevInclude ?? []).some((i) => i === '*' || i === 'Observation:subject')) {
    ctx.skip('the CapabilityStatement lists no Observation:subject in searchRevInclude for Patient');
  }
  const patient = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'other' }));
  const other = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'other' }, `${ctx.tag}x`));
  const observation = (subject: string) =>
    ctx.create({ resourceType: 'Observation', status: 'final', code: { text: 'revinclude' }, subject: { reference: `Patient/${subject}` } });
  const first = await observation(patient.id!);
  const second = await observation(patient.id!);
  await observation(other.id!); // references a patient that is not matched: not included
  const bundle = await ctx.search('Patient', { ...ctx.scope(), _revinclude: 'Observation:subject' });
  ctx.expect.sameIds(matches(bundle).map((e) => e.resource?.id), [patient.id!], 'matches');
  const included = (bundle.entry ?? []).filter((e) => e.search?.mode === 'include').map((e) => `${e.resource?.resourceType}/${e.resource?.id}`);
  ctx.expect.sameIds(included, [`Observation/${first.id}`, `Observation/${second.id}`], 'entries with search.mode include');
}
