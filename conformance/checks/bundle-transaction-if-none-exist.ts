import type { CheckContext } from '../context.ts';
import { queryString } from '../client.ts';

export const id = 'bundle-transaction-if-none-exist';
export const spec = 'http://hl7.org/fhir/R4/http.html#trules';
export const description =
  'request.ifNoneExist in a transaction: a match is not created again (200, location of the match), no match creates (201)';

export async function run(ctx: CheckContext): Promise<void> {
  const statement = await ctx.capabilities();
  const rest = statement.rest?.find((r) => r.mode === 'server') ?? statement.rest?.[0];
  if (!rest?.interaction?.some((i) => i.code === 'transaction')) ctx.skip('the CapabilityStatement lists no transaction interaction');
  const capability = await ctx.requireInteraction('Patient', 'create', 'search-type');
  if (capability.conditionalCreate !== true) ctx.skip('the CapabilityStatement does not declare conditionalCreate for Patient');
  const existingValue = `${ctx.tag}old`;
  const newValue = `${ctx.tag}new`;
  const existing = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }, existingValue));
  const transaction = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        resource: ctx.tagged({ resourceType: 'Patient', gender: 'female' }, existingValue),
        request: { method: 'POST', url: 'Patient', ifNoneExist: queryString(ctx.scope(existingValue)) },
      },
      {
        resource: ctx.tagged({ resourceType: 'Patient', gender: 'female' }, newValue),
        request: { method: 'POST', url: 'Patient', ifNoneExist: queryString(ctx.scope(newValue)) },
      },
    ],
  };
  const res = await ctx.fetch('', { method: 'POST', body: transaction });
  ctx.expect.status(res, 200);
  const response = ctx.expect.bundle(res, 'transaction-response');
  const [matched, created] = response.entry ?? [];
  const location = (matched?.response as { location?: string } | undefined)?.location;
  ctx.expect.ok(/^200\b/.test(matched?.response?.status ?? ''), `entry 0 (matches): response.status ${matched?.response?.status}, expected 200`);
  ctx.expect.ok(
    (location ?? '').includes(`Patient/${existing.id}`),
    `entry 0: response.location ${JSON.stringify(location)} does not name Patient/${existing.id}`,
  );
  ctx.expect.ok(/^201\b/.test(created?.response?.status ?? ''), `entry 1 (no match): response.status ${created?.response?.status}, expected 201`);
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope(existingValue)), [existing.id!], 'Patients matching the first condition');
  ctx.expect.equal((await ctx.searchIds('Patient', ctx.scope(newValue))).length, 1, 'Patients matching the second condition');
  const read = await ctx.fetch(`Patient/${existing.id}`);
  ctx.expect.equal(ctx.expect.resource(read, 'Patient').gender, 'male', 'the matched Patient is left as it was');
}
