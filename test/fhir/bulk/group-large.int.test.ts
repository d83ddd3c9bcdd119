/**
 * `Group/[id]/$export` with a group of 10,000 members: the members' compartments, and nothing of
 * the patients outside the group. (The rest of `$export` is tested in export.int.test.ts.)
 */
import t from 'tap';
import { startTestServer } from '../../helpers/server.ts';

t.test('a Group of 10,000 members exports exactly its members’ compartments', async (t) => {
  const server = await startTestServer(t);
  const entry: unknown[] = [];
  for (let i = 0; i < 40; i++) {
    entry.push({ resource: { resourceType: 'Patient', id: `gp-${i}`, name: [{ family: `Member${i}` }] }, request: { method: 'PUT', url: `Patient/gp-${i}` } });
    entry.push({
      resource: { resourceType: 'Observation', id: `go-${i}`, status: 'final', code: { text: 'weight' }, subject: { reference: `Patient/gp-${i}` } },
      request: { method: 'PUT', url: `Observation/go-${i}` },
    });
  }
  t.equal((await server.fhir('POST', '', { resourceType: 'Bundle', type: 'transaction', entry })).status, 200);
  // Members: the first 25 patients that exist, and 9,975 that do not (yet); one existing member inactive.
  const member = Array.from({ length: 10_000 }, (_, i) => ({ entity: { reference: `Patient/gp-${i}` }, ...(i === 3 ? { inactive: true } : {}) })).filter((_, i) => i < 25 || i >= 40);
  while (member.length < 10_000) member.push({ entity: { reference: `Patient/absent-${member.length}` } });
  const group = await server.fhir('PUT', 'Group/big', { resourceType: 'Group', id: 'big', type: 'person', actual: true, member });
  t.equal(group.status, 201);

  const kicked = await server.fhir('GET', 'Group/big/$export', undefined, { prefer: 'respond-async' });
  t.equal(kicked.status, 202);
  await server.services.bulk!.runner.idle();
  const status = await server.fhir('GET', String(kicked.headers['content-location']).replace(/^.*\/fhir\//, ''));
  t.equal(status.status, 200);
  const ids = new Map<string, string[]>();
  for (const output of status.json.output) {
    const file = await server.fhir('GET', output.url.replace(/^.*\/fhir\//, ''), undefined, { accept: 'application/fhir+ndjson' });
    const lines = file.text.trim().split('\n').map((l: string) => JSON.parse(l));
    t.equal(lines.length, output.count, `${output.type}: the count is the number of lines`);
    ids.set(output.type, [...(ids.get(output.type) ?? []), ...lines.map((r: any) => r.id)]);
  }
  const expected = (prefix: string) => Array.from({ length: 25 }, (_, i) => `${prefix}-${i}`).filter((id) => id !== `${prefix}-3`).sort();
  t.same([...(ids.get('Patient') ?? [])].sort(), expected('gp'), 'the active members who exist, and no one else');
  t.same([...(ids.get('Observation') ?? [])].sort(), expected('go'), 'their Observations');
  // R4's Patient CompartmentDefinition puts a Group in its members' compartments (Group.member).
  t.same(ids.get('Group'), ['big'], 'the Group itself, in its first member’s compartment');
});
