import type { CheckContext } from '../context.ts';

export const id = 'bundle-transaction-conditional-reference';
export const spec = 'http://hl7.org/fhir/R4/http.html#trules';
export const description =
  'a conditional reference (Organization?identifier=s|v) in a transaction is resolved to the one match; with no match the transaction fails and stores nothing';

export async function run(ctx: CheckContext): Promise<string | void> {
  const statement = await ctx.capabilities();
  const rest = statement.rest?.find((r) => r.mode === 'server') ?? statement.rest?.[0];
  if (!rest?.interaction?.some((i) => i.code === 'transaction')) ctx.skip('the CapabilityStatement lists no transaction interaction');
  await ctx.requireSearchParam('Organization', 'identifier');
  await ctx.requireSearchParam('Patient', 'identifier');
  const orgValue = `${ctx.tag}org`;
  const organization = await ctx.create(ctx.tagged({ resourceType: 'Organization', name: `Conditional ${ctx.tag}` }, orgValue));
  const transaction = (value: string) => ({
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        resource: ctx.tagged({ resourceType: 'Patient', managingOrganization: { reference: `Organization?identifier=${ctx.system}|${value}` } }),
        request: { method: 'POST', url: 'Patient' },
      },
    ],
  });
  const res = await ctx.fetch('', { method: 'POST', body: transaction(orgValue) });
  if (res.status >= 400 && res.status < 500 && res.status !== 404 && res.status !== 412) {
    ctx.skip(`the server declines conditional references (${res.status})`);
  }
  ctx.expect.status(res, 200);
  ctx.expect.bundle(res, 'transaction-response');
  const [patientId] = await ctx.searchIds('Patient', ctx.scope());
  ctx.expect.ok(patientId, 'the transaction stored no Patient');
  const read = await ctx.fetch(`Patient/${patientId}`);
  ctx.expect.status(read, 200);
  const reference = (ctx.expect.resource(read, 'Patient').managingOrganization?.reference ?? '').replace(`${ctx.baseUrl}/`, '');
  ctx.expect.equal(reference, `Organization/${organization.id}`, 'managingOrganization.reference');

  const none = await ctx.fetch('', { method: 'POST', body: transaction(`${ctx.tag}nobody`) });
  ctx.expect.ok(none.status >= 400 && none.status < 500, `${ctx.expect.describe(none)}, expected a 4xx for a conditional reference matching nothing`);
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [patientId], 'Patients after the failed transaction');
}
