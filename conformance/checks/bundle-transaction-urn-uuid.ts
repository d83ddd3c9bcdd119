import { randomUUID } from 'node:crypto';
import type { CheckContext } from '../context.ts';

export const id = 'bundle-transaction-urn-uuid';
export const spec = 'http://hl7.org/fhir/R4/http.html#trules';
export const description =
  'a transaction rewrites urn:uuid: fullUrls in every reference (element and extension) to the ids the server assigned, whatever the entry order';

export async function run(ctx: CheckContext): Promise<void> {
  const statement = await ctx.capabilities();
  const rest = statement.rest?.find((r) => r.mode === 'server') ?? statement.rest?.[0];
  if (!rest?.interaction?.some((i) => i.code === 'transaction')) ctx.skip('the CapabilityStatement lists no transaction interaction');
  await ctx.requireInteraction('Patient', 'create', 'read');
  await ctx.requireInteraction('Observation', 'create', 'read');
  const patientUrn = `urn:uuid:${randomUUID()}`;
  const observationUrn = `urn:uuid:${randomUUID()}`;
  const transaction = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      // The referring entry comes first: references resolve across the whole Bundle.
      {
        fullUrl: observationUrn,
        resource: ctx.tagged({
          resourceType: 'Observation',
          status: 'final',
          code: { text: 'urn:uuid' },
          subject: { reference: patientUrn },
          extension: [{ url: 'http://example.org/fhir/StructureDefinition/conformance-ref', valueReference: { reference: patientUrn } }],
        }),
        request: { method: 'POST', url: 'Observation' },
      },
      { fullUrl: patientUrn, resource: ctx.tagged({ resourceType: 'Patient', gender: 'female' }), request: { method: 'POST', url: 'Patient' } },
    ],
  };
  const res = await ctx.fetch('', { method: 'POST', body: transaction });
  ctx.expect.status(res, 200);
  const response = ctx.expect.bundle(res, 'transaction-response');
  ctx.expect.equal(response.entry?.length, 2, 'number of response entries');
  const where = (i: number) => {
    const entry = response.entry![i]!;
    ctx.expect.ok(/^201\b/.test(entry.response?.status ?? ''), `entry ${i}: response.status is ${entry.response?.status}, expected 201`);
    const location = (entry.response as { location?: string } | undefined)?.location ?? '';
    const m = location.match(/([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?\/?$/);
    ctx.expect.ok(m, `entry ${i}: response.location ${JSON.stringify(location)} names no Type/id`);
    return { type: m[1]!, id: m[2]! };
  };
  const observation = where(0);
  const patient = where(1);
  ctx.expect.equal([observation.type, patient.type], ['Observation', 'Patient'], 'types of the response locations');
  const read = await ctx.fetch(`Observation/${observation.id}`);
  ctx.expect.status(read, 200);
  const stored = ctx.expect.resource(read, 'Observation');
  const local = (reference: string | undefined) => (reference ?? '').replace(`${ctx.baseUrl}/`, '');
  ctx.expect.equal(local(stored.subject?.reference), `Patient/${patient.id}`, 'Observation.subject.reference');
  ctx.expect.equal(local(stored.extension?.[0]?.valueReference?.reference), `Patient/${patient.id}`, 'the reference in the extension');
}
