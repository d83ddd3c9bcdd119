import type { CheckContext } from '../context.ts';
import { link, matches } from '../fhir.ts';

export const id = 'search-include-iterate';
export const spec = 'http://hl7.org/fhir/R4/search.html#revinclude';
export const description =
  '_include=Observation:subject&_include:iterate=Patient:organization includes the Patient and, from it, its Organization (search.mode include)';

export async function run(ctx: CheckContext): Promise<string | void> {
  await ctx.requireSearchParam('Observation', 'identifier', 'subject');
  const observationCap = await ctx.resourceCapability('Observation');
  const patientCap = await ctx.resourceCapability('Patient');
  const lists = (list: string[] | undefined, name: string) => (list ?? []).some((i) => i === '*' || i === name);
  if (!lists(observationCap.searchInclude, 'Observation:subject')) ctx.skip('the CapabilityStatement lists no Observation:subject in searchInclude');
  if (!lists(patientCap.searchInclude, 'Patient:organization')) ctx.skip('the CapabilityStatement lists no Patient:organization in searchInclude');

  const organization = await ctx.create(ctx.tagged({ resourceType: 'Organization', name: `Iterate ${ctx.tag}` }));
  const patient = await ctx.create(ctx.tagged({ resourceType: 'Patient', managingOrganization: { reference: `Organization/${organization.id}` } }));
  const observation = await ctx.create(
    ctx.tagged({ resourceType: 'Observation', status: 'final', code: { text: 'iterate' }, subject: { reference: `Patient/${patient.id}` } }),
  );
  const bundle = await ctx.search('Observation', [
    ['identifier', ctx.scope().identifier as string],
    ['_include', 'Observation:subject'],
    ['_include:iterate', 'Patient:organization'],
  ]);
  ctx.expect.sameIds(matches(bundle).map((e) => e.resource?.id), [observation.id!], 'matches');
  const included = (bundle.entry ?? []).filter((e) => e.search?.mode === 'include');
  const types = included.map((e) => `${e.resource?.resourceType}/${e.resource?.id}`);
  if (!types.includes(`Organization/${organization.id}`)) {
    // A server that does not iterate may ignore the parameter, but then must not claim it in `self`.
    const self = decodeURIComponent(link(bundle, 'self') ?? '');
    if (!self.includes('_include:iterate') && types.includes(`Patient/${patient.id}`)) return ctx.skip('the server ignores _include:iterate and says so (self link)');
  }
  ctx.expect.sameIds(types, [`Patient/${patient.id}`, `Organization/${organization.id}`], 'entries with search.mode include');
}
