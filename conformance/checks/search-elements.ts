import type { CheckContext } from '../context.ts';
import { isSubsetted, matches } from '../fhir.ts';

export const id = 'search-elements';
export const spec = 'http://hl7.org/fhir/R4/search.html#elements';
export const description =
  '_elements=gender returns the requested element (with id); when others are left out the resource is labelled SUBSETTED';

export async function run(ctx: CheckContext): Promise<string | void> {
  await ctx.requireSearchParam('Patient', 'identifier');
  const created = await ctx.create(
    ctx.tagged({ resourceType: 'Patient', gender: 'female', birthDate: '1955-05-05', name: [{ family: 'Elements' }] }),
  );
  const bundle = await ctx.search('Patient', { ...ctx.scope(), _elements: 'gender' });
  const resource = matches(bundle)[0]?.resource;
  ctx.expect.ok(resource && resource.id === created.id, `the search did not return Patient/${created.id} with its id`);
  ctx.expect.equal(resource.gender, 'female', 'gender (requested)');
  // "Servers are not obliged to return just the requested elements" — but if they subset, they label it.
  if (resource.name !== undefined || resource.birthDate !== undefined) {
    ctx.skip('the server returned elements that were not requested (permitted: servers need not subset)');
  }
  ctx.expect.ok(isSubsetted(resource), 'the subsetted resource is not labelled SUBSETTED in meta.tag');
}
