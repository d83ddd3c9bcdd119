import type { CheckContext } from '../context.ts';
import { isSubsetted, matches } from '../fhir.ts';

export const id = 'search-summary-true';
export const spec = 'http://hl7.org/fhir/R4/search.html#summary';
export const description =
  '_summary=true returns only the summary elements of each match, labelled SUBSETTED (meta.tag)';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireSearchParam('Patient', 'identifier');
  const created = await ctx.create(
    ctx.tagged({
      resourceType: 'Patient',
      gender: 'female',
      name: [{ family: 'Summary' }],
      // Neither is a summary element of Patient (http://hl7.org/fhir/R4/patient.html).
      maritalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-MaritalStatus', code: 'M' }] },
      communication: [{ language: { coding: [{ system: 'urn:ietf:bcp:47', code: 'en' }] } }],
    }),
  );
  const bundle = await ctx.search('Patient', { ...ctx.scope(), _summary: 'true' });
  const resource = matches(bundle)[0]?.resource;
  ctx.expect.ok(resource && resource.id === created.id, `the search did not return Patient/${created.id}`);
  ctx.expect.equal(resource.gender, 'female', 'gender (a summary element)');
  ctx.expect.equal(resource.name, [{ family: 'Summary' }], 'name (a summary element)');
  ctx.expect.ok(resource.maritalStatus === undefined, 'maritalStatus (not a summary element) was returned');
  ctx.expect.ok(resource.communication === undefined, 'communication (not a summary element) was returned');
  ctx.expect.ok(isSubsetted(resource), 'the summary is not labelled SUBSETTED in meta.tag');
}
