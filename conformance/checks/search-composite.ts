import type { CheckContext } from '../context.ts';
import { UCUM } from '../fhir.ts';

export const id = 'search-composite';
export const spec = 'http://hl7.org/fhir/R4/search.html#composite';
export const description =
  'Observation?component-code-value-quantity=http://loinc.org|8480-6$gt100 matches code and value in the SAME component';

const LOINC = 'http://loinc.org';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Observation', 'identifier', 'component-code-value-quantity');
  const pressure = async (systolic: number, diastolic: number) =>
    (
      await ctx.create(
        ctx.tagged({
          resourceType: 'Observation',
          status: 'final',
          code: { coding: [{ system: LOINC, code: '85354-9' }] },
          component: [
            { code: { coding: [{ system: LOINC, code: '8480-6' }] }, valueQuantity: { value: systolic, unit: 'mmHg', system: UCUM, code: 'mm[Hg]' } },
            { code: { coding: [{ system: LOINC, code: '8462-4' }] }, valueQuantity: { value: diastolic, unit: 'mmHg', system: UCUM, code: 'mm[Hg]' } },
          ],
        }),
      )
    ).id!;
  const high = await pressure(140, 90);
  // 8480-6 is 95 here; only the OTHER component (8462-4) exceeds 100: no match.
  const diastolicHigh = await pressure(95, 105);
  ctx.expect.sameIds(
    await ctx.searchIds('Observation', { ...ctx.scope(), 'component-code-value-quantity': `${LOINC}|8480-6$gt100` }),
    [high],
    'component-code-value-quantity=8480-6$gt100',
  );
  ctx.expect.sameIds(
    await ctx.searchIds('Observation', { ...ctx.scope(), 'component-code-value-quantity': `${LOINC}|8462-4$gt100` }),
    [diastolicHigh],
    'component-code-value-quantity=8462-4$gt100',
  );
}
