import type { CheckContext } from '../context.ts';

export const id = 'errors-narrative-invalid';
export const spec = 'http://hl7.org/fhir/R4/narrative.html#Narrative';
export const description =
  'A narrative that breaks txt-1 (scripts, event attributes) or txt-2 (no content) is rejected with 400 or 422 and an OperationOutcome';

const XHTML = 'xmlns="http://www.w3.org/1999/xhtml"';

export async function run(ctx: CheckContext): Promise<void> {
  const cases: [string, string][] = [
    ['a script element (txt-1)', `<div ${XHTML}><p>Hello</p><script>alert(1)</script></div>`],
    ['an event handler attribute (txt-1)', `<div ${XHTML}><p onclick="alert(1)">Hello</p></div>`],
    ['no content (txt-2)', `<div ${XHTML}> </div>`],
  ];
  for (const [what, div] of cases) {
    const res = await ctx.fetch('Patient', {
      method: 'POST',
      body: ctx.tagged({ resourceType: 'Patient', text: { status: 'generated', div } }),
    });
    ctx.expect.status(res, [400, 422], `for a narrative with ${what}`);
    ctx.expect.outcome(res);
  }
  ctx.expect.sameIds(await ctx.searchIds('Patient', ctx.scope()), [], 'resources created by the rejected requests');
}
