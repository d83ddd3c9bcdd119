/**
 * The audit trail's per-record cost, in-process (no HTTP, no load generator):
 *
 * - `record`: what the request thread pays per access (seal + queue insert + the group fsync);
 * - `convert`: what the converter pays per record (AuditEvent, rows, envelope, block, leaf,
 *   locator, index rows, fsync), draining the queue in batches as the worker does.
 *
 * `node --import tsx bench/audit-convert.ts [--records=3000] [--concurrency=8] [--anchoring=1]`
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { AuditTrail, type AuditInput } from '../src/fhir/audit.ts';
import { openAuditConverter } from '../src/fhir/audit-worker.ts';
import { KEY_PURPOSE, deriveKey } from '../src/storage/keys.ts';
import { SqliteAuditQueue } from '../src/storage/sqlite/audit-queue.ts';
import { SqliteIndexStore } from '../src/storage/sqlite/sqlite-index.ts';

const arg = (name: string, fallback: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback);
const records = arg('records', 3000);
const concurrency = arg('concurrency', 8);
const anchoring = arg('anchoring', 1) === 1;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-audit-bench-'));
const databasePath = path.join(dir, 'vellum.db');
const queuePath = path.join(dir, 'audit-queue.db');
const masterKey = new Uint8Array(32).fill(7);
const baseUrl = 'http://127.0.0.1:8080/fhir';
SqliteIndexStore.open(databasePath).close();

const principal = {
  clientId: 'vellum-admin',
  subject: 'vellum-admin',
  scopes: [{ kind: 'resource', context: 'system', resourceType: '*', interactions: ['c', 'r', 'u', 'd', 's'] }],
  scope: 'system/*.*',
  context: 'system',
  purposeOfUse: 'TREAT',
  admin: true,
  tokenId: 'f0a3c1d2-6f5e-4b1a-9d0c-1e2f3a4b5c6d',
  expiresAt: Math.floor(Date.now() / 1000) + 300,
} as unknown as AuditInput['principal'];
const input = (i: number): AuditInput => ({
  interaction: 'read',
  method: 'GET',
  status: 200,
  principal,
  address: '127.0.0.1',
  resourceType: 'Patient',
  id: `p${i % 300}`,
  versionId: '1',
  patient: `Patient/p${i % 300}`,
});

// 1. The request thread: `record` with `concurrency` in flight (fsync durability).
const queue = SqliteAuditQueue.open(queuePath, deriveKey(masterKey, KEY_PURPOSE.auditQueue));
const front = new AuditTrail({ queue, converter: { kick() {}, settle: async () => {}, close: async () => {} }, baseUrl, exists: async () => false });
let next = 0;
let t0 = performance.now();
const cpu0 = process.cpuUsage();
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < records) await front.record(input(next++));
  }),
);
const recordMs = performance.now() - t0;
const recordCpu = process.cpuUsage(cpu0);
console.log(
  `record:  ${records} in ${recordMs.toFixed(0)} ms → ${((recordMs * 1000) / records).toFixed(1)} µs wall, ${((recordCpu.user + recordCpu.system) / records).toFixed(1)} µs CPU per record`,
);

// 2. The converter: drain everything queued.
const converter = await openAuditConverter({ storage: { databasePath }, queuePath, masterKey, baseUrl, anchoring }, (err) => {
  throw err;
});
t0 = performance.now();
const cpu1 = process.cpuUsage();
await converter.trail.settle();
const convertMs = performance.now() - t0;
const convertCpu = process.cpuUsage(cpu1);
console.log(
  `convert: ${records} in ${convertMs.toFixed(0)} ms → ${((convertMs * 1000) / records).toFixed(1)} µs wall, ${((convertCpu.user + convertCpu.system) / records).toFixed(1)} µs CPU per record (anchoring ${anchoring ? 'on' : 'off'})`,
);
if (converter.queue.size() !== 0) throw new Error('records left in the queue');
await converter.close();
await queue.close();
fs.rmSync(dir, { recursive: true, force: true });
