/**
 * AuditEvents in group envelopes, end to end (src/storage/envelope-group.ts): the AuditEvents of one
 * patient converted in one round share an envelope and a block, each still has its own anchor leaf
 * that `$verify` proves against the contract, and `vellum rebuild` brings every one of them back
 * from the chain and the blocks alone, with identical proofs.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { CHAIN_ENV, loseIndex, rebuild, verifyParams, waitAnchored } from '../helpers/rebuild.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

async function auditEventsOf(s: TestServer, patient: string): Promise<string[]> {
  const found = await s.fhir('GET', `AuditEvent?patient=${patient}&_count=100`);
  t.equal(found.status, 200);
  return (found.json.entry ?? []).map((e: any) => e.resource.id as string).sort();
}

t.test('AuditEvents of one patient share envelopes, verify one by one, and survive a rebuild', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-audit-groups-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const env = { ...CHAIN_ENV, VELLUM_DATA_DIR: dataDir, VELLUM_AUDIT: 'on', VELLUM_AUDIT_BATCH_MS: '300' };
  const first = await startTestServer(t, env);
  const created = await first.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Grouped' }] });
  t.equal(created.status, 201);
  const patient = `Patient/${created.json.id}`;
  // Reads of one patient at once: converted in one round, they share the patient's key scope.
  await Promise.all(Array.from({ length: 6 }, () => first.fhir('GET', patient)));

  const ids = await auditEventsOf(first, patient);
  t.ok(ids.length >= 7, `the create and the six reads are audited (${ids.length})`);
  await waitAnchored(t, first);
  const before: Record<string, Record<string, unknown>> = {};
  for (const id of ids) before[id] = verifyParams((await first.fhir('GET', `AuditEvent/${id}/$verify`)).json);
  for (const [id, params] of Object.entries(before)) t.equal(params.verified, true, `AuditEvent/${id} verified against the contract`);
  const cids = new Set(Object.values(before).map((p) => p.cid));
  t.ok(cids.size < ids.length, `${ids.length} AuditEvents in ${cids.size} envelopes`);
  const leaves = new Set(Object.values(before).map((p) => p.leaf));
  t.equal(leaves.size, ids.length, 'each has its own leaf');
  await first.close();

  const blocks = loseIndex(dataDir);
  const done = await rebuild(dataDir, ['--blocks-from', blocks], { VELLUM_AUDIT: 'on' });
  t.equal(done.code, 0, done.stderr);
  fs.rmSync(blocks);

  const second = await startTestServer(t, env);
  for (const id of ids) {
    const read = await second.fhir('GET', `AuditEvent/${id}`);
    t.equal(read.status, 200, `AuditEvent/${id} reads after the rebuild`);
    const after = verifyParams((await second.fhir('GET', `AuditEvent/${id}/$verify`)).json);
    t.same(after, before[id], `AuditEvent/${id}: the same proof after the rebuild`);
  }
  await second.close();
});
