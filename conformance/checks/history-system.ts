import type { CheckContext } from '../context.ts';
import { entryId, entryType } from '../fhir.ts';

export const id = 'history-system';
export const spec = 'http://hl7.org/fhir/R4/http.html#history';
export const description = 'GET [base]/_history returns a history Bundle across resource types, including versions just written';

export async function run(ctx: CheckContext): Promise<void> {
  const statement = await ctx.capabilities();
  const rest = statement.rest?.find((r) => r.mode === 'server');
  if (!rest?.interaction?.some((i) => i.code === 'history-system')) ctx.skip('the CapabilityStatement lists no history-system interaction');
  const patient = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const observation = await ctx.create(
    ctx.tagged({ resourceType: 'Observation', status: 'final', code: { text: 'history-system' }, valueString: ctx.tag }),
  );
  const res = await ctx.fetch('_history');
  ctx.expect.status(res, 200);
  const first = ctx.expect.bundle(res, 'history');
  const entries = (await ctx.pages(first, 10, 'stop')).flatMap((p) => p.entry ?? []);
  const seen = entries.map((e) => `${entryType(e)}/${entryId(e)}`);
  for (const r of [patient, observation]) {
    ctx.expect.ok(seen.includes(`${r.resourceType}/${r.id}`), `_history does not include ${r.resourceType}/${r.id}`);
  }
}
