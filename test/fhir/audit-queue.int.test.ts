/**
 * The audit queue across a crash: records queued but not yet converted (the process died) become
 * AuditEvents at the next start, and a record altered on disk is not silently lost — its loss is
 * itself an AuditEvent (outcome 8, VLM_AUDIT_QUEUE_CORRUPT).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import t from 'tap';
import { KEY_PURPOSE, deriveKey, loadMasterKey } from '../../src/storage/keys.ts';
import { SqliteAuditQueue } from '../../src/storage/sqlite/audit-queue.ts';
import { startTestServer } from '../helpers/server.ts';

t.test('queued audit records survive a crash; an altered one is reported, not lost', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-audit-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const env = { VELLUM_DATA_DIR: dataDir, VELLUM_AUDIT: 'on' };
  const first = await startTestServer(t, env);
  t.equal((await first.fhir('GET', 'Patient?family=Nobody')).status, 200);
  await first.close();

  // As if the process had died between queueing two records and converting them.
  const key = deriveKey(await loadMasterKey({ keyFile: path.join(dataDir, 'master.key') }), KEY_PURPOSE.auditQueue);
  const queue = SqliteAuditQueue.open(path.join(dataDir, 'audit-queue.db'), key);
  const record = (query: string) =>
    new TextEncoder().encode(JSON.stringify({ input: { interaction: 'search-type', method: 'GET', status: 200, resourceType: 'Encounter', query }, recorded: '2026-12-01T08:00:00.000Z' }));
  queue.append(record('status=finished'));
  const altered = queue.append(record('status=cancelled'));
  await queue.flush();
  t.equal(queue.size(), 2);
  await queue.close();
  const db = new DatabaseSync(path.join(dataDir, 'audit-queue.db'));
  const row = db.prepare('SELECT body FROM audit_queue WHERE seq = ?').get(altered) as { body: Uint8Array };
  const body = Buffer.from(row.body);
  body[20]! ^= 0xff;
  db.prepare('UPDATE audit_queue SET body = ? WHERE seq = ?').run(body, altered);
  db.close();

  const second = await startTestServer(t, env);
  const found = await second.fhir('GET', 'AuditEvent?date=2026-12-01&_count=10');
  t.equal(found.status, 200);
  const queries = found.json.entry.map((e: any) => Buffer.from(e.resource.entity?.[0]?.query ?? '', 'base64').toString());
  t.same(queries, ['status=finished'], 'the intact record became its AuditEvent');
  const serious = await second.fhir('GET', 'AuditEvent?outcome=8');
  t.equal(serious.json.total, 1, 'the altered one is reported');
  t.equal(serious.json.entry[0].resource.outcomeDesc, 'VLM_AUDIT_QUEUE_CORRUPT');
  const again = SqliteAuditQueue.open(path.join(dataDir, 'audit-queue.db'), key);
  t.ok(again.take(100).every((r) => r.seq > altered), 'both were converted and removed (only newer accesses wait)');
  await again.close();
});
