import type { CheckContext } from '../context.ts';

export const id = 'patch-json-patch';
export const spec = 'http://hl7.org/fhir/R4/http.html#patch';
export const description =
  'PATCH [base]/[type]/[id] with a JSON Patch (application/json-patch+json) applies it as an update: 200 and a new version';

export async function run(ctx: CheckContext): Promise<void> {
  await ctx.requireInteraction('Patient', 'patch');
  const statement = await ctx.capabilities();
  if (statement.patchFormat && !statement.patchFormat.includes('application/json-patch+json')) {
    ctx.skip('the CapabilityStatement patchFormat does not list application/json-patch+json');
  }
  const v1 = await ctx.create(ctx.tagged({ resourceType: 'Patient', gender: 'male', name: [{ family: 'Patch' }] }));
  const res = await ctx.fetch(`Patient/${v1.id}`, {
    method: 'PATCH',
    body: JSON.stringify([
      { op: 'test', path: '/gender', value: 'male' },
      { op: 'replace', path: '/gender', value: 'female' },
      { op: 'add', path: '/birthDate', value: '1990-01-02' },
      { op: 'remove', path: '/name' },
    ]),
    headers: { 'content-type': 'application/json-patch+json' },
  });
  ctx.expect.status(res, 200);
  const read = await ctx.fetch(`Patient/${v1.id}`);
  ctx.expect.status(read, 200);
  const patched = ctx.expect.resource(read, 'Patient');
  ctx.expect.equal(patched.gender, 'female', 'gender after the patch');
  ctx.expect.equal(patched.birthDate, '1990-01-02', 'birthDate after the patch');
  ctx.expect.equal(patched.name, undefined, 'name after the patch removed it');
  ctx.expect.ok(patched.meta?.versionId !== v1.meta?.versionId, 'the patch made no new version');
}
