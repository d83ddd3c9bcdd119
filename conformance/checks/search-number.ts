import type { CheckContext } from '../context.ts';

export const id = 'search-number';
export const spec = 'http://hl7.org/fhir/R4/search.html#number';
export const description = 'A number parameter matches within the precision of the value, and with gt / le prefixes';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('RiskAssessment', 'probability', 'identifier');
  const patient = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'female' }));
  const ids: Record<string, string> = {};
  for (const probability of [0.25, 0.5, 0.8]) {
    const assessment = await ctx.create(
      ctx.tagged({
        resourceType: 'RiskAssessment',
        status: 'final',
        subject: { reference: `Patient/${patient.id}` },
        prediction: [{ probabilityDecimal: probability }],
      }),
    );
    ids[probability] = assessment.id!;
  }
  const search = (probability: string) => ctx.searchIds('RiskAssessment', { ...ctx.scope(), probability });
  ctx.expect.sameIds(await search('0.5'), [ids[0.5]!], 'probability=0.5');
  ctx.expect.sameIds(await search('gt0.5'), [ids[0.8]!], 'probability=gt0.5');
  ctx.expect.sameIds(await search('le0.5'), [ids[0.25]!, ids[0.5]!], 'probability=le0.5');
}
