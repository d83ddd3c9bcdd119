/**
 * Export jobs are durable (rows in the index, src/fhir/bulk/runner.ts): a server stopped in the
 * middle of a job resumes it after a restart on the same data dir from the last part it recorded —
 * every resource of the snapshot exactly once, the parts written before the stop kept as they were,
 * a part left half-made discarded. And parts are split at the file limits (resources and bytes),
 * deletions included.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { startTestServer, type TestServer } from '../../helpers/server.ts';
import { ASYNC, deletions, finish, jobOf, refs, runExport, show } from './helpers.ts';

async function put(s: TestServer, resource: Record<string, any>): Promise<void> {
  const res = await s.fhir('PUT', `${resource.resourceType}/${resource.id}`, resource);
  if (res.status !== 200 && res.status !== 201) throw new Error(`PUT ${resource.resourceType}/${resource.id}: ${show(res)}`);
}

const obs = (i: number) => ({
  resourceType: 'Observation',
  id: `o${i}`,
  status: 'final',
  code: { text: `test ${i}` },
  subject: { reference: `Patient/p${i % 3}` },
});

t.test('a job stopped by a shutdown resumes after the restart: every resource once', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-export-resume-'));
  const servers: TestServer[] = [];
  t.teardown(async () => {
    for (const server of servers) await server.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  const env = { VELLUM_DATA_DIR: dataDir, VELLUM_EXPORT_FILE_MAX: '5' };

  const s1 = await startTestServer(t, env);
  servers.push(s1);
  for (let i = 0; i < 3; i++) await put(s1, { resourceType: 'Patient', id: `p${i}` });
  // 60 Observations in one transaction.
  const tx = await s1.fhir('POST', '', {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: Array.from({ length: 60 }, (_, i) => ({ resource: obs(i), request: { method: 'PUT', url: `Observation/o${i}` } })),
  });
  t.equal(tx.status, 200, `transaction: ${tx.status}`);

  // Stop the runner right after its first part is recorded (as a shutdown would, between parts).
  const runner1 = s1.services.bulk!.runner;
  let reached!: (job: string) => void;
  const stopped = new Promise<string>((resolve) => (reached = resolve));
  runner1.afterPart = (job, progress) => {
    runner1.afterPart = undefined;
    t.equal(progress.parts.length, 1, 'the first part is recorded');
    void runner1.close();
    reached(job);
  };
  const kick = await s1.fhir('GET', '$export?_type=Observation,Patient', undefined, ASYNC);
  t.equal(kick.status, 202);
  const job = jobOf(kick);
  t.equal(await stopped, job);
  const midway = await s1.fhir('GET', `$export-status/${job}`);
  t.equal(midway.status, 202, 'still in progress');
  // A write after the kick-off is not in the snapshot, restart or not.
  await put(s1, obs(999));
  await s1.close();

  const dir = path.join(dataDir, 'exports', job);
  // The export thread may have written further parts of its chunk: they are not recorded, so the restart makes them again.
  t.ok(fs.readdirSync(dir).includes('1-Observation.ndjson'), 'the recorded part was written before the stop');
  const firstPart = fs.readFileSync(path.join(dir, '1-Observation.ndjson'));
  // A part the stop interrupted (written, not recorded) is made again, not served.
  fs.writeFileSync(path.join(dir, '2-Observation.ndjson'), 'half-made garbage');
  fs.writeFileSync(path.join(dir, '3-Observation.ndjson.partial'), 'more garbage');

  const s2 = await startTestServer(t, env);
  servers.push(s2);
  const e = await finish(t, s2, job);
  const observations = e.byType.Observation!;
  t.equal(observations.length, 60, 'all 60 Observations');
  t.equal(new Set(refs(observations)).size, 60, 'each exactly once');
  t.same(refs(observations), Array.from({ length: 60 }, (_, i) => `Observation/o${i}`).sort(), 'exactly the snapshot’s (not the later o999)');
  t.same(refs(e.byType.Patient), ['Patient/p0', 'Patient/p1', 'Patient/p2']);
  t.equal(e.manifest.output.filter((o: any) => o.type === 'Observation').length, 12, '60 Observations in files of 5');
  t.ok(e.manifest.output.every((o: any) => o.count <= 5), 'no file over VELLUM_EXPORT_FILE_MAX');
  t.same(e.manifest.output.map((o: any) => o.url.split('/').pop()).slice(0, 2), ['1-Observation.ndjson', '2-Observation.ndjson'], 'parts in order');
  t.same(fs.readFileSync(path.join(dir, '1-Observation.ndjson')), firstPart, 'the part written before the stop is kept as it was');
  t.notOk(fs.existsSync(path.join(dir, '3-Observation.ndjson.partial')), 'leftovers are removed');
  t.ok(e.texts.get(e.manifest.output[1].url)!.startsWith('{"resourceType":"Observation"'), 'the interrupted part was made again');
  t.equal(new Set(fs.readdirSync(dir)).size, e.manifest.output.length, 'no other file in the job’s dir');
  // And the later write is in the next incremental export.
  const next = await runExport(t, s2, `$export?_type=Observation&_since=${encodeURIComponent(e.manifest.transactionTime)}`);
  t.same(refs(next.byType.Observation), ['Observation/o999']);
});

t.test('files are split at VELLUM_EXPORT_FILE_BYTES, deletions too', async (t) => {
  const s = await startTestServer(t, { VELLUM_EXPORT_FILE_BYTES: '1024' });
  const tx = await s.fhir('POST', '', {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: Array.from({ length: 40 }, (_, i) => ({ resource: { resourceType: 'Patient', id: `p${i}`, name: [{ family: `Family${i}` }] }, request: { method: 'PUT', url: `Patient/p${i}` } })),
  });
  t.equal(tx.status, 200);
  const full = await runExport(t, s, '$export?_type=Patient');
  t.ok(full.manifest.output.length > 1, `several files (${full.manifest.output.length})`);
  t.equal(refs(full.byType.Patient).length, 40);
  for (const o of full.manifest.output) {
    const bytes = Buffer.byteLength(full.texts.get(o.url)!);
    const lastLine = full.texts.get(o.url)!.trimEnd().split('\n').pop()!;
    t.ok(bytes - Buffer.byteLength(lastLine) - 1 < 1024, `${o.url.split('/').pop()}: ${bytes} bytes, over the limit by its last line at most`);
  }
  const del = await s.fhir('POST', '', {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: Array.from({ length: 40 }, (_, i) => ({ request: { method: 'DELETE', url: `Patient/p${i}` } })),
  });
  t.equal(del.status, 200);
  const since = await runExport(t, s, `$export?_type=Patient&_since=${encodeURIComponent(full.manifest.transactionTime)}`);
  t.same(since.manifest.output, [], 'nothing but deletions');
  t.equal(deletions(since).length, 40, 'every deletion');
  t.equal(new Set(deletions(since)).size, 40, 'each once');
  t.ok(since.manifest.deleted.length > 1, `the deletions are split too (${since.manifest.deleted.length} files)`);
  for (const d of since.manifest.deleted) {
    const bytes = Buffer.byteLength(since.texts.get(d.url)!);
    t.ok(bytes < 1024 + 200, `${d.url.split('/').pop()}: ${bytes} bytes`);
  }
});
