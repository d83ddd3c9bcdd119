import type { CheckContext } from '../context.ts';

export const id = 'errors-unknown-type';
export const spec = 'http://hl7.org/fhir/R4/http.html#create';
export const description = 'Requests for a resource type that does not exist return 404 with an OperationOutcome';

export async function run(ctx: CheckContext): Promise<void> {
  for (const path of ['NotAResourceType', 'NotAResourceType/1']) {
    const res = await ctx.fetch(path);
    ctx.expect.status(res, 404);
    ctx.expect.outcome(res);
  }
  const post = await ctx.fetch('NotAResourceType', { method: 'POST', body: { resourceType: 'NotAResourceType' } });
  ctx.expect.status(post, 404);
  ctx.expect.outcome(post);
}
