import type { CheckContext } from '../context.ts';
import { entryId, entryType } from '../fhir.ts';

export const id = 'history-type';
export const spec = 'http://hl7.org/fhir/R4/http.html#history';
export const description =
  'GET [base]/[type]/_history returns a history Bundle of that type only, including versions just written';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'history-type');
  const a = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const b = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'female' }));
  const res = await ctx.fetch('Patient/_history');
  ctx.expect.status(res, 200);
  // Newest first, so what was just written is on the first pages even on a busy server.
  const first = ctx.expect.bundle(res, 'history');
  const entries = (await ctx.pages(first, 10, 'stop')).flatMap((p) => p.entry ?? []);
  const others = entries.filter((e) => entryType(e) !== 'Patient');
  ctx.expect.ok(others.length === 0, `Patient/_history holds ${others.length} entries of other types`);
  const ids = entries.map(entryId);
  for (const created of [a, b]) ctx.expect.ok(ids.includes(created.id), `Patient/_history does not include Patient/${created.id}`);
}
