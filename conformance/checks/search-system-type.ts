import type { CheckContext } from '../context.ts';
import { queryString } from '../client.ts';
import { entryType, matches } from '../fhir.ts';

export const id = 'search-system-type';
export const spec = 'http://hl7.org/fhir/R4/http.html#search';
export const description = 'GET [base]?_type=Patient,Observation&identifier=… searches both types at once, and only them';

export async function run(ctx: CheckContext): Promise<void> {
  const statement = await ctx.capabilities();
  const rest = statement.rest?.find((r) => r.mode === 'server') ?? statement.rest?.[0];
  if (!rest?.interaction?.some((i) => i.code === 'search-system')) ctx.skip('the CapabilityStatement lists no search-system interaction');
  await ctx.requireSearchParam('Patient', 'identifier');
  await ctx.requireSearchParam('Observation', 'identifier');
  const patient = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'female' }));
  const observation = await ctx.create(ctx.tagged({ resourceType: 'Observation', status: 'final', code: { text: 'system search' } }));
  await ctx.create(ctx.tagged({ resourceType: 'Organization', name: `System ${ctx.tag}` })); // not asked for
  const res = await ctx.fetch(`${ctx.baseUrl}?${queryString({ _type: 'Patient,Observation', ...ctx.scope() })}`);
  ctx.expect.status(res, 200);
  const first = ctx.expect.bundle(res, 'searchset');
  const found = (await ctx.pages(first)).flatMap((page) => matches(page).map((e) => `${entryType(e)}/${e.resource?.id}`));
  ctx.expect.sameIds(found, [`Patient/${patient.id}`, `Observation/${observation.id}`], 'matches of _type=Patient,Observation');
}
