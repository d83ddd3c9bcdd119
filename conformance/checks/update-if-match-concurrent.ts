import type { CheckContext } from '../context.ts';
import { etagFor } from '../fhir.ts';

export const id = 'update-if-match-concurrent';
export const spec = 'http://hl7.org/fhir/R4/http.html#concurrency';
export const description =
  'Of several concurrent PUTs carrying the same If-Match, exactly one succeeds and the others get 409/412 (no lost update)';

export async function run(ctx: CheckContext): Promise<void> {
  const capability = await ctx.requireInteraction('Patient', 'update', 'history-instance');
  if (capability.versioning !== 'versioned-update') ctx.skip('the CapabilityStatement does not declare versioned-update for Patient');
  const v1 = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male' }));
  const dates = ['2001-01-01', '2002-02-02', '2003-03-03', '2004-04-04', '2005-05-05', '2006-06-06'];
  const responses = await Promise.all(
    dates.map((birthDate) =>
      ctx.fetch(`Patient/${v1.id}`, {
        method: 'PUT',
        body: { ...v1, birthDate },
        headers: { 'if-match': etagFor(v1.meta!.versionId!) },
      }),
    ),
  );
  const statuses = responses.map((r) => r.status);
  const winners = dates.filter((_, i) => statuses[i] === 200);
  ctx.expect.ok(winners.length === 1, `statuses ${statuses.join(', ')}: expected exactly one 200`);
  ctx.expect.ok(statuses.every((s) => [200, 409, 412].includes(s)), `statuses ${statuses.join(', ')}: losers must get 409 or 412`);
  const read = await ctx.fetch(`Patient/${v1.id}`);
  ctx.expect.equal(ctx.expect.resource(read, 'Patient').birthDate, winners[0], 'birthDate after the race (the winner)');
  const history = await ctx.fetch(`Patient/${v1.id}/_history`);
  ctx.expect.status(history, 200);
  const pages = await ctx.pages(ctx.expect.bundle(history, 'history'));
  ctx.expect.equal(pages.flatMap((p) => p.entry ?? []).length, 2, 'versions in the history (the create and one update)');
}
