import type { CheckContext } from '../context.ts';

export const id = 'search-chain-two-levels';
export const spec = 'http://hl7.org/fhir/R4/search.html#chaining';
export const description =
  'Observation?encounter:Encounter.subject:Patient.family=X follows two references: Observation → Encounter → Patient';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Observation', 'identifier', 'encounter');
  await ctx.requireSearchParam('Encounter', 'subject');
  await ctx.requireSearchParam('Patient', 'family');
  const family = `Chain2${ctx.tag}`;
  const ids: string[] = [];
  for (const name of [family, `${family}Other`]) {
    const patient = await ctx.create(ctx.tagged({ resourceType: 'Patient', name: [{ family: name }] }, `${ctx.tag}p`));
    const encounter = await ctx.create(
      ctx.tagged(
        { resourceType: 'Encounter', status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' }, subject: { reference: `Patient/${patient.id}` } },
        `${ctx.tag}e`,
      ),
    );
    const observation = await ctx.create(
      ctx.tagged({ resourceType: 'Observation', status: 'final', code: { text: 'chain' }, encounter: { reference: `Encounter/${encounter.id}` } }),
    );
    ids.push(observation.id!);
  }
  const params = { ...ctx.scope(), 'encounter:Encounter.subject:Patient.family:exact': family };
  const res = await ctx.fetch(ctx.path('Observation', params));
  if (res.status === 400 || res.status === 501) ctx.skip(`the server rejects two-level chains (${res.status})`);
  ctx.expect.sameIds(await ctx.searchIds('Observation', params), [ids[0]!], 'encounter:Encounter.subject:Patient.family:exact');
}
