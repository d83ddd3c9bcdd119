import type { CheckContext } from '../context.ts';

export const id = 'search-token-system-code';
export const spec = 'http://hl7.org/fhir/R4/search.html#token';
export const description =
  'A token parameter matches system|code on both parts, system| on the system alone, and |code only codes without a system';

const LOINC = 'http://loinc.org';
const SNOMED = 'http://snomed.info/sct';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Observation', 'code', 'identifier');
  const make = async (coding: { system?: string; code: string }) =>
    (await ctx.create(ctx.tagged({ resourceType: 'Observation', status: 'final', code: { coding: [coding] } }))).id!;
  const loinc = await make({ system: LOINC, code: '8867-4' });
  await make({ system: SNOMED, code: '8867-4' });
  const otherLoinc = await make({ system: LOINC, code: '9279-1' });
  const noSystem = await make({ code: '8867-4' });
  const search = (code: string) => ctx.searchIds('Observation', { ...ctx.scope(), code });
  ctx.expect.sameIds(await search(`${LOINC}|8867-4`), [loinc], `code=${LOINC}|8867-4`);
  ctx.expect.sameIds(await search(`${LOINC}|`), [loinc, otherLoinc], `code=${LOINC}|`);
  ctx.expect.sameIds(await search('|8867-4'), [noSystem], 'code=|8867-4');
}
