import type { CheckContext } from '../context.ts';
import { link, matches } from '../fhir.ts';

export const id = 'search-include';
export const spec = 'http://hl7.org/fhir/R4/search.html#include';
export const description =
  '_include=Patient:organization either adds the Organization (search.mode include) or, where unsupported, is reported: 400 under handling=strict, left out of the self link otherwise';

export async function run(ctx: CheckContext): Promise<string | void> {
  const capability = await ctx.requireInteraction('Patient', 'search-type');
  await ctx.requireSearchParam('Patient', 'identifier');
  const organization = await ctx.create(ctx.tagged({ resourceType: 'Organization', name: `Include ${ctx.tag}` }));
  const patient = await ctx.create(
    ctx.tagged({ resourceType: 'Patient', managingOrganization: { reference: `Organization/${organization.id}` } }),
  );
  const params = { ...ctx.scope(), _include: 'Patient:organization' };
  if ((capability.searchInclude ?? []).some((i) => i === '*' || i === 'Patient:organization')) {
    const bundle = await ctx.search('Patient', params);
    ctx.expect.sameIds(matches(bundle).map((e) => e.resource?.id), [patient.id!], 'matches');
    const included = (bundle.entry ?? []).filter((e) => e.search?.mode === 'include').map((e) => e.resource?.id);
    ctx.expect.sameIds(included, [organization.id!], 'entries with search.mode include');
    return;
  }
  const strict = await ctx.fetch(ctx.path('Patient', params), { headers: { prefer: 'handling=strict' } });
  ctx.expect.status(strict, 400, 'for _include under handling=strict, as the CapabilityStatement lists no searchInclude');
  ctx.expect.outcome(strict);
  const lenient = await ctx.search('Patient', params, { headers: { prefer: 'handling=lenient' } });
  const self = link(lenient, 'self');
  ctx.expect.ok(self, 'the searchset has no self link');
  ctx.expect.ok(!/[?&]_include/.test(self), `the self link ${self} claims _include was used, but no resource was included`);
  return 'the server does not support _include and says so';
}
