import type { CheckContext } from '../context.ts';
import { UCUM } from '../fhir.ts';

export const id = 'search-quantity';
export const spec = 'http://hl7.org/fhir/R4/search.html#quantity';
export const description =
  'A quantity parameter matches number|system|code, number||code and bare numbers, with prefixes';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Observation', 'value-quantity', 'identifier');
  const make = async (value: number, code: string) =>
    (
      await ctx.create(
        ctx.tagged({
          resourceType: 'Observation',
          status: 'final',
          code: { text: 'quantity' },
          valueQuantity: { value, unit: code, system: UCUM, code },
        }),
      )
    ).id!;
  const mg54 = await make(5.4, 'mg');
  const mg10 = await make(10, 'mg');
  const kg54 = await make(5.4, 'kg');
  const search = (value: string) => ctx.searchIds('Observation', { ...ctx.scope(), 'value-quantity': value });
  ctx.expect.sameIds(await search(`5.4|${UCUM}|mg`), [mg54], `value-quantity=5.4|${UCUM}|mg`);
  ctx.expect.sameIds(await search('5.4||mg'), [mg54], 'value-quantity=5.4||mg');
  ctx.expect.sameIds(await search('5.4'), [mg54, kg54], 'value-quantity=5.4');
  ctx.expect.sameIds(await search(`gt6|${UCUM}|mg`), [mg10], `value-quantity=gt6|${UCUM}|mg`);
  ctx.expect.sameIds(await search('lt6'), [mg54, kg54], 'value-quantity=lt6');
}
